//! The SessionActor: each user's live sessions, the concurrent-session limit, the periodic idle
//! sweep, and the failed-login lockout counters.
//!
//! All state is in the [`SessionStore`] (Redis, or the embedded file) and every change is one
//! atomic operation there, so limits and lockouts hold across service instances sharing it; the
//! sweep may run on every instance at once, and each expired session is ended (and audited)
//! exactly once.
pub mod messages;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;

use crate::db_queue::{DbQueue, WriteAudit};
use crate::domain::{AuditEntry, SessionId};
use crate::mailbox::{guarded, ActorStats};
use crate::session_store::{OpenRequest, Opening, SessionStore};
use crate::ActorError;
pub use messages::*;

/// What to do when a user already has `max_concurrent` live sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitPolicy {
    EvictOldest,
    Reject,
}

impl LimitPolicy {
    pub fn as_str(&self) -> &'static str {
        match self {
            LimitPolicy::EvictOldest => "evict_oldest",
            LimitPolicy::Reject => "reject",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub max_concurrent: u32,
    pub policy: LimitPolicy,
    pub idle_timeout: Duration,
    pub check_interval: Duration,
    /// How long a session's record may live at most: the refresh token's lifetime.
    pub max_lifetime: Duration,
    pub login_max_failures: u32,
    pub login_failure_window: Duration,
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

/// The audit entry of a session ended for idleness.
fn expired_entry(user_id: impl ToString, sid: &SessionId, s: &SessionSettings) -> AuditEntry {
    AuditEntry::new("session.expired", "success")
        .user(user_id)
        .detail("session_id", sid.as_str())
        .detail("idle_timeout_s", s.idle_timeout.as_secs() as i64)
}

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

impl Handler<OpenSession> for SessionActor {
    type Result = ResponseActFuture<Self, Result<OpenedSession, ActorError>>;

    fn handle(&mut self, msg: OpenSession, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let store = self.store.clone();
        let s = Arc::clone(&self.settings);
        guarded("session", async move {
            let result = async {
                let sid = msg.session_id.clone();
                let opening = store
                    .open_session(OpenRequest {
                        sid: sid.clone(),
                        uid: msg.user_id,
                        role: msg.role,
                        now_ms: Utc::now().timestamp_millis(),
                        max: s.max_concurrent,
                        policy: s.policy,
                        lifetime_s: s.max_lifetime.as_secs(),
                        idle_ms: s.idle_timeout.as_millis() as i64,
                        access_jti: msg.access_jti.clone(),
                        refresh_jti: msg.refresh_jti.clone(),
                    })
                    .await?;
                let Opening::Opened { evicted, expired } = opening else {
                    return Err(ActorError::SessionLimit);
                };
                let mut audit: Vec<AuditEntry> = expired
                    .iter()
                    .map(|gone| expired_entry(msg.user_id, gone, &s))
                    .collect();
                audit.extend(evicted.iter().map(|victim| {
                    AuditEntry::new("session.evicted", "success")
                        .user(msg.user_id)
                        .actor(msg.user_id)
                        .email(&msg.email)
                        .ip(msg.ip.clone())
                        .detail("session_id", victim.as_str())
                        .detail("by_session_id", sid.as_str())
                        .detail("policy", s.policy.as_str())
                }));
                Ok(OpenedSession {
                    session_id: sid,
                    evicted,
                    audit,
                })
            }
            .await;
            timer.finish(&result);
            result
        })
    }
}

impl Handler<CheckLoginAllowed> for SessionActor {
    type Result = ResponseActFuture<Self, Result<u64, ActorError>>;

    fn handle(&mut self, msg: CheckLoginAllowed, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let store = self.store.clone();
        let max = u64::from(self.settings.login_max_failures);
        let window = self.settings.login_failure_window.as_secs();
        guarded("session", async move {
            let result = async {
                let (count, ttl) = store.failures(msg.0).await?;
                if max > 0 && count >= max {
                    return Err(ActorError::LockedOut(ttl.unwrap_or(window).max(1)));
                }
                Ok(count)
            }
            .await;
            timer.finish(&result);
            result
        })
    }
}

impl Handler<RecordLoginFailure> for SessionActor {
    type Result = ResponseActFuture<Self, Result<u64, ActorError>>;

    fn handle(&mut self, msg: RecordLoginFailure, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let store = self.store.clone();
        let window = self.settings.login_failure_window.as_secs();
        guarded("session", async move {
            let result = store.count_failure(msg.0, window).await;
            timer.finish(&result);
            result
        })
    }
}

impl Handler<ClearLoginFailures> for SessionActor {
    type Result = ResponseActFuture<Self, Result<(), ActorError>>;

    fn handle(&mut self, msg: ClearLoginFailures, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let store = self.store.clone();
        guarded("session", async move {
            let result = store.clear_failures(msg.0).await;
            timer.finish(&result);
            result
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
        guarded("session", async move {
            let result = async {
                let now = Utc::now().timestamp_millis();
                let idle_ms = s.idle_timeout.as_millis() as i64;
                let lifetime = s.max_lifetime.as_secs();
                let mut ended = 0;
                for raw in store.idle_candidates(now - idle_ms, 500).await? {
                    let Ok(sid) = SessionId::parse(&raw) else {
                        continue;
                    };
                    let expired = store
                        .expire_if_idle(sid.clone(), now, idle_ms, lifetime)
                        .await?;
                    if let Some(uid) = expired {
                        ended += 1;
                        db.call(WriteAudit(expired_entry(uid, &sid, &s))).await?;
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
                tracing::warn!(error = %e, "session sweep failed; next interval retries");
            }
            timer.finish(&result);
            result
        })
    }
}

#[cfg(feature = "fault-injection")]
crate::inject_panic_handler!(SessionActor, "session");
