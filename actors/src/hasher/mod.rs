//! The password-hashing pool: bcrypt on dedicated threads, never on an HTTP worker. Its queue
//! is one FIFO, so under a login storm every request waits its turn and none starves.
//!
//! Group commit for bcrypt: when a thread takes work and at least a vector's worth of the same
//! kind (verifications, or hashes) is queued, it takes the first of them as one batch, which
//! `bcrypt-rust` runs in the lanes of one SIMD register (8 with AVX2) in less CPU than one at a
//! time. Fewer waiting than that, one job is taken alone: a partly filled vector costs more
//! than hashing its jobs one by one, and a lone login keeps its single-hash latency.
pub mod messages;

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::mailbox::ActorStats;
use crate::ActorError;
pub use messages::{HashPassword, VerifyPassword};

/// The actix face of the pool: takes messages and queues them for the hashing threads.
pub struct HasherActor {
    pool: Arc<Pool>,
}

impl HasherActor {
    /// Starts `threads` hashing threads (0 = one per core) and the actor that feeds them.
    ///
    /// The batch kernel is chosen first, here: by `bcrypt-rust`'s one-time measurement where
    /// the CPU has more than one (AVX2 and AVX-512), or by its `BCRYPT_FORCE_BACKEND`
    /// variable, which it refuses with a panic when the CPU cannot run the named kernel; that
    /// is a configuration error, reported as one.
    pub fn start(threads: usize, cost: u32, stats: Arc<ActorStats>) -> Result<Addr<Self>, String> {
        let backend = batch_kernel().ok_or_else(|| {
            "BCRYPT_FORCE_BACKEND names a bcrypt kernel this CPU cannot run \
             (scalar, sse41, avx2, avx512, ...; or unset it)"
                .to_string()
        })?;
        tracing::info!(
            kernel = backend.name(),
            lanes = backend.lanes(),
            "bcrypt batch kernel"
        );
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        let pool = Pool::start(threads, cost, stats);
        Ok(Actor::start(HasherActor { pool }))
    }
}

impl Actor for HasherActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The handlers only queue, so the mailbox never holds more than the callers'
        // capacity (enforced by `Mailbox::call`); never park a sender.
        ctx.set_mailbox_capacity(self.pool.stats.capacity + 1);
    }
}

impl Drop for HasherActor {
    fn drop(&mut self) {
        self.pool.close();
    }
}

/// The batch kernel, chosen once per process; `None` if `BCRYPT_FORCE_BACKEND` names one this
/// CPU cannot run. The crate refuses such a name with a panic, whose message and backtrace
/// would print before our one-line error: the panic hook is hushed while the choice is made,
/// and only the first caller (the others wait on the cell) swaps it.
fn batch_kernel() -> Option<bcrypt::Backend> {
    static KERNEL: std::sync::OnceLock<Option<bcrypt::Backend>> = std::sync::OnceLock::new();
    *KERNEL.get_or_init(|| {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let detected = catch_unwind(bcrypt::detected_backend).ok();
        std::panic::set_hook(hook);
        detected
    })
}

/// The reply of a job whose thread went away (it panicked, or the pool closed).
fn lost(_: oneshot::error::RecvError) -> ActorError {
    ActorError::internal("bcrypt", "the hashing thread stopped before answering")
}

impl Handler<HashPassword> for HasherActor {
    type Result = ResponseFuture<Result<String, ActorError>>;

    fn handle(&mut self, msg: HashPassword, _: &mut Self::Context) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        self.pool.submit(Job::Hash(msg, reply));
        Box::pin(async move { answer.await.map_err(lost)? })
    }
}

impl Handler<VerifyPassword> for HasherActor {
    type Result = ResponseFuture<Result<bool, ActorError>>;

    fn handle(&mut self, msg: VerifyPassword, _: &mut Self::Context) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        self.pool.submit(Job::Verify(msg, reply));
        Box::pin(async move { answer.await.map_err(lost)? })
    }
}

enum Job {
    Hash(HashPassword, oneshot::Sender<Result<String, ActorError>>),
    Verify(VerifyPassword, oneshot::Sender<Result<bool, ActorError>>),
}

impl Job {
    fn is_hash(&self) -> bool {
        matches!(self, Job::Hash(..))
    }

    /// Its caller stopped waiting (the client went away, or the deadline passed): hashing it
    /// would only spend CPU the queued logins behind it need.
    fn is_abandoned(&self) -> bool {
        match self {
            Job::Hash(_, reply) => reply.is_closed(),
            Job::Verify(_, reply) => reply.is_closed(),
        }
    }
}

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

