//! The bounded, instrumented door to an actor.
//!
//! actix's `Addr::send` waits when a mailbox is full, and `try_send` drops the reply; neither
//! gives "reject at once with a reason". [`Mailbox`] counts what is queued or running against
//! the configured capacity, refuses beyond it with [`ActorError::Overloaded`], bounds the wait
//! with a deadline, and keeps the figures `/health` shows ([`ActorStats`]).
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::prelude::*;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::ActorError;

/// Live figures of one actor, shared between its callers and the actor itself.
#[derive(Debug)]
pub struct ActorStats {
    pub name: &'static str,
    pub capacity: usize,
    /// Sent and not yet answered: queued plus running.
    pending: AtomicUsize,
    in_flight: AtomicUsize,
    processed: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    restarts: AtomicU64,
    /// When the actor last restarted (ms since the epoch; 0 = never).
    last_restart_ms: AtomicU64,
    alive: AtomicBool,
    /// Handling times in microseconds over the recent past.
    handling: Mutex<RecentTimes>,
    /// For an actor that takes its work in batches (the DbQueueActor): operations per round
    /// trip to its backend, in hundredths, over the recent past.
    per_trip: Mutex<RecentTimes>,
    /// Callers that said they will send work soon and have not yet (see [`Announced`]): an
    /// actor that batches (the hasher) waits a little for them rather than start a thin batch.
    announced: AtomicUsize,
    /// The actor's own estimate of how long new work would wait, in ms, and the most it may
    /// (`u64::MAX`: no limit). Beyond it, calls are refused at once ([`ActorError::Saturated`]).
    expected_wait_ms: AtomicU64,
    wait_target_ms: AtomicU64,
    /// How much longer new work waits for each job announced ahead of it, in µs (0: not
    /// known; announced work is then not counted at admission).
    wait_per_job_us: AtomicU64,
    /// For the hasher: its kernel's width (0: not a batching pool), passwords per batch and
    /// the time spent waiting to fill one (microseconds), over the recent past.
    lanes: AtomicU64,
    per_batch: Mutex<RecentTimes>,
    fill_wait: Mutex<RecentTimes>,
    /// The exported series, looked up once (not on every message).
    exported: Exported,
}

/// A caller's word that it will send work to an actor soon; withdrawn when dropped (when it
/// sends, or gives up first).
#[derive(Debug)]
pub struct Announced(Arc<ActorStats>);

impl Drop for Announced {
    fn drop(&mut self) {
        self.0.announced.fetch_sub(1, Ordering::AcqRel);
    }
}

/// This actor's Prometheus series.
#[derive(Debug)]
struct Exported {
    handling: metrics::Histogram,
    queue_wait: metrics::Histogram,
    processed: metrics::Counter,
    failed: metrics::Counter,
    rejected: metrics::Counter,
    restarts: metrics::Counter,
    per_trip: metrics::Histogram,
}

/// Handling times of the last one to two minutes: two histograms, rotated every minute, so the
/// p50/p99 in `/health` follow the load instead of averaging over the whole uptime.
#[derive(Debug)]
struct RecentTimes {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    rotated: Instant,
}

impl RecentTimes {
    const WINDOW: Duration = Duration::from_secs(60);

    fn new() -> Self {
        // Microseconds, three significant figures, up to one minute.
        #[allow(clippy::expect_used)] // constant bounds that are valid: cannot fail
        let empty = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
        Self {
            current: empty.clone(),
            previous: empty,
            rotated: Instant::now(),
        }
    }

    fn rotate(&mut self) {
        let age = self.rotated.elapsed();
        if age >= Self::WINDOW {
            std::mem::swap(&mut self.previous, &mut self.current);
            self.current.reset();
            if age >= Self::WINDOW * 2 {
                self.previous.reset();
            }
            self.rotated = Instant::now();
        }
    }

