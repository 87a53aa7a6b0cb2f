//! The DbQueueActor: the only code that touches the database.
//!
//! Every operation is a message in one bounded mailbox. The actor keeps what arrives in its
//! queue, in arrival order, and runs it in batches, one batch at a time: when a batch ends it
//! takes what is queued (up to the batch size) as the next. A batch's outcome is that of its
//! operations run one by one in FIFO order; it only carries them in fewer round trips (group
//! commit, see [`batch`]), so writes to one user never interleave and a read sees every write
//! queued before it. Each batch is bounded by the configured database deadline.
mod batch;
mod cache;
pub mod messages;
mod mongo;
mod mongo_indexes;
mod mongo_memory;
mod sqlite;
mod store;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use rusqlite::Connection;

use crate::domain::{AuditRecord, Page, Registered, User, UserId};
use crate::mailbox::{guarded, ActorStats, Mailbox};
use crate::probe::Dependency;
use crate::ActorError;
pub use cache::{UserCache, UserWithWallet};
pub use messages::*;
pub use mongo::{connect, MongoStore};
pub use mongo_indexes::case_insensitive;
pub use mongo_memory::SearchMemory;
pub use sqlite::SqliteStore;
pub use store::Store;

use batch::{Caller, Job, Op, Operation};
use sqlite::Beside;

/// How long the preparation ([`EnsureIndexes`]) may run. It reads every user once (whether
/// some lack an email key; SecantusDB reads some 40,000 users a second), so its length grows
/// with the data and does not fit the deadline of one request's operation
/// (`MONGODB_OP_TIMEOUT_MS`): held to that, start-up timed out and tried again for ever
/// (100,000 users on SecantusDB on a slow host). Nothing else is served meanwhile.
pub const PREPARE_TIME_LIMIT: Duration = Duration::from_secs(15 * 60);

pub struct DbQueueActor {
    store: Store,
    stats: Arc<ActorStats>,
    op_timeout: Duration,
    /// The store's probe state (MongoDB or the embedded file).
    database: Arc<Dependency>,
    probe_interval: Duration,
    cache: UserCache,
    /// Audit entries older than this are removed every `purge_interval` (`None`: kept).
    audit_retention: Option<Duration>,
    purge_interval: Duration,
    /// What has arrived and not yet started, in arrival order, with when its caller stops
    /// waiting for it to start.
    queue: VecDeque<(Op, Instant)>,
    /// Whether a batch is running.
    running: bool,
    /// At most this many operations per batch.
    batch_size: usize,
    /// Test-only: how many of the next login stamps fail (see [`FailLoginStamps`]).
    #[cfg(feature = "fault-injection")]
    failing_stamps: usize,
}

impl DbQueueActor {
    pub fn new(
        store: Store,
        stats: Arc<ActorStats>,
        op_timeout: Duration,
        database: Arc<Dependency>,
        probe_interval: Duration,
        cache: UserCache,
    ) -> Self {
        Self {
            store,
            stats,
            op_timeout,
            database,
            probe_interval,
            cache,
            audit_retention: None,
            purge_interval: Duration::from_secs(300),
            queue: VecDeque::new(),
            running: false,
            batch_size: 128,
            #[cfg(feature = "fault-injection")]
            failing_stamps: 0,
        }
    }

    /// Keeps audit entries for `retention` (`None`: for ever), removing older ones at start and
    /// every `interval`, in turn with every other operation.
    pub fn with_audit_retention(mut self, retention: Option<Duration>, interval: Duration) -> Self {
        self.audit_retention = retention;
        self.purge_interval = interval.max(Duration::from_secs(1));
        self
    }

