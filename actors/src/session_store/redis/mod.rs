//! Session and token state in Redis: one Lua script per multi-key change (see [`scripts`]),
//! so every instance sharing the Redis agrees at once.
pub mod conn;
mod scripts;

use redis::{AsyncCommands, Value};

use self::conn::RedisConnection;
use super::keys::Keys;
use super::{
    AccessCheck, AccessRequest, Admission, AttemptEnd, AttemptRequest, EndAllRequest, EndRequest,
    IdleCheck, OpenRequest, Opening, RateRequest, RotateRequest, Rotation, SessionInfo,
    SessionRules,
};
use crate::domain::{EmailKey, EndReason, SessionId, UserId};
use crate::ActorError;

#[derive(Clone)]
pub struct RedisSessions {
    conn: RedisConnection,
    keys: Keys,
    rules: SessionRules,
    ends_wait_for: Option<ReplicaWait>,
}

/// How many replicas must have an end of sessions (a logout, a revocation, the ends of a
/// password change, of devices) before it is answered, and for how long to wait for them.
/// Redis replicates asynchronously: a primary lost right after a write takes with it what its
/// replica had not received, and the promoted replica would accept an ended session again.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaWait {
    pub replicas: u32,
    pub timeout: std::time::Duration,
}

/// Reads a script's `{status, arg?}` reply.
fn script_reply(value: Value) -> Result<(String, Option<String>), ActorError> {
    let mut it = script_parts(value)?.into_iter();
    let status = it.next().unwrap_or_default();
    Ok((status, it.next()))
}

fn script_parts(value: Value) -> Result<Vec<String>, ActorError> {
    redis::from_redis_value(value).map_err(|e| ActorError::internal("unexpected script reply", e))
}