    fn record(&mut self, micros: u64) {
        self.rotate();
        let _ = self.current.record(micros);
    }

    /// (p50, p99) in milliseconds; zeros when nothing was handled recently.
    fn percentiles(&mut self) -> (f64, f64) {
        self.quantiles(1000.0)
    }

    /// (p50, p99) of the recorded values divided by `scale`; zeros when nothing was recorded.
    fn quantiles(&mut self, scale: f64) -> (f64, f64) {
        self.rotate();
        let mut both = self.previous.clone();
        let _ = both.add(&self.current);
        if both.is_empty() {
            return (0.0, 0.0);
        }
        let at = |q: f64| both.value_at_quantile(q) as f64 / scale;
        (at(0.50), at(0.99))
    }
}

/// A point-in-time copy of [`ActorStats`], the `/health` shape of one actor.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActorSnapshot {
    pub alive: bool,
    pub mailbox_len: usize,
    pub mailbox_capacity: usize,
    pub in_flight: usize,
    pub processed_total: u64,
    pub failed_total: u64,
    pub rejected_total: u64,
    pub restarts: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Only for the DbQueueActor, which takes its work in batches: how many operations each
    /// round trip to the database carried (p50/p99 over the last one to two minutes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops_per_round_trip: Option<PerTrip>,
    /// Only for the hasher pool: how full its batches are and how long it waits to fill them,
    /// and its admission (the expected wait of new work against the target).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batching: Option<Batching>,
}

/// The hasher pool's batches over the recent past (zeros when idle) and its admission now.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Batching {
    /// The kernel's width: the most passwords one batch carries.
    pub lanes: u64,
    pub jobs_per_batch: PerTrip,
    /// Time a thread waited for announced logins to fill a batch (batches that waited).
    pub fill_wait_ms: PerTrip,
    /// How long new work would wait now (queued and running work × the measured time per job
    /// ÷ threads).
    pub expected_wait_ms: u64,
    /// `HASHER_QUEUE_TARGET_MS`: beyond it new logins and registrations get 503 at once
    /// (absent: no target).
    pub wait_target_ms: Option<u64>,
}

/// p50 and p99 over the recent past (zeros when idle): operations per round trip to the
/// database, or the hasher's jobs per batch and fill wait.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct PerTrip {
    pub p50: f64,
    pub p99: f64,
}

impl ActorStats {
    pub fn new(name: &'static str, capacity: usize) -> Arc<Self> {
        let exported = Exported {
            handling: metrics::histogram!("csum_actor_handling_seconds", "actor" => name),
            queue_wait: metrics::histogram!("csum_actor_queue_wait_seconds", "actor" => name),
            processed: metrics::counter!("csum_actor_messages_total", "actor" => name,
                "outcome" => "processed"),
            failed: metrics::counter!("csum_actor_messages_total", "actor" => name,
                "outcome" => "failed"),
            rejected: metrics::counter!("csum_actor_rejected_total", "actor" => name),
            restarts: metrics::counter!("csum_actor_restarts_total", "actor" => name),
            per_trip: metrics::histogram!("csum_db_queue_ops_per_round_trip"),
        };
        // Every counter is exported from start-up, at 0, so an alert's `increase()` sees the
        // first event.
        for counter in [
            &exported.processed,
            &exported.failed,
            &exported.rejected,
            &exported.restarts,
        ] {
            counter.increment(0);
        }
        Arc::new(Self {
            name,
            capacity: capacity.max(1),
            pending: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            processed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            last_restart_ms: AtomicU64::new(0),
            alive: AtomicBool::new(true),
            handling: Mutex::new(RecentTimes::new()),
            per_trip: Mutex::new(RecentTimes::new()),
            announced: AtomicUsize::new(0),
            expected_wait_ms: AtomicU64::new(0),
            wait_target_ms: AtomicU64::new(u64::MAX),
            wait_per_job_us: AtomicU64::new(0),
            lanes: AtomicU64::new(0),
            per_batch: Mutex::new(RecentTimes::new()),
            fill_wait: Mutex::new(RecentTimes::new()),
            exported,
        })
    }