    /// At most `size` operations per batch (1: one operation per round trip, as before group
    /// commit).
    pub fn with_batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.max(1);
        self
    }

    /// Queues an operation; starts a batch at once when none is running.
    fn enqueue(&mut self, op: Op, start_by: Instant, ctx: &mut Context<Self>) {
        self.queue.push_back((op, start_by));
        self.run_next(ctx);
    }

    /// Takes what is queued (up to the batch size) as the next batch, unless one is running.
    fn run_next(&mut self, ctx: &mut Context<Self>) {
        if self.running || matches!(ctx.state(), ActorState::Stopping | ActorState::Stopped) {
            return;
        }
        let mut ops = Vec::new();
        while ops.is_empty() && !self.queue.is_empty() {
            let take = self.queue.len().min(self.batch_size);
            for (mut op, start_by) in self.queue.drain(..take).collect::<Vec<_>>() {
                match self.refusal(start_by) {
                    Some(e) => op.fail(e),
                    None => {
                        op.start(&self.stats);
                        ops.push(op);
                    }
                }
            }
        }
        if ops.is_empty() {
            return;
        }
        self.running = true;
        let (store, cache, stats) = (self.store.clone(), self.cache.clone(), self.stats.clone());
        // An operation with a time limit of its own (the preparation) runs alone before the
        // service serves: the batch that carries it has that limit.
        let limit = ops.iter().filter_map(Op::time_limit).max();
        let deadline = Instant::now() + limit.map_or(self.op_timeout, |l| l.max(self.op_timeout));
        let batch = async move {
            #[cfg(feature = "fault-injection")]
            if ops.iter().any(Op::panics) {
                panic!("injected fault");
            }
            let count = ops.len();
            let trips = match store {
                Store::Mongo(store) => {
                    let before = store.round_trips();
                    batch::run_mongo(store.clone(), cache, ops, deadline).await;
                    store.round_trips().saturating_sub(before)
                }
                Store::Embedded(store) => {
                    batch::run_sqlite(store, cache, ops, deadline).await;
                    1
                }
            };
            stats.record_batch(count, trips);
            Ok(())
        };
        ctx.spawn(guarded("db_queue", batch).map(
            |_: Result<(), ActorError>, actor: &mut Self, ctx: &mut Context<Self>| {
                actor.running = false;
                actor.run_next(ctx);
            },
        ));
    }

    /// Why an operation is refused without being tried: its caller stopped waiting before it
    /// could start, or the database is confirmed down.
    fn refusal(&self, start_by: Instant) -> Option<ActorError> {
        let refusal = if Instant::now() >= start_by {
            ActorError::Timeout("db_queue")
        } else if self.database.confirmed_down() {
            ActorError::unavailable(self.database.name, "down at the last probes")
        } else {
            return None;
        };
        self.stats.count_rejected();
        Some(refusal)
    }

    /// Test-only: a failure injected for this operation, if one is due.
    #[cfg(feature = "fault-injection")]
    fn injected_fault(&mut self) -> Option<ActorError> {
        if self.failing_stamps == 0 {
            return None;
        }
        self.failing_stamps -= 1;
        Some(ActorError::unavailable("db_queue", "injected fault"))
    }

    #[cfg(not(feature = "fault-injection"))]
    fn injected_fault(&mut self) -> Option<ActorError> {
        None
    }
}

/// A database operation and the moment its caller stops waiting for it to start. The actor
/// refuses an operation whose caller has given up (it would otherwise be applied after a 503),
/// and answers at once while the database is confirmed down.
pub struct Queued<M> {
    msg: M,
    start_by: Instant,
}

impl<M: Message> Message for Queued<M> {
    type Result = M::Result;
}

/// How every caller reaches the DbQueueActor: bounded, and waiting for an operation that has
/// started until it finishes (bounded by the operation timeout), so a write that was applied is
/// never answered with a 503.
#[derive(Clone)]
pub struct DbQueue {
    mailbox: Mailbox<DbQueueActor>,
    op_timeout: Duration,
    /// The database: no operation is sent until it is prepared (its indexes in place), since
    /// the unique indexes guard every duplicate rule.
    database: Arc<Dependency>,
    /// MongoDB's search memory, read by `/health`.
    search_memory: Option<Arc<SearchMemory>>,
}

