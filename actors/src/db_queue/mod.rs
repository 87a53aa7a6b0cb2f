//! The DbQueueActor: the only code that touches the database.
//!
//! Every operation is a message in one bounded mailbox, handled with `AtomicResponse`: the actor
//! does not take the next message until the current operation's future has finished, so
//! operations apply in arrival order (FIFO) and writes to one user never interleave.
//! Each operation is also bounded by the configured database deadline.
mod cache;
pub mod messages;
mod mongo;
mod mongo_indexes;
mod sqlite;
mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::mailbox::{guarded, ActorStats, HandlingTimer, Mailbox};
use crate::probe::Dependency;
use crate::ActorError;
pub use cache::{UserCache, UserWithWallet};
pub use messages::*;
pub use mongo::{connect, MongoStore};
pub use sqlite::SqliteStore;
pub use store::Store;

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

    /// Runs `op` as this actor's one current operation, under the deadline, recording its time.
    fn atomic<T, F>(
        &self,
        timer: HandlingTimer,
        op: F,
    ) -> AtomicResponse<Self, Result<T, ActorError>>
    where
        T: 'static,
        F: Future<Output = Result<T, ActorError>> + 'static,
    {
        let deadline = self.op_timeout;
        AtomicResponse::new(guarded("db_queue", async move {
            let result = tokio::time::timeout(deadline, op)
                .await
                .unwrap_or(Err(ActorError::Timeout("database")));
            timer.finish(&result);
            result
        }))
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

impl DbQueueActor {
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
}

impl DbQueueActor {
    /// Test-only: a failure injected for this operation, if one is due.
    #[cfg(feature = "fault-injection")]
    fn injected_fault(&mut self, operation: &str) -> Option<ActorError> {
        if operation != "RecordLogin" || self.failing_stamps == 0 {
            return None;
        }
        self.failing_stamps -= 1;
        Some(ActorError::unavailable("db_queue", "injected fault"))
    }

    #[cfg(not(feature = "fault-injection"))]
    fn injected_fault(&mut self, _operation: &str) -> Option<ActorError> {
        None
    }
}

fn refused<T: 'static>(e: ActorError) -> AtomicResponse<DbQueueActor, Result<T, ActorError>> {
    AtomicResponse::new(Box::pin(actix::fut::ready(Err(e))))
}

/// How every caller reaches the DbQueueActor: bounded, and waiting for an operation that has
/// started until it finishes (bounded by the operation timeout), so a write that was applied is
/// never answered with a 503.
#[derive(Clone)]
pub struct DbQueue {
    mailbox: Mailbox<DbQueueActor>,
    op_timeout: Duration,
}

impl DbQueue {
    pub fn new(mailbox: Mailbox<DbQueueActor>, op_timeout: Duration) -> Self {
        Self {
            mailbox,
            op_timeout,
        }
    }

    pub fn stats(&self) -> &Arc<ActorStats> {
        self.mailbox.stats()
    }

    pub async fn call<M, T>(&self, msg: M) -> Result<T, ActorError>
    where
        M: Message<Result = Result<T, ActorError>> + Send + 'static,
        T: Send + 'static,
        DbQueueActor: Handler<Queued<M>>,
    {
        let start_by = Instant::now() + self.mailbox.deadline();
        let grace = self.op_timeout + Duration::from_millis(500);
        self.mailbox
            .call_with_grace::<Queued<M>, T>(Queued { msg, start_by }, grace)
            .await
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
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stats.set_alive(false);
    }
}

impl Supervised for DbQueueActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.stats.count_restart();
    }
}

macro_rules! queued {
    ($msg:ty, $reply:ty, |$store:ident, $m:ident| $body:expr) => {
        impl Handler<Queued<$msg>> for DbQueueActor {
            type Result = AtomicResponse<Self, Result<$reply, ActorError>>;

            fn handle(&mut self, queued: Queued<$msg>, _: &mut Self::Context) -> Self::Result {
                if let Some(e) = self.refusal(queued.start_by) {
                    return refused(e);
                }
                let $m = queued.msg;
                let timer = self.stats.start();
                let $store = self.store.clone();
                self.atomic(timer, async move { $body.await })
            }
        }
    };
}