struct Pool {
    queue: Mutex<Queue>,
    ready: Condvar,
    cost: u32,
    stats: Arc<ActorStats>,
    /// Passwords per batch (`hasher_passwords_per_batch`): 1 unless logins queue up.
    per_batch: metrics::Histogram,
}

impl Pool {
    fn start(threads: usize, cost: u32, stats: Arc<ActorStats>) -> Arc<Self> {
        let pool = Arc::new(Pool {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            cost,
            stats,
            per_batch: metrics::histogram!("hasher_passwords_per_batch"),
        });
        for n in 0..threads {
            let pool = Arc::clone(&pool);
            let spawned = std::thread::Builder::new()
                .name(format!("hasher-{n}"))
                .spawn(move || pool.work());
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a hashing thread");
            }
        }
        pool
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic never happens while the queue is held (hashing runs outside the lock), so a
        // poisoned lock still guards a whole queue.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn submit(&self, job: Job) {
        self.lock().jobs.push_back(job);
        self.ready.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    fn work(&self) {
        // The vector width of the batch kernel (chosen in `HasherActor::start`).
        let lanes = batch_kernel().map_or(1, |kernel| kernel.lanes());
        while let Some(batch) = self.next_batch(lanes) {
            // The jobs move into the closure: if bcrypt ever panicked, their reply senders
            // would drop and each caller get an error, and this thread would go on.
            let run = catch_unwind(AssertUnwindSafe(|| self.run(batch)));
            if run.is_err() {
                tracing::error!("a hashing batch panicked; its callers got an error");
            }
        }
    }