    /// Says work is coming to this actor; see [`Announced`].
    pub fn announce(self: &Arc<Self>) -> Announced {
        self.announced.fetch_add(1, Ordering::AcqRel);
        Announced(Arc::clone(self))
    }

    /// Callers that announced work and have not sent it yet.
    pub fn announced(&self) -> usize {
        self.announced.load(Ordering::Acquire)
    }

    /// For a pool that batches (the hasher): the most jobs one batch carries.
    pub fn set_lanes(&self, lanes: usize) {
        self.lanes.store(lanes as u64, Ordering::Relaxed);
    }

    /// For a pool that batches: one batch of `jobs`, started after waiting `waited` to fill
    /// (none: it started at once).
    pub fn record_batch_fill(&self, jobs: usize, waited: Option<Duration>) {
        if let Ok(mut recent) = self.per_batch.lock() {
            recent.record(jobs.max(1) as u64);
        }
        if let (Some(waited), Ok(mut recent)) = (waited, self.fill_wait.lock()) {
            recent.record(u64::try_from(waited.as_micros()).unwrap_or(u64::MAX).max(1));
        }
    }

    /// Refuse calls at once while the expected wait is over `target`.
    pub fn set_wait_target(&self, target: Duration) {
        let ms = u64::try_from(target.as_millis()).unwrap_or(u64::MAX);
        self.wait_target_ms.store(ms, Ordering::Relaxed);
    }

    /// The actor's estimate of how long new work would wait now, and how much each job
    /// announced ahead of it adds.
    pub fn set_expected_wait(&self, wait: Duration, per_job: Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self.expected_wait_ms.store(ms, Ordering::Relaxed);
        let us = u64::try_from(per_job.as_micros()).unwrap_or(u64::MAX);
        self.wait_per_job_us.store(us, Ordering::Relaxed);
    }

    /// Admits one job and announces it ([`ActorStats::announce`]) in one step: refused
    /// (`Saturated`) when it would wait beyond the target behind what is queued, running and
    /// already announced. Each caller counts itself in before it looks, so a crowd arriving
    /// together is cut at the door to what the target allows, before any of it does other work
    /// (the look-ups a login makes before its verification is queued).
    pub fn admit_announced(self: &Arc<Self>) -> Result<Announced, ActorError> {
        // Its place in line: those who counted themselves in before it (a refused one among
        // them withdraws soon; it never lets a later caller in past the target).
        let ahead = self.announced.fetch_add(1, Ordering::AcqRel) as u64;
        let announced = Announced(Arc::clone(self));
        let per_job_us = self.wait_per_job_us.load(Ordering::Relaxed);
        let queued_ms = self.expected_wait_ms.load(Ordering::Relaxed);
        let wait_ms = queued_ms.saturating_add(ahead.saturating_mul(per_job_us) / 1000);
        self.within_target(wait_ms)?;
        Ok(announced)
    }

    /// `Err(Saturated)` while new work would wait longer than the target: the caller answers
    /// at once, before doing anything that leads to this actor (counted as rejected).
    pub fn admit(&self) -> Result<(), ActorError> {
        self.within_target(self.expected_wait_ms.load(Ordering::Relaxed))
    }

