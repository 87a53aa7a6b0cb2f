//! The DbQueueActor: the only code that touches the database.
//!
//! Every operation is a message in one bounded mailbox, handled with `AtomicResponse`: the actor
//! does not take the next message until the current operation's future has finished, so
//! operations apply in arrival order (FIFO) and writes to one user never interleave.
//! Each operation is also bounded by the configured database deadline.
mod cache;
pub mod messages;
mod mongo;
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
        }
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
            ActorError::Unavailable {
                dependency: self.database.name,
                cause: "down at the last probes".into(),
            }
        } else {
            return None;
        };
        self.stats.count_rejected();
        Some(refusal)
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
queued!(
    RegisterUser,
    (crate::domain::User, crate::domain::Wallet),
    |store, m| { store.register(m.user, m.initial_balance, m.audit) }
);
queued!(FindUserByEmail, Option<crate::domain::User>, |store, m| {
    store.find_user_by_email(m.0)
});
queued!(FindUserById, Option<crate::domain::User>, |store, m| {
    store.find_user_by_id(m.0)
});
queued!(WriteAudit, (), |store, m| store.write_audit(m.0));
queued!(SearchUsers, (Vec<crate::domain::User>, u64), |store, m| {
    store.search_users(m)
});
queued!(
    ListAudit,
    (Vec<crate::domain::AuditRecord>, u64),
    |store, m| { store.list_audit(m) }
);

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
invalidating!(
    UpdateUser,
    Option<crate::domain::User>,
    |store, m| m.id,
    store.update_user(m.id, m.changes, m.audit)
);
invalidating!(
    DeleteUser,
    bool,
    |store, m| m.id,
    store.delete_user(m.id, m.audit)
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