impl DbQueue {
    pub fn new(
        mailbox: Mailbox<DbQueueActor>,
        op_timeout: Duration,
        database: Arc<Dependency>,
    ) -> Self {
        Self {
            mailbox,
            op_timeout,
            database,
            search_memory: None,
        }
    }

    /// Names the store's search memory (MongoDB's), so `/health` can say what it holds.
    pub fn with_search_memory(mut self, memory: Option<Arc<SearchMemory>>) -> Self {
        self.search_memory = memory;
        self
    }

    /// Whether the store keeps a search memory (MongoDB, with a bound above 0).
    pub fn keeps_search_memory(&self) -> bool {
        self.search_memory.as_ref().is_some_and(|m| m.enabled())
    }

    /// How many users the search memory holds while it answers searches (`None`: it does not,
    /// or the store has none).
    pub fn search_memory_users(&self) -> Option<u64> {
        self.search_memory.as_ref()?.serving()
    }

    /// Steps of keeping the search memory ([`KeepSearchMemory`], `chunk` users or events a
    /// turn) until none is due, each followed by a pause as long as it took: the steps hold
    /// the queue half the time at most, so an operation sent meanwhile finds it free as often
    /// as not, and waits for one step at most.
    pub async fn keep_search_memory(&self, chunk: u32) -> Result<(), ActorError> {
        loop {
            let started = Instant::now();
            if !self.call(KeepSearchMemory { chunk }).await? {
                return Ok(());
            }
            tokio::time::sleep(started.elapsed()).await;
        }
    }

    /// Brings the indexes to what the service needs ([`EnsureIndexes`]), the one operation
    /// sent before the database is prepared.
    pub async fn prepare(&self) -> Result<(), ActorError> {
        self.send(EnsureIndexes, PREPARE_TIME_LIMIT).await
    }

    /// Adds to the search index the users stored before it existed, a step (`rows` users) per
    /// turn in the queue, so what is sent meanwhile waits for one step at most; replies with
    /// how many were added. Searches read every user until it is complete.
    pub async fn backfill_search_index(&self, rows: u32) -> Result<u64, ActorError> {
        let (mut indexed, mut after) = (0, None);
        loop {
            let step = self.call(BackfillSearchIndex { rows, after }).await?;
            indexed += step.indexed;
            if !step.remaining {
                return Ok(indexed);
            }
            after = step.resume;
        }
    }

    pub fn stats(&self) -> &Arc<ActorStats> {
        self.mailbox.stats()
    }

    /// Sends `msg` and waits for its answer; refused at once (503) while the database is not
    /// prepared.
    pub async fn call<M, T>(&self, msg: M) -> Result<T, ActorError>
    where
        M: Message<Result = Result<T, ActorError>> + Send + 'static,
        T: Send + 'static,
        DbQueueActor: Handler<crate::mailbox::Traced<Queued<M>>>,
    {
        if !self.database.is_prepared() {
            return Err(ActorError::unavailable(
                self.database.name,
                crate::error::PublicReason(
                    "the database was unreachable at start; its indexes are prepared as soon as \
                     it answers",
                ),
            ));
        }
        self.send(msg, self.op_timeout).await
    }

    /// Sends `msg` and waits for its answer for the mailbox's deadline to start and `limit` to
    /// run (and half a second more for the answer to travel).
    async fn send<M, T>(&self, msg: M, limit: Duration) -> Result<T, ActorError>
    where
        M: Message<Result = Result<T, ActorError>> + Send + 'static,
        T: Send + 'static,
        DbQueueActor: Handler<crate::mailbox::Traced<Queued<M>>>,
    {
        let start_by = Instant::now() + self.mailbox.deadline();
        let grace = limit + Duration::from_millis(500);
        self.mailbox
            .call_with_grace::<Queued<M>, T>(Queued { msg, start_by }, grace)
            .await
    }
}

