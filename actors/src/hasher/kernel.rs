//! The bcrypt batch kernels the pool runs, chosen per batch by its size.
//!
//! `bcrypt-rust` picks one kernel per process: on an Intel CPU with AVX-512 it is the 16-wide
//! one, which does the most per core in a full batch (1.2x AVX2's 8 on the host measured in
//! docs/benchmarks.md) but takes as long for 8 passwords as for 16, so 16 clients would leave a
//! core idle. So where the CPU has both, the pool keeps two: the 8-wide AVX2 kernel for batches
//! up to 8, and the 16-wide one for batches that fill it well enough to do more per core
//! ([`Kernels::calibrated`]). `BCRYPT_FORCE_BACKEND` still pins one kernel for everything.
//!
//! Naming the kernel per call is the crate's `internal-api` (`bcrypt_many_with_backend`), an
//! `unsafe fn`: running a kernel whose instructions the CPU lacks is undefined behaviour. A
//! [`Kernel`] is only ever made for a backend the CPU reports it runs. The batch entry points
//! here are the crate's `hash_many` and `verify_many` with that one difference: the same key
//! preparation (inside the crate), the same `$2b$` string, the same constant-time compare.
use std::time::Instant;

use bcrypt::__internal::{bcrypt_many_with_backend, constant_time_eq, encode_16, encode_23};
use bcrypt::Backend;
use bcrypt::{BcryptResult, HashParts};

/// A batch kernel this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Kernel(Backend);

impl Kernel {
    /// `None` when this CPU cannot run `backend`.
    fn new(backend: Backend) -> Option<Self> {
        backend.is_available().then_some(Kernel(backend))
    }

    pub(super) fn lanes(self) -> usize {
        self.0.lanes()
    }

    pub(super) fn name(self) -> &'static str {
        self.0.name()
    }

    fn raw(
        self,
        cost: u32,
        passwords: &[&[u8]],
        salts: &[[u8; 16]],
    ) -> BcryptResult<Vec<[u8; 24]>> {
        // SAFETY: a `Kernel` is only made for a backend this CPU runs (`Kernel::new`), which is
        // the whole contract of `bcrypt_many_with_backend`.
        unsafe { bcrypt_many_with_backend(self.0, cost, passwords, salts) }
    }

    /// `bcrypt::hash_many` on this kernel: a fresh random salt each, `$2b$` strings in order.
    pub(super) fn hash_many(self, passwords: &[&[u8]], cost: u32) -> BcryptResult<Vec<String>> {
        // `rand`'s thread generator is a CSPRNG seeded from the OS, as the crate's own salts are.
        let salts: Vec<[u8; 16]> = passwords.iter().map(|_| rand::random()).collect();
        let outs = self.raw(cost, passwords, &salts)?;
        Ok(outs
            .iter()
            .zip(&salts)
            .map(|(out, salt)| hash_string(cost, salt, out))
            .collect())
    }

    /// `bcrypt::verify_many` on this kernel, a verdict per position (a malformed hash is
    /// `false`). Hashes of mixed costs, or any that does not parse, go to the crate's own
    /// `verify_many`, which groups them.
    pub(super) fn verify_many(self, passwords: &[&[u8]], hashes: &[&str]) -> Vec<bool> {
        let parsed: Option<Vec<HashParts>> = hashes.iter().map(|h| h.parse().ok()).collect();
        let cost = (parsed.as_ref())
            .and_then(|parts| parts.first())
            .map(HashParts::get_cost);
        let same_cost = |parts: &Vec<HashParts>| parts.iter().all(|p| Some(p.get_cost()) == cost);
        let (Some(parts), Some(cost)) = (parsed.filter(same_cost), cost) else {
            return (bcrypt::verify_many(passwords, hashes).into_iter())
                .map(|verdict| verdict.unwrap_or(false))
                .collect();
        };
        if passwords.len() != parts.len() {
            return vec![false; hashes.len()];
        }
        let salts: Vec<[u8; 16]> = parts.iter().map(HashParts::get_salt_raw).collect();
        match self.raw(cost, passwords, &salts) {
            Ok(outs) => (outs.iter().zip(&parts))
                .map(|(out, expected)| {
                    let mut computed = [0u8; 23];
                    computed.copy_from_slice(&out[..23]);
                    constant_time_eq(&computed, &expected.get_hash())
                })
                .collect(),
            Err(_) => vec![false; hashes.len()],
        }
    }
}