    /// Waits for work; `None` once the pool is closed.
    fn next_batch(&self, lanes: usize) -> Option<Vec<Job>> {
        let mut queue = self.lock();
        loop {
            if queue.closed {
                return None;
            }
            queue.jobs.retain(|job| !job.is_abandoned());
            if let Some(batch) = take_batch(&mut queue.jobs, lanes, Job::is_hash) {
                return Some(batch);
            }
            queue = self.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn run(&self, batch: Vec<Job>) {
        self.per_batch.record(batch.len() as f64);
        let (mut hashes, mut verifies) = (Vec::new(), Vec::new());
        for job in batch {
            match job {
                Job::Hash(msg, reply) => hashes.push((msg, reply)),
                Job::Verify(msg, reply) => verifies.push((msg, reply)),
            }
        }
        if !hashes.is_empty() {
            self.hash(hashes);
        }
        if !verifies.is_empty() {
            self.verify(verifies);
        }
    }

    fn hash(&self, jobs: Vec<(HashPassword, oneshot::Sender<Result<String, ActorError>>)>) {
        let timers: Vec<_> = (jobs.iter())
            .map(|(msg, _)| self.stats.start_queued(msg.sent))
            .collect();
        let results: Vec<Result<String, ActorError>> = if let [(msg, _)] = jobs.as_slice() {
            // `$2b$`, the prefix Python's `bcrypt` writes and reads.
            vec![bcrypt::hash_with_result(msg.password.expose(), self.cost)
                .map(|h| h.format_for_version(bcrypt::Version::TwoB))
                .map_err(|e| ActorError::internal("bcrypt hash", e))]
        } else {
            let passwords: Vec<&[u8]> = (jobs.iter())
                .map(|(msg, _)| msg.password.expose().as_bytes())
                .collect();
            match bcrypt::hash_many(&passwords, self.cost) {
                Ok(hashes) if hashes.len() == jobs.len() => hashes.into_iter().map(Ok).collect(),
                Ok(_) => (jobs.iter())
                    .map(|_| Err(ActorError::internal("bcrypt hash", "batch lost a result")))
                    .collect(),
                Err(e) => (jobs.iter())
                    .map(|_| Err(ActorError::internal("bcrypt hash", e.to_string())))
                    .collect(),
            }
        };
        for (((_, reply), timer), result) in jobs.into_iter().zip(timers).zip(results) {
            timer.finish(&result);
            // A caller that gave up (its deadline passed) is not waiting any more.
            let _ = reply.send(result);
        }
    }

    fn verify(&self, jobs: Vec<(VerifyPassword, oneshot::Sender<Result<bool, ActorError>>)>) {
        let timers: Vec<_> = (jobs.iter())
            .map(|(msg, _)| self.stats.start_queued(msg.sent))
            .collect();
        // A malformed stored hash is a failed verification, not a server error: the caller
        // answers "invalid email or password" either way.
        let verdicts: Vec<bool> = if let [(msg, _)] = jobs.as_slice() {
            vec![bcrypt::verify(msg.password.expose(), &msg.hash).unwrap_or(false)]
        } else {
            let passwords: Vec<&[u8]> = (jobs.iter())
                .map(|(msg, _)| msg.password.expose().as_bytes())
                .collect();
            let hashes: Vec<&str> = jobs.iter().map(|(msg, _)| msg.hash.as_str()).collect();
            (bcrypt::verify_many(&passwords, &hashes).into_iter())
                .map(|r| r.unwrap_or(false))
                .collect()
        };
        for (((_, reply), timer), verdict) in jobs.into_iter().zip(timers).zip(verdicts) {
            let result = Ok(verdict);
            timer.finish(&result);
            let _ = reply.send(result);
        }
    }
}

/// The next batch from the front of `jobs`: the first `lanes` jobs of the front job's kind, in
/// their order (the others keep theirs), when that many are queued; otherwise the front job
/// alone. `None` when nothing is queued.
fn take_batch<T>(
    jobs: &mut VecDeque<T>,
    lanes: usize,
    kind: impl Fn(&T) -> bool,
) -> Option<Vec<T>> {
    let front = kind(jobs.front()?);
    let alike: Vec<usize> = (jobs.iter().enumerate())
        .filter(|(_, job)| kind(job) == front)
        .map(|(i, _)| i)
        .take(lanes)
        .collect();
    if lanes < 2 || alike.len() < lanes {
        return jobs.pop_front().map(|job| vec![job]);
    }
    let mut batch: Vec<T> = alike.iter().rev().filter_map(|&i| jobs.remove(i)).collect();
    batch.reverse();
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::{take_batch, Job, Pool};
    use crate::domain::Password;
    use crate::hasher::VerifyPassword;
    use crate::mailbox::ActorStats;
    use std::collections::VecDeque;
    use tokio::sync::oneshot;

    #[test]
    fn work_whose_caller_stopped_waiting_is_dropped_unhashed() {
        // No threads: the test takes the batches itself.
        let pool = Pool::start(0, 4, ActorStats::new("hasher", 16));
        let mut waiting = Vec::new();
        for n in 0..10 {
            let (reply, answer) = oneshot::channel();
            let password = Password::parse("a-password").expect("a valid password");
            pool.submit(Job::Verify(
                VerifyPassword::new(password, String::new()),
                reply,
            ));
            // Callers 0, 3, 6 and 9 still wait; the others went away.
            if n % 3 == 0 {
                waiting.push(answer);
            }
        }
        let batch = pool.next_batch(8).expect("work");
        assert_eq!(batch.len(), 1, "four live jobs are fewer than a vector");
        let rest: Vec<_> = std::iter::from_fn(|| {
            let mut queue = pool.lock();
            queue.jobs.retain(|job| !job.is_abandoned());
            queue.jobs.pop_front()
        })
        .collect();
        assert_eq!(rest.len(), 3);
        assert!(batch.iter().chain(&rest).all(|job| !job.is_abandoned()));
        drop(waiting);
    }

    /// Jobs as numbers: even ones are one kind (verifications), odd ones the other (hashes).
    fn queue(jobs: &[u32]) -> VecDeque<u32> {
        jobs.iter().copied().collect()
    }

    fn even(n: &u32) -> bool {
        n.is_multiple_of(2)
    }

    #[test]
    fn a_full_vector_of_the_front_kind_is_taken_in_order_and_the_rest_keep_theirs() {
        let mut jobs = queue(&[0, 1, 2, 3, 4, 6, 8, 5, 10]);
        assert_eq!(take_batch(&mut jobs, 4, even), Some(vec![0, 2, 4, 6]));
        assert_eq!(jobs, queue(&[1, 3, 8, 5, 10]));
        // The front is now a hash and only three are queued: it goes alone.
        assert_eq!(take_batch(&mut jobs, 4, even), Some(vec![1]));
        assert_eq!(take_batch(&mut jobs, 4, even), Some(vec![3]));
        assert_eq!(take_batch(&mut jobs, 4, even), Some(vec![8]));
        assert_eq!(jobs, queue(&[5, 10]));
    }

    #[test]
    fn fewer_than_a_vector_or_a_scalar_kernel_takes_one_job() {
        let mut jobs = queue(&[0, 2, 4]);
        assert_eq!(take_batch(&mut jobs, 4, even), Some(vec![0]));
        let mut jobs = queue(&[0, 2, 4, 6]);
        assert_eq!(take_batch(&mut jobs, 1, even), Some(vec![0]));
        assert_eq!(take_batch(&mut VecDeque::new(), 4, even), None);
    }
}