// Every operation comes wrapped with the span it was sent from; the actor queues it inside a
// child span (as `traced!` makes one: the actor, the operation, its wait in the mailbox), and the
// batch that carries it runs for many requests at once, outside any one's span.
impl<M> Handler<crate::mailbox::Traced<Queued<M>>> for DbQueueActor
where
    M: Message,
    DbQueueActor: Handler<Queued<M>>,
    <DbQueueActor as Handler<Queued<M>>>::Result:
        actix::dev::MessageResponse<DbQueueActor, crate::mailbox::Traced<Queued<M>>>,
{
    type Result = <DbQueueActor as Handler<Queued<M>>>::Result;

    fn handle(
        &mut self,
        traced: crate::mailbox::Traced<Queued<M>>,
        ctx: &mut Self::Context,
    ) -> Self::Result {
        let step = if crate::mailbox::tracing_steps() {
            let operation = std::any::type_name::<M>();
            let operation = operation.rsplit("::").next().unwrap_or(operation);
            tracing::info_span!(
                parent: &traced.span,
                "actor message",
                actor.name = "DbQueueActor",
                actor.message = operation,
                actor.mailbox_wait_ms = traced.sent.elapsed().as_secs_f64() * 1000.0,
                otel.name = %format_args!("DbQueueActor {operation}"),
            )
        } else {
            traced.span
        };
        let _inside = step.enter();
        <DbQueueActor as Handler<Queued<M>>>::handle(self, traced.msg, ctx)
    }
}

impl Actor for DbQueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Our `Mailbox` gate enforces the configured capacity; actix's own bound sits just
        // above it so a send never parks.
        ctx.set_mailbox_capacity(self.stats.capacity + 1);
        self.stats.set_alive(true);
        // The probe pings on its own task, never queued behind operations.
        let store = self.store.clone();
        self.database
            .watch(self.probe_interval, move || store.clone().ping());
        if self.audit_retention.is_some() {
            ctx.notify(PurgeOldAudit);
            ctx.run_interval(self.purge_interval, |_, ctx| ctx.notify(PurgeOldAudit));
        }
        // After a restart: what was queued goes on.
        self.run_next(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stats.set_alive(false);
    }
}

impl Supervised for DbQueueActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.stats.count_restart();
        // The batch that failed is gone with its callers' answers (they hear the failure).
        self.running = false;
    }
}

/// What a caller hears when the actor failed while its operation was queued or running.
async fn answered<T>(
    outcome: tokio::sync::oneshot::Receiver<Result<T, ActorError>>,
) -> Result<T, ActorError> {
    outcome.await.unwrap_or_else(|_| {
        Err(ActorError::unavailable(
            "db_queue",
            "the actor failed and is restarting",
        ))
    })
}

/// Queues the message as the operation `|m, caller| op` makes; the reply is its outcome.
/// A write to one user (`invalidates field`) drops its cached copy when queued, and again when
/// applied.
macro_rules! queued {
    ($msg:ty, $reply:ty, |$m:ident, $caller:ident| $op:expr $(, invalidates $field:ident)?) => {
        impl Handler<Queued<$msg>> for DbQueueActor {
            type Result = ResponseFuture<Result<$reply, ActorError>>;

            fn handle(&mut self, queued: Queued<$msg>, ctx: &mut Self::Context) -> Self::Result {
                let ($caller, outcome) = Caller::new();
                let $m = queued.msg;
                $(self.cache.invalidate(&$m.$field);)?
                let op = $op;
                self.enqueue(op, queued.start_by, ctx);
                Box::pin(answered(outcome))
            }
        }
    };
}

/// An operation that runs alone (see [`batch`]).
fn alone<M: Operation>(msg: M, caller: Caller<M::Output>) -> Op {
    Op::Alone(Box::new(Job { msg, caller }))
}

