//! The SessionActor: the periodic idle-session sweep and the failed-login lockout.
//!
//! All state is in the [`SessionStore`] (Redis, or the embedded file) and every change is one
//! atomic operation there, so lockouts hold across service instances sharing it; the sweep may
//! run on every instance at once, and each expired session is ended (and audited) exactly once.
//! (Sessions are opened, checked and ended by the TokenActor, which signs their tokens.)
pub mod messages;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;

use crate::db_queue::{DbQueue, WriteAudit};
use crate::domain::AttemptSource;
use crate::domain::AuditEntry;
use crate::mailbox::{timed, ActorStats};
use crate::session_store::{Admission, AttemptRequest, SessionStore};
use crate::ActorError;
pub use messages::*;

#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub idle_timeout: Duration,
    pub check_interval: Duration,
    /// How long a session's record may live at most: the refresh token's lifetime.
    pub max_lifetime: Duration,
    /// `LOGIN_MAX_FAILURES` per (email, address), `LOGIN_MAX_FAILURES_PER_ACCOUNT` per email.
    pub login_max_failures: u32,
    pub login_max_failures_per_account: u32,
    pub login_failure_window: Duration,
    /// How long an attempt may wait for a slot (less than a call's deadline, so the caller is
    /// still waiting when it is admitted).
    pub attempt_wait: Duration,
    /// After how long an attempt that never ended (its instance died mid-check) gives its slot
    /// back: longer than any login takes.
    pub attempt_stale: Duration,
    /// `AUTH_RATE_LIMIT` (requests per second per address; 0 = off) and `AUTH_RATE_BURST`.
    pub rate_limit: u32,
    pub rate_burst: u32,
}

pub struct SessionActor {
    settings: Arc<SessionSettings>,
    store: SessionStore,
    db: DbQueue,
    stats: Arc<ActorStats>,
}

impl SessionActor {
    pub fn new(
        settings: SessionSettings,
        store: SessionStore,
        db: DbQueue,
        stats: Arc<ActorStats>,
    ) -> Self {
        Self {
            settings: Arc::new(settings),
            store,
            db,
            stats,
        }
    }
}

// Every message comes wrapped with the span it was sent from.
crate::traced!(SessionActor: BeginLoginAttempt, EndLoginAttempt, LiftLockout, SweepIdleSessions, TakeRateToken);

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.stats.capacity + 1);
        self.stats.set_alive(true);
        let interval = self.settings.check_interval.max(Duration::from_secs(1));
        ctx.run_interval(interval, |_, ctx| {
            ctx.notify(SweepIdleSessions);
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stats.set_alive(false);
    }
}

impl Supervised for SessionActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.stats.count_restart();
    }
}

impl Handler<BeginLoginAttempt> for SessionActor {
    type Result = ResponseActFuture<Self, Result<LoginAttempt, ActorError>>;

    /// Asks the store again, with a growing pause, while the answer is "wait": the attempts
    /// holding the slots end within one password check each (a success gives its slot back).
    fn handle(&mut self, msg: BeginLoginAttempt, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let store = self.store.clone();
        let s = Arc::clone(&self.settings);
        timed("session", timer, async move {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let give_up = tokio::time::Instant::now() + s.attempt_wait;
            let mut pause = Duration::from_millis(5);
            loop {
                let admission = store
                    .begin_attempt(AttemptRequest {
                        email: msg.email.clone(),
                        source: msg.source.clone(),
                        attempt: id.clone(),
                        now_ms: Utc::now().timestamp_millis(),
                        max_per_address: s.login_max_failures,
                        // A known device is judged by its own failures alone.
                        max_per_account: match msg.source {
                            AttemptSource::Address(_) => s.login_max_failures_per_account,
                            AttemptSource::Device(_) => 0,
                        },
                        stale_ms: s.attempt_stale.as_millis() as i64,
                    })
                    .await?;
                match admission {
                    Admission::Admitted => {
                        return Ok(LoginAttempt {
                            email: msg.email,
                            source: msg.source,
                            id,
                        })
                    }
                    Admission::Locked(seconds) => return Err(ActorError::LockedOut(seconds)),
                    Admission::Wait if tokio::time::Instant::now() + pause > give_up => {
                        return Err(ActorError::LockedOut(1));
                    }
                    Admission::Wait => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(100));
                    }
                }
            }
        })
    }
}

impl Handler<LiftLockout> for SessionActor {
    type Result = ResponseActFuture<Self, Result<u64, ActorError>>;

    fn handle(&mut self, msg: LiftLockout, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let store = self.store.clone();
        timed(
            "session",
            timer,
            async move { store.lift_lockout(msg.0).await },
        )
    }
}

impl Handler<TakeRateToken> for SessionActor {
    type Result = ResponseActFuture<Self, Result<(), ActorError>>;

    fn handle(&mut self, msg: TakeRateToken, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let store = self.store.clone();
        let (rate, burst) = (self.settings.rate_limit, self.settings.rate_burst);
        timed("session", timer, async move {
            if rate == 0 {
                return Ok(());
            }
            let interval_ms = 1000.0 / f64::from(rate);
            let now = Utc::now().timestamp_millis();
            match store
                .take_rate_token(msg.0, now, interval_ms, burst)
                .await?
            {
                0 => Ok(()),
                wait_ms => Err(ActorError::RateLimited(wait_ms.div_ceil(1000).max(1))),
            }
        })
    }
}

impl Handler<EndLoginAttempt> for SessionActor {
    type Result = ResponseActFuture<Self, Result<u64, ActorError>>;

    fn handle(&mut self, msg: EndLoginAttempt, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let store = self.store.clone();
        let window = self.settings.login_failure_window.as_secs();
        timed("session", timer, async move {
            let a = msg.attempt;
            store
                .end_attempt(a.email, a.source, a.id, msg.outcome, window)
                .await
        })
    }
}

impl Handler<SweepIdleSessions> for SessionActor {
    type Result = ResponseActFuture<Self, Result<usize, ActorError>>;

    fn handle(&mut self, _: SweepIdleSessions, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let store = self.store.clone();
        let s = Arc::clone(&self.settings);
        let db = self.db.clone();
        timed("session", timer, async move {
            let result = async {
                let now = Utc::now().timestamp_millis();
                let idle_ms = s.idle_timeout.as_millis() as i64;
                let lifetime = s.max_lifetime.as_secs();
                let mut ended = 0;
                for (uid, sid) in store.idle_candidates(now - idle_ms, 500).await? {
                    let expired = store
                        .expire_if_idle(uid, sid.clone(), now, idle_ms, lifetime)
                        .await?;
                    if expired {
                        ended += 1;
                        let entry = AuditEntry::session_expired(uid, &sid, s.idle_timeout);
                        db.call(WriteAudit(entry)).await?;
                    }
                }
                store.housekeeping(now).await?;
                if ended > 0 {
                    tracing::info!(ended, "idle sessions expired");
                }
                Ok(ended)
            }
            .await;
            if let Err(e) = &result {
                tracing::warn!(
                    error = %crate::error::chain(e),
                    "session sweep failed; next interval retries"
                );
            }
            result
        })
    }
}

#[cfg(feature = "fault-injection")]
crate::inject_panic_handler!(SessionActor, "session");