/// The 60-character `$2b$` string of a hash: what `HashParts::format_for_version` writes.
fn hash_string(cost: u32, salt: &[u8; 16], out: &[u8; 24]) -> String {
    let mut hash = [0u8; 23];
    hash.copy_from_slice(&out[..23]);
    let mut s = format!("$2b${cost:02}$");
    s.extend(encode_16(salt).iter().map(|&b| char::from(b)));
    s.extend(encode_23(&hash).iter().map(|&b| char::from(b)));
    s
}

/// The kernels of this process: `narrow` for batches up to its width, `wide` (where the CPU has
/// one that does more per core) for batches from `wide_from` jobs up to its width.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kernels {
    pub narrow: Kernel,
    pub wide: Option<Kernel>,
}

impl Kernels {
    /// The crate's pick alone when `BCRYPT_FORCE_BACKEND` names one or the CPU has no AVX-512;
    /// otherwise AVX2 for narrow batches and AVX-512 as the wide candidate. `None` when
    /// `BCRYPT_FORCE_BACKEND` names a kernel this CPU cannot run (the crate panics on it; the
    /// caller reports it).
    pub(super) fn detect() -> Option<Self> {
        let pick = Kernel::new(super::batch_kernel()?)?;
        let forced = std::env::var_os("BCRYPT_FORCE_BACKEND").is_some_and(|v| !v.is_empty());
        let pair = (Kernel::new(Backend::Avx2), Kernel::new(Backend::Avx512));
        Some(match pair {
            (Some(narrow), Some(wide)) if !forced => Kernels {
                narrow,
                wide: Some(wide),
            },
            _ => Kernels {
                narrow: pick,
                wide: None,
            },
        })
    }

    /// The widest batch this process runs.
    pub(super) fn lanes(&self) -> usize {
        self.wide.map_or(self.narrow.lanes(), Kernel::lanes)
    }

    /// The kernel for a batch of `jobs`.
    pub(super) fn for_batch(&self, jobs: usize) -> Kernel {
        match self.wide {
            Some(wide) if jobs > self.narrow.lanes() => wide,
            _ => self.narrow,
        }
    }

    /// Times a full batch of each kernel at cost 4 (a few milliseconds) and returns the seconds
    /// of the narrow one's batch, and the fewest jobs from which a wide batch does more per
    /// second than a full narrow one (`None`, with the wide kernel dropped, when even a full
    /// wide batch does not: where AVX-512 only matches AVX2, as on AMD Zen 4, a 16-wide batch
    /// would only make 8 logins wait for 8 more).
    pub(super) fn calibrated(
        mut self,
        time: impl Fn(&dyn Fn()) -> f64,
    ) -> (Self, f64, Option<usize>) {
        let batch = |kernel: Kernel| {
            let passwords = vec![b"calibration".as_slice(); kernel.lanes()];
            time(&|| {
                let _ = kernel.hash_many(&passwords, 4);
            })
        };
        let narrow = batch(self.narrow);
        let Some(wide) = self.wide else {
            return (self, narrow, None);
        };
        let wide_time = batch(wide);
        let (n, w) = (self.narrow.lanes() as f64, wide.lanes() as f64);
        // Jobs per second of a full batch of each; within 5 % is a tie, which a full wide batch
        // may take (it costs nothing), so the threshold then is the whole wide width.
        if w / wide_time < 0.95 * (n / narrow) {
            self.wide = None;
            return (self, narrow, None);
        }
        let from = (n * wide_time / narrow).ceil() as usize;
        (
            self,
            narrow,
            Some(from.clamp(self.narrow.lanes() + 1, wide.lanes())),
        )
    }
}