queued!(FindUserByEmail, Option<User>, |m, c| Op::ByEmail(m.0, c));
queued!(FindUserById, Option<User>, |m, c| Op::ById(m.0, c));
queued!(FindUserWithWallet, Option<UserWithWallet>, |m, c| {
    Op::WithWallet(m.0, c)
});
queued!(WriteAudit, (), |m, c| Op::Audit(m.0, c));
queued!(EnsureIndexes, (), |m, c| alone(m, c));
queued!(RegisterUser, Written<Registered>, |m, c| alone(m, c));
queued!(SearchUsersSlice, SearchSlice, |m, c| alone(m, c));
queued!(SearchIndexed, Option<Indexed>, |m, c| alone(m, c));
queued!(BackfillSearchIndex, Backfilled, |m, c| alone(m, c));
queued!(KeepSearchMemory, bool, |m, c| alone(m, c));
queued!(FindUsersByIds, Vec<User>, |m, c| alone(m, c));
queued!(ListAudit, Page<AuditRecord>, |m, c| alone(m, c));
queued!(UpdateUser, Written<User>, |m, c| alone(m, c), invalidates id);
queued!(DeleteUser, Written<()>, |m, c| alone(m, c), invalidates id);
queued!(UpgradeHash, bool, |m, c| alone(m, c), invalidates id);

impl Handler<Queued<RecordLogin>> for DbQueueActor {
    type Result = ResponseFuture<Result<(), ActorError>>;

    fn handle(&mut self, queued: Queued<RecordLogin>, ctx: &mut Self::Context) -> Self::Result {
        if let Some(e) = self.injected_fault() {
            return Box::pin(async { Err(e) });
        }
        self.cache.invalidate(&queued.msg.user_id);
        let (caller, outcome) = Caller::new();
        self.enqueue(Op::Stamp(queued.msg, caller), queued.start_by, ctx);
        Box::pin(answered(outcome))
    }
}

/// The operations that run alone: the same call on either store.
macro_rules! alone {
    ($msg:ty, $out:ty, $method:ident $(, writes $field:ident)?) => {
        impl Operation for $msg {
            type Output = $out;

            $(fn writes_user(&self) -> Option<UserId> {
                Some(self.$field)
            })?

            async fn mongo(self, store: MongoStore) -> Result<$out, ActorError> {
                store.$method(self).await
            }

            fn sqlite(self, c: &Connection) -> Result<$out, ActorError> {
                SqliteStore::$method(c, self)
            }
        }
    };
}

alone!(RegisterUser, Written<Registered>, register);
alone!(UpdateUser, Written<User>, update_user, writes id);
alone!(DeleteUser, Written<()>, delete_user, writes id);
alone!(SearchUsersSlice, SearchSlice, search_slice);
alone!(BackfillSearchIndex, Backfilled, backfill_search_index);
alone!(KeepSearchMemory, bool, keep_search_memory);
alone!(ListAudit, Page<AuditRecord>, list_audit);

impl Operation for SearchIndexed {
    type Output = Option<Indexed>;

    async fn mongo(self, store: MongoStore) -> Result<Option<Indexed>, ActorError> {
        store.search_indexed(self).await
    }

    fn sqlite(self, c: &Connection) -> Result<Option<Indexed>, ActorError> {
        SqliteStore::search_indexed(c, self, &Beside::none())
    }

    fn sqlite_beside(self, c: &Connection, beside: &Beside) -> Result<Option<Indexed>, ActorError> {
        SqliteStore::search_indexed(c, self, beside)
    }
}

impl Operation for UpgradeHash {
    type Output = bool;

    fn writes_user(&self) -> Option<UserId> {
        Some(self.id)
    }

    async fn mongo(self, store: MongoStore) -> Result<bool, ActorError> {
        store
            .upgrade_hash(self.id, self.verified, self.upgraded)
            .await
    }

