//! The password-hashing pool: bcrypt on dedicated threads, never on an HTTP worker. Its queue
//! is one FIFO, so under a login storm every request waits its turn and none starves.
//!
//! Dynamic batching: `bcrypt-rust` runs up to a vector's worth of passwords (8 with AVX2) in the
//! lanes of one SIMD register, in about the time of four or five one at a time (measured at
//! start: [`Shape::calibrated`]). So a thread taking work chooses its shape from what is queued
//! and what is coming ([`Shape::next`]): a wide batch (16, AVX-512, where the CPU has a kernel
//! that does more per core; see [`kernel`]) when enough are queued to make it pay; a full
//! vector when that many of one kind (hashes, or verifications) are queued; a short wait,
//! bounded by a tenth of a batch's time, when callers have announced work that would fill it (a
//! login announces its verification when it starts, before its database look-up) or the
//! callers its last batch answered are not all back yet; a partial batch when enough are queued
//! for it to beat one at a time; otherwise one job alone, at once, so a lone login keeps its
//! single-hash latency. Threads idle beside it are left what they can do alone meanwhile.
//!
//! Admission: the pool publishes how long new work would wait (what is queued and running,
//! times the measured cost per job, over the threads). Beyond `HASHER_QUEUE_TARGET_MS` callers
//! are refused at once with 503 and a `Retry-After` from that wait, before any bcrypt work, so
//! a storm keeps the admitted logins' latency and the cores on answers someone still waits for.
mod kernel;
pub mod messages;

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::mailbox::ActorStats;
use crate::ActorError;
use kernel::Kernels;
pub use messages::{HashPassword, VerifyPassword};

/// The actix face of the pool: takes messages and queues them for the hashing threads.
pub struct HasherActor {
    pool: Arc<Pool>,
}

impl HasherActor {
    /// Starts `threads` hashing threads (0 = one per core) and the actor that feeds them.
    ///
    /// The batch kernels are chosen first, here ([`Kernels::detect`]): AVX2 and, where it does
    /// more per core, AVX-512 for wider batches; or the one `BCRYPT_FORCE_BACKEND` names, which
    /// `bcrypt-rust` refuses with a panic when the CPU cannot run it; that is a configuration
    /// error, reported as one.
    pub fn start(
        threads: usize,
        cost: u32,
        queue_target: Duration,
        stats: Arc<ActorStats>,
    ) -> Result<Addr<Self>, String> {
        let kernels = Kernels::detect().ok_or_else(|| {
            "BCRYPT_FORCE_BACKEND names a bcrypt kernel this CPU cannot run \
             (scalar, sse41, avx2, avx512, ...; or unset it)"
                .to_string()
        })?;
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        stats.set_wait_target(queue_target);
        let pool = Pool::start(threads, cost, kernels, stats);
        let (narrow, wide) = (pool.kernels.narrow, pool.kernels.wide);
        tracing::info!(
            kernel = narrow.name(),
            lanes = narrow.lanes(),
            wide_kernel = wide.map_or("none", kernel::Kernel::name),
            wide_lanes = wide.map_or(0, kernel::Kernel::lanes),
            "bcrypt batch kernels"
        );
        tracing::info!(
            break_even = pool.shape.break_even,
            wide_from = pool.shape.wide.map_or(0, |w| w.from),
            max_wait_ms = pool.shape.max_wait.as_secs_f64() * 1e3,
            "bcrypt batch shape"
        );
        Ok(Actor::start(HasherActor { pool }))
    }
}

// Every message comes wrapped with the span it was sent from.
crate::traced!(HasherActor: HashPassword, VerifyPassword);

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
        // The message's span lasts until the pool answers: its queue wait and the bcrypt work.
        Box::pin(tracing::Instrument::instrument(
            async move { answer.await.map_err(lost)? },
            tracing::Span::current(),
        ))
    }
}

impl Handler<VerifyPassword> for HasherActor {
    type Result = ResponseFuture<Result<bool, ActorError>>;

    fn handle(&mut self, msg: VerifyPassword, _: &mut Self::Context) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        self.pool.submit(Job::Verify(msg, reply));
        // The message's span lasts until the pool answers: its queue wait and the bcrypt work.
        Box::pin(tracing::Instrument::instrument(
            async move { answer.await.map_err(lost)? },
            tracing::Span::current(),
        ))
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