/// Seconds one call of `f` takes: the mean of three after one to warm.
pub(super) fn seconds(f: &dyn Fn()) -> f64 {
    f();
    let started = Instant::now();
    for _ in 0..3 {
        f();
    }
    started.elapsed().as_secs_f64() / 3.0
}

#[cfg(test)]
mod tests {
    use super::{Kernel, Kernels};
    use bcrypt::Backend;

    /// Every batch kernel this CPU runs, beside the crate's own functions: the same verdicts
    /// for right and wrong passwords, at the edges of bcrypt's 72 bytes, for `$2a$`/`$2y$`
    /// hashes and mixed costs; its hashes verify with the crate's `verify`.
    #[test]
    fn each_kernel_agrees_with_the_crate() {
        let kernels: Vec<Kernel> = (Backend::ALL.iter().copied())
            .filter_map(Kernel::new)
            .collect();
        assert!(!kernels.is_empty());
        let long = "x".repeat(100);
        let passwords: Vec<String> = vec![
            String::new(),
            "a-password".into(),
            "pässwörd-8bit".into(),
            "y".repeat(71),
            "y".repeat(72),
            "y".repeat(73),
            long.clone(),
            format!("{long}-other-tail"),
        ];
        let bytes: Vec<&[u8]> = passwords.iter().map(|p| p.as_bytes()).collect();
        for kernel in kernels {
            let hashes = kernel.hash_many(&bytes, 4).expect("hashes");
            for (password, hash) in passwords.iter().zip(&hashes) {
                assert!(hash.starts_with("$2b$04$") && hash.len() == 60, "{hash}");
                assert!(
                    bcrypt::verify(password, hash).expect("parses"),
                    "{}",
                    kernel.name()
                );
            }
            let refs: Vec<&str> = hashes.iter().map(String::as_str).collect();
            assert!(kernel.verify_many(&bytes, &refs).iter().all(|ok| *ok));
            // Wrong passwords: each checked against the next one's hash. The 72-byte,
            // 73-byte and 100-byte ones are the same to bcrypt.
            let mut shifted = refs.clone();
            shifted.rotate_left(1);
            let theirs: Vec<bool> = (bcrypt::verify_many(&bytes, &shifted).into_iter())
                .map(|v| v.unwrap_or(false))
                .collect();
            assert_eq!(kernel.verify_many(&bytes, &shifted), theirs);
            assert!(theirs.iter().any(|ok| *ok) && theirs.iter().any(|ok| !*ok));
            // Python's `$2a$`/`$2y$` markers, another cost and a malformed hash in one batch.
            let two_a = refs[1].replacen("$2b$", "$2a$", 1);
            let two_y = refs[2].replacen("$2b$", "$2y$", 1);
            let cost_5 = bcrypt::hash(&passwords[3], 5).expect("hash");
            let mixed = [two_a.as_str(), two_y.as_str(), &cost_5, "$2b$04$nonsense"];
            let verdicts = kernel.verify_many(&bytes[1..5], &mixed);
            assert_eq!(verdicts, vec![true, true, true, false]);
            let same_cost = [two_a.as_str(), two_y.as_str()];
            assert_eq!(
                kernel.verify_many(&bytes[1..3], &same_cost),
                vec![true, true]
            );
        }
    }

    #[test]
    fn a_batch_wider_than_the_narrow_kernel_goes_to_the_wide_one() {
        let Some(kernels) = Kernels::detect() else {
            return;
        };
        let narrow = kernels.narrow.lanes();
        assert_eq!(kernels.for_batch(narrow), kernels.narrow);
        assert_eq!(kernels.for_batch(1), kernels.narrow);
        if let Some(wide) = kernels.wide {
            assert_eq!(kernels.for_batch(narrow + 1), wide);
            assert_eq!(kernels.lanes(), wide.lanes());
        }
    }
}