    /// [`ActorStats::admit`] for work that would wait `wait`: what the actor itself checks as it
    /// queues the work, so callers arriving together cannot all pass on a stale estimate.
    pub fn admit_waiting(&self, wait: Duration) -> Result<(), ActorError> {
        self.within_target(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
    }

    fn within_target(&self, expected: u64) -> Result<(), ActorError> {
        if expected <= self.wait_target_ms.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.count_rejected();
        Err(ActorError::Saturated {
            actor: self.name,
            retry_after_s: expected.div_ceil(1000).max(1),
        })
    }

    /// Like [`ActorStats::start`], for a message that carries when it was sent: also records
    /// how long it waited in the queue (`csum_actor_queue_wait_seconds`).
    pub fn start_queued(self: &Arc<Self>, sent: Instant) -> HandlingTimer {
        self.exported
            .queue_wait
            .record(sent.elapsed().as_secs_f64());
        self.start()
    }

    /// Called by the actor when a handler starts; the returned guard records the outcome.
    pub fn start(self: &Arc<Self>) -> HandlingTimer {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        HandlingTimer {
            stats: Arc::clone(self),
            started: Instant::now(),
        }
    }

    /// Records one batch: `ops` operations carried in `trips` round trips (none: nothing to
    /// record, e.g. every operation was refused).
    pub fn record_batch(&self, ops: usize, trips: u64) {
        if ops == 0 || trips == 0 {
            return;
        }
        let per_trip = ops as f64 / trips as f64;
        self.exported.per_trip.record(per_trip);
        if let Ok(mut recent) = self.per_trip.lock() {
            recent.record((per_trip * 100.0).round().max(1.0) as u64);
        }
    }

    pub fn set_alive(&self, alive: bool) {
        self.alive.store(alive, Ordering::Relaxed);
    }

    pub fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.last_restart_ms.store(now_ms(), Ordering::Relaxed);
        self.exported.restarts.increment(1);
    }

    /// True when the actor restarted within `window`.
    pub fn restarted_within(&self, window: Duration) -> bool {
        let last = self.last_restart_ms.load(Ordering::Relaxed);
        last != 0 && now_ms().saturating_sub(last) <= window.as_millis() as u64
    }