    fn sqlite(self, c: &Connection) -> Result<bool, ActorError> {
        SqliteStore::upgrade_hash(c, self.id, self.verified, self.upgraded)
    }
}

impl Operation for FindUsersByIds {
    type Output = Vec<User>;

    async fn mongo(self, store: MongoStore) -> Result<Vec<User>, ActorError> {
        store.find_users_by_ids(self.0).await
    }

    fn sqlite(self, c: &Connection) -> Result<Vec<User>, ActorError> {
        SqliteStore::find_users_by_ids(c, self.0)
    }
}

impl Operation for EnsureIndexes {
    type Output = ();
    const TIME_LIMIT: Option<Duration> = Some(PREPARE_TIME_LIMIT);

    async fn mongo(self, store: MongoStore) -> Result<(), ActorError> {
        store.ensure_indexes().await
    }

    fn sqlite(self, c: &Connection) -> Result<(), ActorError> {
        SqliteStore::ensure_indexes(c)
    }
}

/// Removes the audit entries older than the retention (sent by the actor to itself).
#[derive(Message)]
#[rtype(result = "Result<u64, ActorError>")]
struct PurgeOldAudit;

/// [`PurgeOldAudit`] as an operation: entries before this moment go.
struct PurgeBefore(chrono::DateTime<chrono::Utc>);

impl Operation for PurgeBefore {
    type Output = u64;

    async fn mongo(self, store: MongoStore) -> Result<u64, ActorError> {
        store.purge_audit(self.0).await
    }

    fn sqlite(self, c: &Connection) -> Result<u64, ActorError> {
        SqliteStore::purge_audit(c, self.0)
    }
}

impl Handler<PurgeOldAudit> for DbQueueActor {
    type Result = ResponseFuture<Result<u64, ActorError>>;

    fn handle(&mut self, _: PurgeOldAudit, ctx: &mut Self::Context) -> Self::Result {
        let Some(retention) = self.audit_retention else {
            return Box::pin(async { Err(ActorError::Invalid("no audit retention".into())) });
        };
        // A retention longer than the calendar reaches back: nothing is that old.
        let Some(before) = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|r| chrono::Utc::now().checked_sub_signed(r))
        else {
            return Box::pin(async {
                Err(ActorError::Invalid("retention beyond the calendar".into()))
            });
        };
        let (caller, outcome) = Caller::new();
        // Its own start-by: it has no caller to give up on it.
        let start_by = Instant::now() + self.purge_interval;
        self.enqueue(alone(PurgeBefore(before), caller), start_by, ctx);
        Box::pin(async move {
            let purged = answered(outcome).await;
            match &purged {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "audit entries past the retention removed"),
                Err(e) => tracing::warn!(error = %crate::error::chain(e), "audit purge failed"),
            }
            purged
        })
    }
}

#[cfg(feature = "fault-injection")]
impl Operation for crate::mailbox::InjectPanic {
    type Output = ();

    fn panics(&self) -> bool {
        true
    }

    async fn mongo(self, _: MongoStore) -> Result<(), ActorError> {
        panic!("injected fault")
    }

    fn sqlite(self, _: &Connection) -> Result<(), ActorError> {
        panic!("injected fault")
    }
}

#[cfg(feature = "fault-injection")]
queued!(crate::mailbox::InjectPanic, (), |m, c| alone(m, c));

/// Test-only: the next `n` login stamps fail as if the database had (nothing is written), to
/// prove a login whose stamp fails leaves no session open.
#[cfg(feature = "fault-injection")]
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct FailLoginStamps(pub usize);

#[cfg(feature = "fault-injection")]
impl Handler<Queued<FailLoginStamps>> for DbQueueActor {
    type Result = Result<(), ActorError>;

    fn handle(&mut self, queued: Queued<FailLoginStamps>, _: &mut Self::Context) -> Self::Result {
        self.failing_stamps = queued.msg.0;
        Ok(())
    }
}