queued!(EnsureIndexes, (), |store, _m| store.ensure_indexes());
queued!(PlanIndexes, IndexPlan, |store, _m| store.plan_indexes());
queued!(
    RegisterUser,
    Written<(crate::domain::User, crate::domain::Wallet)>,
    |store, m| { store.register(m) }
);
queued!(FindUserByEmail, Option<crate::domain::User>, |store, m| {
    store.find_user_by_email(m.0)
});
queued!(FindUserById, Option<crate::domain::User>, |store, m| {
    store.find_user_by_id(m.0)
});
queued!(WriteAudit, (), |store, m| store.write_audit(m.0));
queued!(SearchUsersSlice, SearchSlice, |store, m| store
    .search_slice(m));
queued!(FindUsersByIds, Vec<crate::domain::User>, |store, m| {
    store.find_users_by_ids(m.0)
});
queued!(
    ListAudit,
    (Vec<crate::domain::AuditRecord>, u64),
    |store, m| { store.list_audit(m) }
);

/// Removes the audit entries older than the retention (sent by the actor to itself).
#[derive(Message)]
#[rtype(result = "Result<u64, ActorError>")]
struct PurgeOldAudit;

impl Handler<PurgeOldAudit> for DbQueueActor {
    type Result = AtomicResponse<Self, Result<u64, ActorError>>;

    fn handle(&mut self, _: PurgeOldAudit, _: &mut Self::Context) -> Self::Result {
        let Some(retention) = self.audit_retention else {
            return refused(ActorError::Invalid("no audit retention".into()));
        };
        // A retention longer than the calendar reaches back: nothing is that old.
        let Some(before) = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|r| chrono::Utc::now().checked_sub_signed(r))
        else {
            return refused(ActorError::Invalid("retention beyond the calendar".into()));
        };
        let (timer, store) = (self.stats.start(), self.store.clone());
        self.atomic(timer, async move {
            let purged = store.purge_audit(before).await;
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
impl Handler<Queued<crate::mailbox::InjectPanic>> for DbQueueActor {
    type Result = AtomicResponse<Self, Result<(), ActorError>>;

    fn handle(
        &mut self,
        _: Queued<crate::mailbox::InjectPanic>,
        _: &mut Self::Context,
    ) -> Self::Result {
        let timer = self.stats.start();
        self.atomic(timer, async { panic!("injected fault") })
    }
}

/// Writes to one user drop their cached copy, before and after the write, inside the FIFO order.
macro_rules! invalidating {
    ($msg:ty, $reply:ty, |$store:ident, $m:ident| $id:expr, $body:expr) => {
        impl Handler<Queued<$msg>> for DbQueueActor {
            type Result = AtomicResponse<Self, Result<$reply, ActorError>>;

            fn handle(&mut self, queued: Queued<$msg>, _: &mut Self::Context) -> Self::Result {
                if let Some(e) = self.refusal(queued.start_by) {
                    return refused(e);
                }
                let $m = queued.msg;
                if let Some(e) = self.injected_fault(stringify!($msg)) {
                    return refused(e);
                }
                let timer = self.stats.start();
                let $store = self.store.clone();
                let (cache, id) = (self.cache.clone(), $id);
                cache.invalidate(&id);
                self.atomic(timer, async move {
                    let result = $body.await;
                    cache.invalidate(&id);
                    result
                })
            }
        }
    };
}

invalidating!(
    RecordLogin,
    (),
    |store, m| m.user_id,
    store.record_login(m.user_id, m.at, m.audit)
);

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
invalidating!(
    UpdateUser,
    Written<crate::domain::User>,
    |store, m| m.id,
    store.update_user(m)
);
invalidating!(
    DeleteUser,
    Written<()>,
    |store, m| m.id,
    store.delete_user(m)
);
invalidating!(
    UpgradeHash,
    bool,
    |store, m| m.id,
    store.upgrade_hash(m.id, m.verified, m.upgraded)
);

impl Handler<Queued<FindUserWithWallet>> for DbQueueActor {
    type Result = AtomicResponse<Self, Result<Option<UserWithWallet>, ActorError>>;

    fn handle(
        &mut self,
        queued: Queued<FindUserWithWallet>,
        _: &mut Self::Context,
    ) -> Self::Result {
        if let Some(e) = self.refusal(queued.start_by) {
            return refused(e);
        }
        let msg = queued.msg;
        let timer = self.stats.start();
        let (store, cache) = (self.store.clone(), self.cache.clone());
        self.atomic(timer, async move {
            let found = store.find_user_with_wallet(msg.0).await?.map(Arc::new);
            if let Some(found) = &found {
                cache.insert(msg.0, Arc::clone(found));
            }
            Ok(found)
        })
    }
}