    /// Counts work refused without being done (expired in the queue, dependency down).
    pub fn count_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.exported.rejected.increment(1);
    }

    pub fn is_full(&self) -> bool {
        self.pending.load(Ordering::Relaxed) >= self.capacity
    }

    pub fn snapshot(&self) -> ActorSnapshot {
        let pending = self.pending.load(Ordering::Relaxed);
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let (p50, p99) = self
            .handling
            .lock()
            .map_or((0.0, 0.0), |mut h| h.percentiles());
        let ops_per_round_trip = (self.name == "db_queue").then(|| {
            let (p50, p99) = self
                .per_trip
                .lock()
                .map_or((0.0, 0.0), |mut h| h.quantiles(100.0));
            PerTrip { p50, p99 }
        });
        let lanes = self.lanes.load(Ordering::Relaxed);
        let batching = (lanes > 0).then(|| {
            let (jobs_p50, jobs_p99) = self
                .per_batch
                .lock()
                .map_or((0.0, 0.0), |mut h| h.quantiles(1.0));
            let (wait_p50, wait_p99) = self
                .fill_wait
                .lock()
                .map_or((0.0, 0.0), |mut h| h.percentiles());
            let target = self.wait_target_ms.load(Ordering::Relaxed);
            Batching {
                lanes,
                jobs_per_batch: PerTrip {
                    p50: jobs_p50,
                    p99: jobs_p99,
                },
                fill_wait_ms: PerTrip {
                    p50: wait_p50,
                    p99: wait_p99,
                },
                expected_wait_ms: self.expected_wait_ms.load(Ordering::Relaxed),
                wait_target_ms: (target != u64::MAX).then_some(target),
            }
        });
        ActorSnapshot {
            batching,
            ops_per_round_trip,
            alive: self.alive.load(Ordering::Relaxed),
            mailbox_len: pending.saturating_sub(in_flight),
            mailbox_capacity: self.capacity,
            in_flight,
            processed_total: self.processed.load(Ordering::Relaxed),
            failed_total: self.failed.load(Ordering::Relaxed),
            rejected_total: self.rejected.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            p50_ms: p50,
            p99_ms: p99,
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Records one handler's duration and outcome when finished (or dropped, as a failure).
pub struct HandlingTimer {
    stats: Arc<ActorStats>,
    started: Instant,
}

impl HandlingTimer {
    pub fn finish<T>(self, result: &Result<T, ActorError>) {
        let failed = matches!(result, Err(e) if e.is_failure());
        self.record(failed);
    }

    fn record(self, failed: bool) {
        let elapsed = self.started.elapsed();
        let micros = elapsed.as_micros().clamp(1, 60_000_000) as u64;
        if let Ok(mut h) = self.stats.handling.lock() {
            h.record(micros);
        }
        let exported = &self.stats.exported;
        exported.handling.record(elapsed.as_secs_f64());
        let (counter, series) = if failed {
            (&self.stats.failed, &exported.failed)
        } else {
            (&self.stats.processed, &exported.processed)
        };
        counter.fetch_add(1, Ordering::Relaxed);
        series.increment(1);
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        std::mem::forget(self);
    }
}

impl Drop for HandlingTimer {
    fn drop(&mut self) {
        // Dropped without `finish`: the handler was cancelled (actor stopped mid-way).
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

struct PendingSlot(Arc<ActorStats>);

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The address of an actor plus its capacity gate, deadline and figures.
pub struct Mailbox<A: Actor> {
    addr: Addr<A>,
    stats: Arc<ActorStats>,
    deadline: Duration,
}

impl<A: Actor> Clone for Mailbox<A> {
    fn clone(&self) -> Self {
        Self {
            addr: self.addr.clone(),
            stats: Arc::clone(&self.stats),
            deadline: self.deadline,
        }
    }
}

impl<A: Actor> Mailbox<A> {
    pub fn new(addr: Addr<A>, stats: Arc<ActorStats>, deadline: Duration) -> Self {
        Self {
            addr,
            stats,
            deadline,
        }
    }

    pub fn stats(&self) -> &Arc<ActorStats> {
        &self.stats
    }

    pub fn addr(&self) -> &Addr<A> {
        &self.addr
    }

    /// How long a caller waits (queueing included); `Duration::MAX`: as long as it takes (for
    /// an actor whose every step is bounded by deadlines of its own).
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Sends `msg` and awaits its reply: [`ActorError::Overloaded`] at once when the mailbox is
    /// full, [`ActorError::Timeout`] past the deadline.
    pub async fn call<M, T>(&self, msg: M) -> Result<T, ActorError>
    where
        M: Message<Result = Result<T, ActorError>> + Send + 'static,
        T: Send + 'static,
        A: Handler<Traced<M>>,
        A::Context: ToEnvelope<A, Traced<M>>,
    {
        self.call_with_grace(msg, Duration::ZERO).await
    }

    /// Like [`Mailbox::call`], waiting `grace` longer than the deadline: for an actor that
    /// refuses work not started by the deadline itself, so an operation it did start is always
    /// answered with its real outcome.
    pub async fn call_with_grace<M, T>(&self, msg: M, grace: Duration) -> Result<T, ActorError>
    where
        M: Message<Result = Result<T, ActorError>> + Send + 'static,
        T: Send + 'static,
        A: Handler<Traced<M>>,
        A::Context: ToEnvelope<A, Traced<M>>,
    {
        let name = self.stats.name;
        self.stats.admit()?;
        if self.stats.pending.fetch_add(1, Ordering::AcqRel) >= self.stats.capacity {
            self.stats.pending.fetch_sub(1, Ordering::AcqRel);
            self.stats.count_rejected();
            return Err(ActorError::Overloaded(name));
        }
        let _slot = PendingSlot(Arc::clone(&self.stats));
        let msg = Traced {
            msg,
            span: tracing::Span::current(),
            sent: Instant::now(),
        };
        let reply = if self.deadline == Duration::MAX {
            self.addr.send(msg).await
        } else {
            self.addr.send(msg).timeout(self.deadline + grace).await
        };
        match reply {
            Ok(reply) => reply,
            Err(MailboxError::Timeout) => Err(ActorError::Timeout(name)),
            Err(MailboxError::Closed) => {
                Err(ActorError::unavailable(name, "the actor is not running"))
            }
        }
    }
}

/// A message with the span it was sent from ([`Mailbox::call`] wraps every message): the actor
/// handles it inside a child of that span (see [`traced!`](crate::traced)), and [`guarded`]
/// runs the handler's future inside it too, so what an actor logs for a request carries the
/// request's fields, its id among them, and a trace shows each message as a step of the request.
pub struct Traced<M> {
    pub msg: M,
    pub span: tracing::Span,
    /// When it was sent: the child span's `mailbox_wait_ms`.
    pub sent: Instant,
}

impl<M: Message> Message for Traced<M> {
    type Result = M::Result;
}

/// Whether each actor message gets a span of its own ([`traced!`](crate::traced)): on when spans are exported
/// (OTLP), off otherwise, so the default log costs no span per message.
static TRACE_STEPS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns the per-message spans of [`traced!`](crate::traced) on or off (the telemetry's start-up does).
pub fn trace_steps(on: bool) {
    TRACE_STEPS.store(on, Ordering::Relaxed);
}

/// Whether [`traced!`](crate::traced) makes a span per message now.
pub fn tracing_steps() -> bool {
    TRACE_STEPS.load(Ordering::Relaxed)
}

/// Lets an actor take [`Traced`] messages of each listed kind: it handles the message inside
/// the span it came with, or, when spans are exported ([`trace_steps`]), inside a child of it,
/// `actor message`, with the actor (`actor.name`), the message's kind (`actor.message`) and how
/// long it waited in the mailbox (`actor.mailbox_wait_ms`), lasting as long as the handling (its
/// future included, see [`guarded`]). (One impl per kind: a blanket one over every `M` would
/// send the trait solver looking for `Traced<Traced<…>>` without end.)
#[macro_export]
macro_rules! traced {
    ($actor:ty: $($msg:ty),* $(,)?) => {$(
        impl actix::Handler<$crate::mailbox::Traced<$msg>> for $actor {
            type Result = <$actor as actix::Handler<$msg>>::Result;

            fn handle(
                &mut self,
                traced: $crate::mailbox::Traced<$msg>,
                ctx: &mut Self::Context,
            ) -> Self::Result {
                let step = if $crate::mailbox::tracing_steps() {
                    tracing::info_span!(
                        parent: &traced.span,
                        "actor message",
                        actor.name = stringify!($actor),
                        actor.message = stringify!($msg),
                        actor.mailbox_wait_ms = traced.sent.elapsed().as_secs_f64() * 1000.0,
                        otel.name = concat!(stringify!($actor), " ", stringify!($msg)),
                    )
                } else {
                    traced.span
                };
                let _inside = step.enter();
                <$actor as actix::Handler<$msg>>::handle(self, traced.msg, ctx)
            }
        }
    )*};
}

/// Runs a handler's future inside the actor's context. A panic becomes an
/// [`ActorError::Unavailable`] for the caller (503, never a hang) and stops the actor, so its
/// `Supervisor` restarts it (counted in `restarts`); queued messages wait in the same mailbox.
/// (A [`HandlingTimer`] moved into the future counts the panic as a failure when dropped.)
pub fn guarded<A, T, F>(name: &'static str, fut: F) -> ResponseActFuture<A, Result<T, ActorError>>
where
    A: Actor<Context = Context<A>>,
    T: 'static,
    F: std::future::Future<Output = Result<T, ActorError>> + 'static,
{
    use futures::FutureExt;
    use tracing::Instrument;
    // Called as the handler runs, inside the span its message came with (see `Traced`).
    let fut = fut.instrument(tracing::Span::current());
    let caught = std::panic::AssertUnwindSafe(fut).catch_unwind();
    Box::pin(actix::fut::wrap_future::<_, A>(caught).map(
        move |outcome, _actor, ctx: &mut Context<A>| {
            outcome.unwrap_or_else(|_| {
                tracing::error!(actor = name, "actor handler panicked; restarting the actor");
                ctx.stop();
                Err(ActorError::unavailable(
                    name,
                    "the actor failed and is restarting",
                ))
            })
        },
    ))
}

/// [`guarded`] for a handler that started `timer` as it was called: the handling time and the
/// outcome are recorded when `fut` ends (the one place handlers do it).
pub fn timed<A, T, F>(
    name: &'static str,
    timer: HandlingTimer,
    fut: F,
) -> ResponseActFuture<A, Result<T, ActorError>>
where
    A: Actor<Context = Context<A>>,
    T: 'static,
    F: std::future::Future<Output = Result<T, ActorError>> + 'static,
{
    guarded(name, async move {
        let result = fut.await;
        timer.finish(&result);
        result
    })
}

/// Test-only: makes the receiving actor's handler panic, to prove it is restarted.
#[cfg(feature = "fault-injection")]
#[derive(actix::Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct InjectPanic;

/// Implements [`InjectPanic`] for an actor whose handlers run through [`guarded`].
#[cfg(feature = "fault-injection")]
#[macro_export]
macro_rules! inject_panic_handler {
    ($actor:ty, $name:literal) => {
        $crate::traced!($actor: $crate::mailbox::InjectPanic);

        impl actix::Handler<$crate::mailbox::InjectPanic> for $actor {
            type Result = actix::ResponseActFuture<Self, Result<(), $crate::ActorError>>;

            fn handle(
                &mut self,
                _: $crate::mailbox::InjectPanic,
                _: &mut Self::Context,
            ) -> Self::Result {
                let timer = self.stats.start();
                $crate::mailbox::guarded($name, async move {
                    let _timer = timer;
                    panic!("injected fault");
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::ActorStats;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn admission_at_the_door_counts_the_work_announced_ahead() {
        // 100 ms of queued work, each job 30 ms more, a target of 200 ms: four more jobs fit
        // (the fourth waits 100 + 3 × 30 = 190 ms), a fifth would wait 220 ms.
        let stats = ActorStats::new("hasher", 16);
        stats.set_wait_target(200 * MS);
        stats.set_expected_wait(100 * MS, 30 * MS);
        let admitted: Vec<_> = (0..4).map(|_| stats.admit_announced()).collect();
        assert!(admitted.iter().all(Result::is_ok));
        assert!(
            stats.admit_announced().is_err(),
            "a fifth waits past the target"
        );
        assert_eq!(stats.announced(), 4, "a refused caller withdraws its word");
        drop(admitted);
        assert!(
            stats.admit_announced().is_ok(),
            "room again once they are sent"
        );
    }

    #[test]
    fn a_crowd_arriving_together_is_cut_to_what_the_target_allows() {
        // Nothing queued, 10 ms a job, a target of 95 ms: ten jobs fit (90 ms ahead of the
        // tenth). 64 callers released at once, for several rounds.
        for _ in 0..20 {
            let stats = ActorStats::new("hasher", 64);
            stats.set_wait_target(95 * MS);
            stats.set_expected_wait(Duration::ZERO, 10 * MS);
            let start = Arc::new(Barrier::new(64));
            let callers: Vec<_> = (0..64)
                .map(|_| {
                    let (stats, start) = (Arc::clone(&stats), Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        stats.admit_announced().ok()
                    })
                })
                .collect();
            let admitted: Vec<_> = callers
                .into_iter()
                .filter_map(|caller| caller.join().expect("a caller"))
                .collect();
            assert!(
                (1..=10).contains(&admitted.len()),
                "{} admitted",
                admitted.len()
            );
        }
    }
}