    /// Answers its caller with `error` instead of doing it.
    fn refuse(self, error: ActorError) {
        // A caller that stopped waiting needs no answer.
        match self {
            Job::Hash(_, reply) => {
                let _ = reply.send(Err(error));
            }
            Job::Verify(_, reply) => {
                let _ = reply.send(Err(error));
            }
        }
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

/// What a hashing thread does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// The first `n` queued jobs of the front job's kind, as one batch.
    Batch(usize),
    /// The front job alone.
    One,
    /// Wait (at most this long) for announced work to fill a batch.
    Wait(Duration),
}

/// The batch policy's figures: the (narrow) kernel's width, the fewest jobs a batch does in
/// less time than one at a time, the longest a thread waits to fill a batch, how long a full
/// narrow batch takes at the configured cost, and the wide kernel's batches, if the CPU has one
/// that pays.
#[derive(Debug, Clone, Copy)]
struct Shape {
    lanes: usize,
    break_even: usize,
    max_wait: Duration,
    batch: Duration,
    wide: Option<Wide>,
}

/// Batches of the wide kernel: from `from` queued jobs (where one does more per second than a
/// full narrow batch) up to `lanes`.
#[derive(Debug, Clone, Copy)]
struct Wide {
    from: usize,
    lanes: usize,
}

impl Shape {
    /// Measured once at start, at cost 4 (a few milliseconds): one hash alone and one full
    /// batch of each kernel; the narrow batch's time over one alone is the break-even (the cost
    /// factor cancels out), the batch's time at `cost` bounds the wait (a tenth of it, at most
    /// 50 ms), and the wide kernel is kept only where it pays ([`Kernels::calibrated`]).
    /// Returns the kernels kept and one job's time alone at `cost`.
    fn calibrated(kernels: Kernels, cost: u32) -> (Self, Kernels, Duration) {
        const PROBE_COST: u32 = 4;
        let scale = 2f64.powi(cost.saturating_sub(PROBE_COST) as i32);
        let one = kernel::seconds(&|| {
            let _ = bcrypt::hash_with_result("calibration", PROBE_COST);
        });
        let lanes = kernels.narrow.lanes();
        if lanes < 2 {
            let shape = Shape {
                lanes: 1,
                break_even: 1,
                max_wait: Duration::ZERO,
                batch: Duration::from_secs_f64(one * scale),
                wide: None,
            };
            // A one-lane narrow kernel means no AVX2, so no wide kernel either.
            return (shape, kernels, Duration::from_secs_f64(one * scale));
        }
        let (kernels, batch, wide_from) = kernels.calibrated(kernel::seconds);
        let break_even = ((batch / one.max(1e-9)).ceil() as usize).clamp(2, lanes);
        let max_wait = Duration::from_secs_f64(batch * scale / 10.0).min(Duration::from_millis(50));
        let wide = (kernels.wide.zip(wide_from)).map(|(wide, from)| Wide {
            from,
            lanes: wide.lanes(),
        });
        let shape = Shape {
            lanes,
            break_even,
            max_wait,
            batch: Duration::from_secs_f64(batch * scale),
            wide,
        };
        (shape, kernels, Duration::from_secs_f64(one * scale))
    }