/// A credential version as a script returns it (a session from before versions existed: 0).
fn version(raw: Option<&String>) -> i64 {
    raw.and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn reason(raw: Option<String>) -> EndReason {
    raw.as_deref()
        .and_then(EndReason::parse)
        .unwrap_or(EndReason::Expired)
}

impl RedisSessions {
    pub fn new(conn: RedisConnection, keys: Keys) -> Self {
        Self {
            conn,
            keys,
            rules: SessionRules::default(),
            ends_wait_for: None,
        }
    }

    /// Sessions are opened, checked, rotated and ended under `rules`.
    pub fn with_rules(mut self, rules: SessionRules) -> Self {
        self.rules = rules;
        self
    }

    /// Ends of sessions are answered once `wait` replicas have them (or its timeout passed).
    pub fn with_replica_wait(mut self, wait: Option<ReplicaWait>) -> Self {
        self.ends_wait_for = wait.filter(|w| w.replicas > 0);
        self
    }

    /// The same store on a connection of the calling thread's own.
    pub fn for_this_thread(&self) -> Result<Self, String> {
        Ok(Self {
            conn: self.conn.for_this_thread()?,
            keys: self.keys.clone(),
            rules: self.rules,
            ends_wait_for: self.ends_wait_for,
        })
    }

    /// After an end of sessions written through `key`'s connection: waits for the replicas
    /// [`ReplicaWait`] asks for. Fewer in time is logged and counted, not refused: the end holds
    /// on the primary, and only a failover within the replication lag would lose it.
    async fn replicated(&self, key: &str) -> Result<(), ActorError> {
        let Some(wait) = self.ends_wait_for else {
            return Ok(());
        };
        let acknowledged = self
            .conn
            .wait_for_replicas(key, wait.replicas, wait.timeout)
            .await
            .map_err(ActorError::redis)?;
        if acknowledged < i64::from(wait.replicas) {
            metrics::counter!("csum_redis_unreplicated_ends_total").increment(1);
            tracing::warn!(
                acknowledged,
                wanted = wait.replicas,
                timeout_ms = wait.timeout.as_millis() as u64,
                "an end of sessions was not acknowledged by enough Redis replicas in time"
            );
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), ActorError> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn.clone())
            .await
            .map(|_| ())
            .map_err(ActorError::redis)
    }

    pub async fn open_session(&self, req: OpenRequest) -> Result<Opening, ActorError> {
        let (keys, rules) = (&self.keys, &self.rules);
        let reply: Vec<String> = scripts::OPEN_SESSION
            .key(keys.user_sessions(&req.uid))
            .key(keys.activity(&req.uid))
            .key(keys.session(&req.uid, &req.sid))
            .key(keys.credential(&req.uid))
            .arg(req.sid.as_str())
            .arg(req.uid.to_hex())
            .arg(req.role.as_str())
            .arg(req.now_ms)
            .arg(rules.max())
            .arg(rules.policy.as_str())
            .arg(rules.lifetime_s())
            .arg(keys.session_prefix(&req.uid))
            .arg(keys.ended_prefix(&req.uid))
            .arg(rules.lifetime_s())
            .arg(rules.idle_ms())
            .arg(&req.access_jti)
            .arg(&req.refresh_jti)
            .arg(req.credential_version)
            .arg(&req.ip)
            .arg(&req.user_agent)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(ActorError::redis)?;
        let mut reply = reply.into_iter();
        match reply.next().as_deref() {
            Some("ok") => {}
            Some("stale") => return Ok(Opening::Stale),
            _ => return Ok(Opening::Rejected),
        }
        let (mut evicted, mut expired) = (Vec::new(), Vec::new());
        for item in reply {
            match item.split_once(':') {
                Some(("e", sid)) => evicted.extend(SessionId::parse(sid).ok()),
                Some(("x", sid)) => expired.extend(SessionId::parse(sid).ok()),
                _ => {}
            }
        }
        Ok(Opening::Opened { evicted, expired })
    }

    pub async fn check_access(&self, req: AccessRequest) -> Result<AccessCheck, ActorError> {
        let (keys, uid, sid) = (&self.keys, &req.uid, &req.sid);
        let reply: Value = scripts::CHECK_ACCESS
            .key(keys.session(uid, sid))
            .key(keys.ended(uid, sid))
            .key(keys.activity(uid))
            .key(keys.credential(uid))
            .arg(sid.as_str())
            .arg(uid.to_hex())
            .arg(&req.jti)
            .arg(req.now_ms)
            .arg(self.rules.idle_ms())
            .arg(req.kind.field())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(ActorError::redis)?;
        Ok(match script_reply(reply)? {
            (s, cv) if s == "ok" => AccessCheck::Live {
                credential_version: version(cv.as_ref()),
            },
            (s, why) if s == "ended" => AccessCheck::Ended(reason(why)),
            (s, _) if s == "superseded" => AccessCheck::Superseded,
            _ => AccessCheck::Invalid,
        })
    }

    pub async fn rotate(&self, req: RotateRequest) -> Result<Rotation, ActorError> {
        let (keys, rules) = (&self.keys, &self.rules);
        let reply: Value = scripts::ROTATE_REFRESH
            .key(keys.session(&req.uid, &req.sid))
            .key(keys.ended(&req.uid, &req.sid))
            .key(keys.activity(&req.uid))
            .key(keys.user_sessions(&req.uid))
            .key(keys.credential(&req.uid))
            .arg(req.sid.as_str())
            .arg(req.uid.to_hex())
            .arg(&req.presented_jti)
            .arg(&req.access_jti)
            .arg(&req.refresh_jti)
            .arg(req.now_ms)
            .arg(rules.idle_ms())
            .arg(rules.grace_ms())
            .arg(&req.successor)
            .arg(rules.lifetime_s())
            .arg(rules.lifetime_s())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(ActorError::redis)?;
        let parts = script_parts(reply)?;
        Ok(match parts.first().map(String::as_str) {
            Some("ok") => Rotation::Rotated {
                credential_version: version(parts.get(1)),
            },
            Some("grace") if parts.len() >= 2 => Rotation::Grace {
                pair: parts[1].clone(),
                credential_version: version(parts.get(2)),
            },
            Some("reuse") => Rotation::Reuse,
            Some("ended") => Rotation::Ended(reason(parts.get(1).cloned())),
            _ => Rotation::Invalid,
        })
    }

    pub async fn end_session(&self, req: EndRequest) -> Result<bool, ActorError> {
        let (keys, uid, sid) = (&self.keys, &req.uid, &req.sid);
        let ended = scripts::END_SESSION
            .key(keys.session(uid, sid))
            .key(keys.ended(uid, sid))
            .key(keys.activity(uid))
            .key(keys.user_sessions(uid))
            .arg(sid.as_str())
            .arg(req.reason.as_str())
            .arg(self.rules.lifetime_s())
            .arg(uid.to_hex())
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .map(|n| n == 1)
            .map_err(ActorError::redis)?;
        self.replicated(&keys.user_sessions(uid)).await?;
        Ok(ended)
    }

    pub async fn list_sessions(
        &self,
        uid: UserId,
        now_ms: i64,
    ) -> Result<Vec<SessionInfo>, ActorError> {
        let keys = &self.keys;
        let flat: Vec<String> = scripts::LIST_SESSIONS
            .key(keys.user_sessions(&uid))
            .key(keys.credential(&uid))
            .arg(keys.session_prefix(&uid))
            .arg(now_ms)
            .arg(self.rules.idle_ms())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(ActorError::redis)?;
        Ok(flat
            .chunks_exact(5)
            .map(|f| SessionInfo {
                sid: f[0].clone(),
                created_ms: f[1].parse().unwrap_or(0),
                seen_ms: f[2].parse().unwrap_or(0),
                ip: f[3].clone(),
                user_agent: f[4].clone(),
            })
            .collect())
    }

    pub async fn end_user_sessions(&self, req: EndAllRequest) -> Result<Vec<String>, ActorError> {
        let (keys, uid) = (&self.keys, &req.uid);
        let keep = req.keep.as_ref().map_or("", |s| s.as_str());
        let version = req
            .credential_version
            .map_or(String::new(), |v| v.to_string());
        let ended = scripts::END_USER_SESSIONS
            .key(keys.user_sessions(uid))
            .key(keys.activity(uid))
            .key(keys.credential(uid))
            .arg(req.reason.as_str())
            .arg(self.rules.lifetime_s())
            .arg(keys.session_prefix(uid))
            .arg(keys.ended_prefix(uid))
            .arg(keep)
            .arg(version)
            .invoke_async::<Vec<String>>(&mut self.conn.clone())
            .await
            .map_err(ActorError::redis)?;
        self.replicated(&keys.user_sessions(uid)).await?;
        Ok(ended)
    }

    /// Sessions idle since `cutoff_ms`, from the users' activity indexes that `SCAN` finds on
    /// every primary; at most about `limit`.
    pub async fn idle_candidates(
        &self,
        cutoff_ms: i64,
        limit: usize,
    ) -> Result<Vec<(UserId, SessionId)>, ActorError> {
        let indexes = self
            .conn
            .scan_keys(&self.keys.activity_pattern(), limit)
            .await
            .map_err(ActorError::redis)?;
        let mut conn = self.conn.clone();
        let mut found = Vec::new();
        for key in indexes {
            let Some(uid) = self.keys.activity_owner(&key) else {
                continue;
            };
            let room = isize::try_from(limit.saturating_sub(found.len())).unwrap_or(isize::MAX);
            if room == 0 {
                break;
            }
            let stale: Vec<String> = conn
                .zrangebyscore_limit(&key, "-inf", cutoff_ms, 0, room)
                .await
                .map_err(ActorError::redis)?;
            for raw in stale {
                match SessionId::parse(&raw) {
                    Ok(sid) => found.push((uid, sid)),
                    // Not a session id: it cannot be ended; forget it.
                    Err(_) => {
                        let _: Result<(), _> = conn.zrem(&key, raw).await;
                    }
                }
            }
        }
        Ok(found)
    }

    pub async fn expire_if_idle(&self, req: IdleCheck) -> Result<bool, ActorError> {
        let (keys, uid, sid) = (&self.keys, &req.uid, &req.sid);
        scripts::EXPIRE_IF_IDLE
            .key(keys.session(uid, sid))
            .key(keys.ended(uid, sid))
            .key(keys.activity(uid))
            .key(keys.user_sessions(uid))
            .arg(sid.as_str())
            .arg(req.now_ms)
            .arg(req.idle_ms)
            .arg(req.ended_ttl_s.max(1))
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .map(|n| n == 1)
            .map_err(ActorError::redis)
    }

    pub async fn begin_attempt(&self, req: AttemptRequest) -> Result<Admission, ActorError> {
        let keys = &self.keys;
        let reply: Value = scripts::BEGIN_LOGIN_ATTEMPT
            .key(keys.login_failures_from(&req.email, &req.source))
            .key(keys.login_failures(&req.email, &req.source))
            .key(keys.login_pending_from(&req.email, &req.source))
            .key(keys.login_pending(&req.email, &req.source))
            .arg(&req.attempt)
            .arg(req.now_ms)
            .arg(req.max_per_address)
            .arg(req.max_per_account)
            .arg(req.stale_ms.max(1))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(ActorError::redis)?;
        Ok(match script_reply(reply)? {
            (s, _) if s == "ok" => Admission::Admitted,
            (s, _) if s == "wait" => Admission::Wait,
            (_, seconds) => {
                Admission::Locked(seconds.and_then(|s| s.parse().ok()).unwrap_or(1).max(1))
            }
        })
    }

    pub async fn end_attempt(&self, req: AttemptEnd) -> Result<u64, ActorError> {
        let (keys, email, source) = (&self.keys, &req.email, &req.source);
        scripts::END_LOGIN_ATTEMPT
            .key(keys.login_failures_from(email, source))
            .key(keys.login_failures(email, source))
            .key(keys.login_pending_from(email, source))
            .key(keys.login_pending(email, source))
            .key(keys.login_counters(email))
            .arg(&req.attempt)
            .arg(req.outcome.as_str())
            .arg(req.window_s.max(1))
            .invoke_async::<u64>(&mut self.conn.clone())
            .await
            .map_err(ActorError::redis)
    }

    /// Deletes every failure counter of `email` (an administrator lifts its lockout); replies
    /// with how many there were.
    pub async fn lift_lockout(&self, email: EmailKey) -> Result<u64, ActorError> {
        let keys = &self.keys;
        // The unknown clients' counter is the one named by the prefix alone.
        let pool = keys.login_failures_prefix(&email);
        let lifted = scripts::LIFT_LOCKOUT
            .key(keys.login_counters(&email))
            .key(&pool)
            .invoke_async::<u64>(&mut self.conn.clone())
            .await
            .map_err(ActorError::redis)?;
        self.replicated(&pool).await?;
        Ok(lifted)
    }

    /// One request against `ip`'s rate limit: 0 when allowed, else the milliseconds to wait.
    pub async fn take_rate_token(&self, req: RateRequest) -> Result<u64, ActorError> {
        scripts::TAKE_RATE_TOKEN
            .key(self.keys.rate(&req.ip))
            .arg(req.now_ms)
            .arg(req.interval_ms)
            .arg(req.burst.max(1))
            .invoke_async::<u64>(&mut self.conn.clone())
            .await
            .map_err(ActorError::redis)
    }

    /// Ends every device token of `uid` issued until now: one `SET`, kept as long as a device
    /// token lives (after that, no token it ends is left).
    pub async fn end_devices(&self, uid: UserId, now_ms: i64) -> Result<(), ActorError> {
        let key = self.keys.devices_ended(&uid);
        redis::cmd("SET")
            .arg(&key)
            .arg(now_ms)
            .arg("EX")
            .arg(self.rules.devices_ended_s())
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(ActorError::redis)?;
        self.replicated(&key).await
    }

    /// When `uid`'s device tokens were last ended, if within their lifetime.
    pub async fn devices_ended_at(
        &self,
        uid: UserId,
        _now_ms: i64,
    ) -> Result<Option<i64>, ActorError> {
        redis::cmd("GET")
            .arg(self.keys.devices_ended(&uid))
            .query_async::<Option<i64>>(&mut self.conn.clone())
            .await
            .map_err(ActorError::redis)
    }

    /// Redis expires keys by itself.
    pub async fn housekeeping(&self, _now_ms: i64) -> Result<(), ActorError> {
        Ok(())
    }
}
