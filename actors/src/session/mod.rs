//! The SessionActor: each user's live sessions in Redis, the concurrent-session limit, the
//! periodic idle sweep, and the failed-login lockout counters.
//!
//! All state is in Redis and every change is one Lua script, so limits and lockouts hold across
//! service instances; the sweep may run on every instance at once, and each expired session is
//! ended (and audited) exactly once.
pub mod messages;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use crate::db_queue::{DbQueue, WriteAudit};
use crate::domain::{AuditEntry, SessionId};
use crate::mailbox::{guarded, ActorStats};
use crate::redis_keys::Keys;
use crate::scripts;
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
    redis: ConnectionManager,
    keys: Keys,
    db: DbQueue,
    stats: Arc<ActorStats>,
}

impl SessionActor {
    pub fn new(
        settings: SessionSettings,
        redis: ConnectionManager,
        keys: Keys,
        db: DbQueue,
        stats: Arc<ActorStats>,
    ) -> Self {
        Self {
            settings: Arc::new(settings),
            redis,
            keys,
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
        let mut redis = self.redis.clone();
        let keys = self.keys.clone();
        let s = Arc::clone(&self.settings);
        let db = self.db.clone();
        guarded("session", async move {
            let result = async {
                let sid = msg.session_id.clone();
                let lifetime = s.max_lifetime.as_secs().max(1);
                let reply: Vec<String> = scripts::OPEN_SESSION
                    .key(keys.user_sessions(&msg.user_id))
                    .key(keys.activity())
                    .key(keys.session(&sid))
                    .arg(sid.as_str())
                    .arg(msg.user_id.to_hex())
                    .arg(msg.role.as_str())
                    .arg(Utc::now().timestamp_millis())
                    .arg(s.max_concurrent.max(1))
                    .arg(s.policy.as_str())
                    .arg(lifetime)
                    .arg(keys.session_prefix())
                    .arg(keys.ended_prefix())
                    .arg(lifetime)
                    .arg(s.idle_timeout.as_millis() as i64)
                    .arg(&msg.access_jti)
                    .arg(&msg.refresh_jti)
                    .invoke_async(&mut redis)
                    .await
                    .map_err(ActorError::redis)?;
                let mut reply = reply.into_iter();
                if reply.next().as_deref() != Some("ok") {
                    return Err(ActorError::SessionLimit);
                }
                let (mut evicted, mut expired) = (Vec::new(), Vec::new());
                for item in reply {
                    match item.split_once(':') {
                        Some(("e", sid)) => evicted.extend(SessionId::parse(sid).ok()),
                        Some(("x", sid)) => expired.extend(SessionId::parse(sid).ok()),
                        _ => {}
                    }
                }
                for sid in &expired {
                    db.call(WriteAudit(expired_entry(msg.user_id, sid, &s)))
                        .await?;
                }
                for victim in &evicted {
                    let entry = AuditEntry::new("session.evicted", "success")
                        .user(msg.user_id)
                        .actor(msg.user_id)
                        .email(&msg.email)
                        .ip(msg.ip.clone())
                        .detail("session_id", victim.as_str())
                        .detail("by_session_id", sid.as_str())
                        .detail("policy", s.policy.as_str());
                    db.call(WriteAudit(entry)).await?;
                }
                Ok(OpenedSession {
                    session_id: sid,
                    evicted,
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
        let mut redis = self.redis.clone();
        let key = self.keys.login_failures(&msg.0);
        let max = u64::from(self.settings.login_max_failures);
        let window = self.settings.login_failure_window.as_secs();
        guarded("session", async move {
            let result = async {
                let (count, ttl): (Option<u64>, i64) = redis::pipe()
                    .get(&key)
                    .ttl(&key)
                    .query_async(&mut redis)
                    .await
                    .map_err(ActorError::redis)?;
                let count = count.unwrap_or(0);
                if max > 0 && count >= max {
                    let retry = if ttl > 0 { ttl as u64 } else { window };
                    return Err(ActorError::LockedOut(retry.max(1)));
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
        let mut redis = self.redis.clone();
        let key = self.keys.login_failures(&msg.0);
        let window = self.settings.login_failure_window.as_secs().max(1);
        guarded("session", async move {
            let result = scripts::COUNT_FAILURE
                .key(key)
                .arg(window)
                .invoke_async::<u64>(&mut redis)
                .await
                .map_err(ActorError::redis);
            timer.finish(&result);
            result
        })
    }
}

impl Handler<ClearLoginFailures> for SessionActor {
    type Result = ResponseActFuture<Self, Result<(), ActorError>>;

    fn handle(&mut self, msg: ClearLoginFailures, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let mut redis = self.redis.clone();
        let key = self.keys.login_failures(&msg.0);
        guarded("session", async move {
            let result = redis.del::<_, ()>(key).await.map_err(ActorError::redis);
            timer.finish(&result);
            result
        })
    }
}

impl Handler<SweepIdleSessions> for SessionActor {
    type Result = ResponseActFuture<Self, Result<usize, ActorError>>;

    fn handle(&mut self, _: SweepIdleSessions, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let mut redis = self.redis.clone();
        let keys = self.keys.clone();
        let s = Arc::clone(&self.settings);
        let db = self.db.clone();
        guarded("session", async move {
            let result = async {
                let now = Utc::now().timestamp_millis();
                let idle_ms = s.idle_timeout.as_millis() as i64;
                let stale: Vec<String> = redis
                    .zrangebyscore_limit(keys.activity(), "-inf", now - idle_ms, 0, 500)
                    .await
                    .map_err(ActorError::redis)?;
                let mut ended = 0;
                for raw in stale {
                    let Ok(sid) = SessionId::parse(&raw) else {
                        let _: Result<(), _> = redis.zrem(keys.activity(), &raw).await;
                        continue;
                    };
                    let uid: Option<String> = scripts::EXPIRE_IF_IDLE
                        .key(keys.session(&sid))
                        .key(keys.ended(&sid))
                        .key(keys.activity())
                        .arg(sid.as_str())
                        .arg(now)
                        .arg(idle_ms)
                        .arg(s.max_lifetime.as_secs().max(1))
                        .arg(keys.user_sessions_prefix())
                        .invoke_async(&mut redis)
                        .await
                        .map_err(ActorError::redis)?;
                    if let Some(uid) = uid {
                        ended += 1;
                        db.call(WriteAudit(expired_entry(uid, &sid, &s))).await?;
                    }
                }
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