    /// The choice for `queued` jobs of the front's kind, `announced` more on their way, after
    /// this thread has waited `waited` for them, while `idle` other threads look for work too,
    /// `returning` jobs after this thread's last batch (its size, when it ended less than a
    /// batch's time ago: the callers it answered, whose next requests are likely on their way
    /// before they are announced).
    /// A wide batch leaves a narrow vector's worth for each idle thread: at 16 clients on two
    /// threads, one wide batch of 16 would leave the other thread nothing, for half the work
    /// per second of two narrow ones.
    fn next(
        &self,
        queued: usize,
        announced: usize,
        waited: Duration,
        idle: usize,
        returning: usize,
    ) -> Next {
        if self.lanes < 2 {
            return Next::One;
        }
        // What is left after a narrow vector for each idle thread: a wide batch takes only that.
        let beyond_narrow = queued.saturating_sub(idle.saturating_mul(self.lanes));
        if let Some(wide) = self.wide.filter(|wide| beyond_narrow >= wide.from) {
            return Next::Batch(beyond_narrow.min(wide.lanes));
        }
        // Each other thread that is idle can hash about `break_even - 1` jobs alone in the time
        // of a batch: those are left to it. 4 jobs on two threads, one at a time on each, are
        // done in two single-hash times, against one batch time (3.6 of them on AVX2) as a
        // batch of 4; 8 jobs as a batch of 5 here and 3 alone there.
        let spare = queued.saturating_sub(idle.saturating_mul(self.break_even - 1));
        if spare >= self.lanes {
            return Next::Batch(self.lanes);
        }
        let announced = announced.max(returning.saturating_sub(queued));
        let coming = announced > 0 && spare + announced >= self.break_even;
        if coming && waited < self.max_wait {
            return Next::Wait(self.max_wait - waited);
        }
        if spare >= self.break_even {
            Next::Batch(spare)
        } else {
            Next::One
        }
    }
}

struct Pool {
    queue: Mutex<Queue>,
    ready: Condvar,
    cost: u32,
    threads: usize,
    shape: Shape,
    /// The batch kernels: a batch wider than the narrow one's width runs on the wide one.
    kernels: Kernels,
    stats: Arc<ActorStats>,
    /// Jobs being hashed now.
    running: AtomicUsize,
    /// Threads waiting for work or choosing it (in [`Pool::next_batch`]).
    looking: AtomicUsize,
    /// One thread's bcrypt time per job, in nanoseconds, as recent batches ran (a moving
    /// average; at start, one job alone at the configured cost).
    per_job_ns: AtomicU64,
    /// Passwords per batch (`csum_hasher_passwords_per_batch`) and how long a thread waited to fill
    /// one (`csum_hasher_fill_wait_seconds`).
    per_batch: metrics::Histogram,
    fill_wait: metrics::Histogram,
}

impl Pool {
    fn start(threads: usize, cost: u32, kernels: Kernels, stats: Arc<ActorStats>) -> Arc<Self> {
        let (shape, kernels, one) = Shape::calibrated(kernels, cost);
        stats.set_lanes(kernels.lanes());
        let pool = Arc::new(Pool {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            cost,
            threads: threads.max(1),
            shape,
            kernels,
            stats,
            running: AtomicUsize::new(0),
            looking: AtomicUsize::new(0),
            per_job_ns: AtomicU64::new(u64::try_from(one.as_nanos()).unwrap_or(u64::MAX)),
            per_batch: metrics::histogram!("csum_hasher_passwords_per_batch"),
            fill_wait: metrics::histogram!("csum_hasher_fill_wait_seconds"),
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
        // The calibrated cost per job counts at admission from the first call on.
        pool.publish_wait(0);
        pool
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic never happens while the queue is held (hashing runs outside the lock), so a
        // poisoned lock still guards a whole queue.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job`, or refuses it (its caller gets `Saturated`) when it would wait beyond the
    /// target: checked under the queue's lock, so a crowd arriving at once is admitted only as
    /// far as the queue has room.
    fn submit(&self, job: Job) {
        let mut queue = self.lock();
        if let Err(refused) = self.stats.admit_waiting(self.wait_for(queue.jobs.len())) {
            drop(queue);
            job.refuse(refused);
            return;
        }
        queue.jobs.push_back(job);
        self.publish_wait(queue.jobs.len());
        drop(queue);
        self.ready.notify_one();
    }

    /// How long work queued behind `queued` jobs would wait: every queued and running job at
    /// the recent cost per job, shared by the threads.
    fn wait_for(&self, queued: usize) -> Duration {
        let jobs = (queued + self.running.load(Ordering::Relaxed)) as u64;
        let per_job = self.per_job_ns.load(Ordering::Relaxed);
        Duration::from_nanos(jobs.saturating_mul(per_job) / self.threads as u64)
    }

    /// Publishes the wait of new work, for admission at the callers ([`ActorStats::admit`]).
    fn publish_wait(&self, queued: usize) {
        let per_job = self.per_job_ns.load(Ordering::Relaxed) / self.threads as u64;
        self.stats
            .set_expected_wait(self.wait_for(queued), Duration::from_nanos(per_job));
    }

    /// Folds a finished batch into the cost per job (weight 1/8: a few batches follow a change
    /// of shape or of machine load).
    fn record_cost(&self, jobs: usize, took: Duration) {
        let observed = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX) / jobs.max(1) as u64;
        let old = self.per_job_ns.load(Ordering::Relaxed);
        let new = old - old / 8 + observed / 8;
        self.per_job_ns.store(new, Ordering::Relaxed);
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    fn work(&self) {
        let mut last = None;
        while let Some(batch) = self.next_batch(last) {
            let (jobs, started) = (batch.len(), Instant::now());
            // The jobs move into the closure: if bcrypt ever panicked, their reply senders
            // would drop and each caller get an error, and this thread would go on.
            let run = catch_unwind(AssertUnwindSafe(|| self.run(batch)));
            if run.is_err() {
                tracing::error!("a hashing batch panicked; its callers got an error");
            }
            self.record_cost(jobs, started.elapsed());
            self.running.fetch_sub(jobs, Ordering::Relaxed);
            self.publish_wait(self.lock().jobs.len());
            last = Some((jobs, Instant::now()));
        }
    }

    /// Waits for work and takes it in the shape [`Shape::next`] chooses; `None` once the pool
    /// is closed.
    fn next_batch(&self, last: Option<(usize, Instant)>) -> Option<Vec<Job>> {
        self.looking.fetch_add(1, Ordering::Relaxed);
        let batch = self.choose_batch(last);
        self.looking.fetch_sub(1, Ordering::Relaxed);
        batch
    }

    /// [`Pool::next_batch`] for a thread whose last batch carried `last.0` jobs and ended at
    /// `last.1`.
    fn choose_batch(&self, last: Option<(usize, Instant)>) -> Option<Vec<Job>> {
        let returning = (last.filter(|(_, ended)| ended.elapsed() < self.shape.batch))
            .map_or(0, |(jobs, _)| jobs);
        let mut queue = self.lock();
        let mut filling: Option<Instant> = None;
        loop {
            if queue.closed {
                return None;
            }
            queue.jobs.retain(|job| !job.is_abandoned());
            let Some(front) = queue.jobs.front().map(Job::is_hash) else {
                filling = None;
                queue = self.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let queued = queue.jobs.iter().filter(|j| j.is_hash() == front).count();
            let waited = filling.map_or(Duration::ZERO, |since| since.elapsed());
            // The other threads waiting for work (this one is among those looking).
            let idle = self.looking.load(Ordering::Relaxed).saturating_sub(1);
            let announced = self.stats.announced();
            let batch = match self.shape.next(queued, announced, waited, idle, returning) {
                Next::Batch(n) => take_alike(&mut queue.jobs, n, Job::is_hash),
                Next::One => queue.jobs.pop_front().into_iter().collect(),
                Next::Wait(left) => {
                    filling.get_or_insert_with(Instant::now);
                    queue = (self.ready.wait_timeout(queue, left))
                        .map_or_else(|e| e.into_inner().0, |(queue, _)| queue);
                    continue;
                }
            };
            if let Some(since) = filling {
                self.fill_wait.record(since.elapsed().as_secs_f64());
            }
            self.stats
                .record_batch_fill(batch.len(), filling.map(|since| since.elapsed()));
            self.running.fetch_add(batch.len(), Ordering::Relaxed);
            self.publish_wait(queue.jobs.len());
            return Some(batch);
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
            match self
                .kernels
                .for_batch(jobs.len())
                .hash_many(&passwords, self.cost)
            {
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
            (self.kernels.for_batch(jobs.len())).verify_many(&passwords, &hashes)
        };
        for (((_, reply), timer), verdict) in jobs.into_iter().zip(timers).zip(verdicts) {
            let result = Ok(verdict);
            timer.finish(&result);
            let _ = reply.send(result);
        }
    }
}

/// The first `n` jobs of the front job's kind, taken out of `jobs` in their order (the others
/// keep theirs).
fn take_alike<T>(jobs: &mut VecDeque<T>, n: usize, kind: impl Fn(&T) -> bool) -> Vec<T> {
    let Some(front) = jobs.front().map(&kind) else {
        return Vec::new();
    };
    let alike: Vec<usize> = (jobs.iter().enumerate())
        .filter(|(_, job)| kind(job) == front)
        .map(|(i, _)| i)
        .take(n.max(1))
        .collect();
    let mut batch: Vec<T> = alike.iter().rev().filter_map(|&i| jobs.remove(i)).collect();
    batch.reverse();
    batch
}

#[cfg(test)]
mod tests {
    use super::{take_alike, Job, Kernels, Next, Pool, Shape, Wide};
    use crate::domain::Password;
    use crate::hasher::VerifyPassword;
    use crate::mailbox::ActorStats;
    use std::collections::VecDeque;
    use std::time::Duration;
    use tokio::sync::oneshot;

    #[test]
    fn work_whose_caller_stopped_waiting_is_dropped_unhashed() {
        // No threads: the test takes the batches itself.
        let kernels = Kernels::detect().expect("a batch kernel");
        let pool = Pool::start(0, 4, kernels, ActorStats::new("hasher", 16));
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
        let mut taken = Vec::new();
        while taken.len() < 4 {
            taken.extend(pool.next_batch(None).expect("work"));
        }
        assert_eq!(taken.len(), 4, "only the four live jobs are taken");
        assert!(taken.iter().all(|job| !job.is_abandoned()));
        assert!(pool.lock().jobs.is_empty());
        drop(waiting);
    }

    /// An AVX2-like kernel: 8 lanes, a batch beats one at a time from 5 jobs, waits of 20 ms.
    const SHAPE: Shape = Shape {
        lanes: 8,
        break_even: 5,
        max_wait: Duration::from_millis(20),
        batch: Duration::from_millis(200),
        wide: None,
    };
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_idle_pool_runs_a_lone_job_at_once() {
        assert_eq!(SHAPE.next(1, 0, Duration::ZERO, 0, 0), Next::One);
        assert_eq!(SHAPE.next(4, 0, Duration::ZERO, 0, 0), Next::One);
    }

    #[test]
    fn a_full_vector_goes_at_once_and_a_partial_one_when_it_beats_one_at_a_time() {
        assert_eq!(SHAPE.next(12, 3, Duration::ZERO, 0, 0), Next::Batch(8));
        assert_eq!(SHAPE.next(8, 0, Duration::ZERO, 0, 0), Next::Batch(8));
        assert_eq!(SHAPE.next(6, 0, Duration::ZERO, 0, 0), Next::Batch(6));
        assert_eq!(SHAPE.next(5, 0, Duration::ZERO, 0, 0), Next::Batch(5));
    }

    #[test]
    fn announced_work_that_would_fill_a_batch_is_waited_for_within_the_bound() {
        assert_eq!(SHAPE.next(1, 6, Duration::ZERO, 0, 0), Next::Wait(20 * MS));
        assert_eq!(SHAPE.next(3, 2, 5 * MS, 0, 0), Next::Wait(15 * MS));
        // A batch that can run already waits for the rest of a vector too, as long.
        assert_eq!(SHAPE.next(5, 2, 19 * MS, 0, 0), Next::Wait(MS));
        // The bound reached: what is there goes.
        assert_eq!(SHAPE.next(5, 2, 20 * MS, 0, 0), Next::Batch(5));
        assert_eq!(SHAPE.next(1, 6, 25 * MS, 0, 0), Next::One);
        // Too few coming to make a batch worth it: no wait.
        assert_eq!(SHAPE.next(2, 2, Duration::ZERO, 0, 0), Next::One);
    }

    #[test]
    fn the_callers_of_the_last_batch_are_waited_for_as_if_announced() {
        // Its batch of 8 just answered: 7 of them are back, the 8th not yet announced.
        assert_eq!(SHAPE.next(7, 0, Duration::ZERO, 0, 8), Next::Wait(20 * MS));
        assert_eq!(SHAPE.next(7, 0, 12 * MS, 0, 8), Next::Wait(8 * MS));
        // The bound reached, or all back: what is there goes.
        assert_eq!(SHAPE.next(7, 0, 20 * MS, 0, 8), Next::Batch(7));
        assert_eq!(SHAPE.next(8, 0, Duration::ZERO, 0, 8), Next::Batch(8));
        // A lone caller's next login does not wait for anyone.
        assert_eq!(SHAPE.next(1, 0, Duration::ZERO, 0, 1), Next::One);
    }

    #[test]
    fn a_thread_idle_beside_is_left_the_jobs_it_can_do_alone_in_a_batchs_time() {
        // Break-even 5: an idle thread does about 4 alone while a batch runs here.
        // 4 clients on two threads: one at a time on each beats a batch of 4 on one.
        assert_eq!(SHAPE.next(4, 0, Duration::ZERO, 1, 4), Next::One);
        assert_eq!(SHAPE.next(6, 0, Duration::ZERO, 1, 0), Next::One);
        assert_eq!(SHAPE.next(9, 0, Duration::ZERO, 1, 0), Next::Batch(5));
        assert_eq!(SHAPE.next(12, 0, Duration::ZERO, 1, 0), Next::Batch(8));
        assert_eq!(SHAPE.next(7, 3, Duration::ZERO, 1, 0), Next::Wait(20 * MS));
        assert_eq!(SHAPE.next(5, 3, Duration::ZERO, 1, 0), Next::One);
    }

    #[test]
    fn a_scalar_kernel_takes_one_job_at_a_time() {
        let scalar = Shape {
            lanes: 1,
            break_even: 1,
            max_wait: Duration::ZERO,
            batch: Duration::from_millis(50),
            wide: None,
        };
        assert_eq!(scalar.next(9, 4, Duration::ZERO, 0, 0), Next::One);
    }

    #[test]
    fn a_deep_queue_takes_a_wide_batch_where_one_pays_and_a_shallow_one_the_narrow_vector() {
        // AVX-512 beside AVX2: 16 lanes, doing more per second than a full 8 from 15 jobs.
        let both = Shape {
            wide: Some(Wide {
                from: 15,
                lanes: 16,
            }),
            ..SHAPE
        };
        assert_eq!(both.next(40, 0, Duration::ZERO, 0, 0), Next::Batch(16));
        assert_eq!(both.next(16, 3, Duration::ZERO, 0, 0), Next::Batch(16));
        assert_eq!(both.next(15, 0, Duration::ZERO, 0, 0), Next::Batch(15));
        // Fewer: the narrow kernel's vector, as without a wide one.
        assert_eq!(both.next(14, 9, Duration::ZERO, 0, 0), Next::Batch(8));
        assert_eq!(both.next(8, 0, Duration::ZERO, 0, 0), Next::Batch(8));
        assert_eq!(both.next(1, 6, Duration::ZERO, 0, 0), Next::Wait(20 * MS));
        assert_eq!(both.next(4, 0, Duration::ZERO, 0, 0), Next::One);
        // Another thread idle: a narrow vector is left for it first.
        assert_eq!(both.next(16, 0, Duration::ZERO, 1, 0), Next::Batch(8));
        assert_eq!(both.next(22, 0, Duration::ZERO, 1, 0), Next::Batch(8));
        assert_eq!(both.next(23, 0, Duration::ZERO, 1, 0), Next::Batch(15));
        assert_eq!(both.next(40, 0, Duration::ZERO, 1, 0), Next::Batch(16));
    }

    #[test]
    fn the_calibrated_shape_is_within_the_kernels_width() {
        let kernels = Kernels::detect().expect("a batch kernel");
        let (shape, kept, one) = Shape::calibrated(kernels, 10);
        let lanes = kernels.narrow.lanes();
        assert_eq!(shape.lanes, lanes);
        assert!(
            lanes < 2 || (2..=lanes).contains(&shape.break_even),
            "{shape:?}"
        );
        assert!(shape.max_wait <= Duration::from_millis(50));
        assert!(one > Duration::ZERO);
        if let Some(wide) = shape.wide {
            assert!(wide.from > lanes && wide.from <= wide.lanes, "{shape:?}");
            assert_eq!(kept.wide.map(|k| k.lanes()), Some(wide.lanes));
        } else {
            assert!(kept.wide.is_none());
        }
    }

    /// Jobs as numbers: even ones are one kind (verifications), odd ones the other (hashes).
    fn queue(jobs: &[u32]) -> VecDeque<u32> {
        jobs.iter().copied().collect()
    }

    fn even(n: &u32) -> bool {
        n.is_multiple_of(2)
    }

    #[test]
    fn jobs_of_the_front_kind_are_taken_in_order_and_the_rest_keep_theirs() {
        let mut jobs = queue(&[0, 1, 2, 3, 4, 6, 8, 5, 10]);
        assert_eq!(take_alike(&mut jobs, 4, even), vec![0, 2, 4, 6]);
        assert_eq!(jobs, queue(&[1, 3, 8, 5, 10]));
        assert_eq!(take_alike(&mut jobs, 4, even), vec![1, 3, 5]);
        assert_eq!(jobs, queue(&[8, 10]));
        assert_eq!(take_alike(&mut jobs, 1, even), vec![8]);
        assert_eq!(
            take_alike(&mut VecDeque::<u32>::new(), 4, even),
            Vec::<u32>::new()
        );
    }
}
