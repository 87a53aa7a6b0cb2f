//! Where session and token state lives: Redis (shared by every instance) or the embedded SQLite
//! file in the data directory. The TokenActor and the SessionActor hold a [`SessionStore`] and
//! call the same operations whichever backend is behind it; each operation is atomic on both
//! (one Lua script on Redis, one transaction on SQLite).
pub mod keys;
mod redis;
mod sqlite;

pub use self::redis::conn as redis_conn;
pub use self::redis::{RedisSessions, ReplicaWait};
pub use self::sqlite::SqliteSessions;
use std::time::Duration;

use crate::domain::{AttemptSource, ClientIp, EmailKey, EndReason, Role, SessionId, UserId};
use crate::ActorError;

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

/// The per-process rules of sessions, from configuration: given once, when the store is built
/// ([`SessionStore::with_rules`]), and applied by every operation that opens, checks, rotates or
/// ends a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRules {
    /// `MAX_CONCURRENT_SESSIONS`: live sessions per user (at least 1).
    pub max_concurrent: u32,
    /// `LIMIT_POLICY`: what happens to a login beyond that limit.
    pub policy: LimitPolicy,
    /// `JWT_REFRESH_TOKEN_EXPIRES`: how long a session may live at most (its refresh token's
    /// lifetime); why a session ended is kept as long.
    pub lifetime: Duration,
    /// `SESSION_TIMEOUT`: idle time after which a session is over.
    pub idle_timeout: Duration,
    /// `REFRESH_REUSE_GRACE`: how long a just-rotated refresh token still yields its successor
    /// (zero: never).
    pub reuse_grace: Duration,
    /// `DEVICE_TOKEN_TTL`: how long a device token lives. That a user's device tokens were
    /// ended is kept a day longer: a token re-issued by a login that was running when the
    /// devices ended expires before the record of the end does.
    pub device_ttl: Duration,
}

/// `DEVICE_TOKEN_TTL`'s default: 180 days.
const DEFAULT_DEVICE_TTL_S: u64 = 15_552_000;

impl Default for SessionRules {
    /// The defaults of `config/default.toml`.
    fn default() -> Self {
        Self {
            max_concurrent: 1,
            policy: LimitPolicy::EvictOldest,
            lifetime: Duration::from_secs(604_800),
            idle_timeout: Duration::from_secs(3_600),
            reuse_grace: Duration::ZERO,
            device_ttl: Duration::from_secs(DEFAULT_DEVICE_TTL_S),
        }
    }
}

impl SessionRules {
    fn max(&self) -> u32 {
        self.max_concurrent.max(1)
    }

    /// The lifetime in whole seconds (at least 1), as Redis expiries take it.
    fn lifetime_s(&self) -> u64 {
        self.lifetime.as_secs().max(1)
    }

    fn idle_ms(&self) -> i64 {
        millis(self.idle_timeout)
    }

    fn grace_ms(&self) -> i64 {
        millis(self.reuse_grace)
    }

    /// How long the record of a user's devices ended is kept, seconds.
    fn devices_ended_s(&self) -> u64 {
        self.device_ttl.as_secs().saturating_add(86_400)
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A session to open under the per-user limit ([`SessionRules`]).
#[derive(Debug, Clone)]
pub struct OpenRequest {
    pub sid: SessionId,
    pub uid: UserId,
    pub role: Role,
    pub now_ms: i64,
    pub access_jti: String,
    pub refresh_jti: String,
    /// The user's credential version when their password was verified. A session is not
    /// opened under a version older than the user's current one (the password changed while
    /// the login was checking the old one).
    pub credential_version: i64,
    /// Where the login came from and what it said it was, for the user's list of sessions.
    pub ip: String,
    pub user_agent: String,
}

/// One live session, as its user sees it in their list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub sid: String,
    pub created_ms: i64,
    pub seen_ms: i64,
    pub ip: String,
    pub user_agent: String,
}

/// What opening a session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// The limit is reached under the `reject` policy.
    Rejected,
    /// The password changed after this login verified it: nothing opened.
    Stale,
    /// Opened; `evicted` were ended by the limit, `expired` had been idle past the timeout.
    Opened {
        evicted: Vec<SessionId>,
        expired: Vec<SessionId>,
    },
}

/// Which of a session's two current tokens a check is of: its access token (every request) or
/// its refresh token (introspection; a rotation checks and moves it in one step of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    /// The session's field holding the current `jti` of this kind.
    pub fn field(self) -> &'static str {
        match self {
            TokenKind::Access => "ajti",
            TokenKind::Refresh => "rjti",
        }
    }
}

/// Whether a token's session accepts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessCheck {
    /// Live, opened (or last moved) under this credential version of its user.
    Live {
        credential_version: i64,
    },
    Ended(EndReason),
    /// An older token of a session that has since rotated.
    Superseded,
    /// The token names a session of another user.
    Invalid,
}

/// A token presented to its session: is it the session's current one of its kind?
#[derive(Debug, Clone)]
pub struct AccessRequest {
    pub sid: SessionId,
    pub uid: UserId,
    pub kind: TokenKind,
    pub jti: String,
    pub now_ms: i64,
}

/// A refresh token presented for rotation.
#[derive(Debug, Clone)]
pub struct RotateRequest {
    pub sid: SessionId,
    pub uid: UserId,
    pub presented_jti: String,
    pub access_jti: String,
    pub refresh_jti: String,
    pub now_ms: i64,
    /// The new pair, as JSON, kept for the grace window.
    pub successor: String,
}

/// One session of a user to end (a session of another user is left alone).
#[derive(Debug, Clone)]
pub struct EndRequest {
    pub uid: UserId,
    pub sid: SessionId,
    pub reason: EndReason,
}

/// Every session of a user to end, but `keep`. With a credential version (a password change),
/// the user's version is first raised to it, so no login that verified the old password can
/// open a session afterwards, and the kept session moves to it.
#[derive(Debug, Clone)]
pub struct EndAllRequest {
    pub uid: UserId,
    pub reason: EndReason,
    pub keep: Option<SessionId>,
    pub credential_version: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    Rotated {
        credential_version: i64,
    },
    /// Presented again within the grace window: the pair it already yielded.
    Grace {
        pair: String,
        credential_version: i64,
    },
    /// A rotated refresh token came back: the session has just been ended.
    Reuse,
    Ended(EndReason),
    Invalid,
}

/// A login attempt asking to have its password checked.
#[derive(Debug, Clone)]
pub struct AttemptRequest {
    /// The email's key (SPEC 10): one budget for every spelling of the address.
    pub email: EmailKey,
    pub source: AttemptSource,
    /// Unique per attempt; it holds a slot until it ends.
    pub attempt: String,
    pub now_ms: i64,
    /// Failures allowed per (email, address) and per email; 0 = no limit.
    pub max_per_address: u32,
    pub max_per_account: u32,
    /// An attempt that never ended (its process died) stops holding a slot after this long.
    pub stale_ms: i64,
}

/// The lockout's answer to an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted as pending: check the password, then end the attempt.
    Admitted,
    /// Not counted: every slot is held by attempts still being checked; ask again shortly.
    Wait,
    /// Not counted: a counter is at its limit; retry after this many seconds.
    Locked(u64),
}

/// How an admitted attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Wrong password or unknown email: counted as a failure on both counters.
    Failed,
    /// The right password: the attempt takes its slot back and the address's count is reset.
    Succeeded,
    /// Never decided (a dependency failed): the slot is given back, nothing counted.
    Abandoned,
}

impl AttemptOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Abandoned => "abandoned",
        }
    }
}

/// An admitted login attempt that has ended (see [`SessionStore::end_attempt`]).
#[derive(Debug, Clone)]
pub struct AttemptEnd {
    pub email: EmailKey,
    pub source: AttemptSource,
    pub attempt: String,
    pub outcome: AttemptOutcome,
    /// How long a failure counts, seconds (the window starts at the first failure).
    pub window_s: u64,
}

/// A session the idle sweep found, to end if it is idle still (see
/// [`SessionStore::expire_if_idle`]).
#[derive(Debug, Clone)]
pub struct IdleCheck {
    pub uid: UserId,
    pub sid: SessionId,
    pub now_ms: i64,
    pub idle_ms: i64,
    pub ended_ttl_s: u64,
}

/// One request against an address's rate limit (GCRA: a bucket of `burst` refilled at one per
/// `interval_ms`).
#[derive(Debug, Clone)]
pub struct RateRequest {
    pub ip: ClientIp,
    pub now_ms: i64,
    pub interval_ms: f64,
    pub burst: u32,
}

/// Token and session state, on Redis or embedded.
#[derive(Clone)]
pub enum SessionStore {
    Redis(RedisSessions),
    Embedded(SqliteSessions),
}

/// Forwards one operation to whichever store is configured; `as R` gathers its arguments into
/// the request `R` the stores take.
macro_rules! forward {
    (@call $s:ident.$name:ident($($arg:ident),*)) => {
        $s.$name($($arg),*).await
    };
    (@call $s:ident.$name:ident($($arg:ident),*) $req:ident) => {
        $s.$name($req { $($arg),* }).await
    };
    ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $(as $req:ident)?;)*) => {
        impl SessionStore {
            $(pub async fn $name(&self, $($arg: $ty),*) -> Result<$ret, ActorError> {
                match self {
                    SessionStore::Redis(s) => forward!(@call s.$name($($arg),*) $($req)?),
                    SessionStore::Embedded(s) => forward!(@call s.$name($($arg),*) $($req)?),
                }
            })*
        }
    };
}

forward! {
    fn ping() -> ();
    fn open_session(req: OpenRequest) -> Opening;
    fn check_access(req: AccessRequest) -> AccessCheck;
    fn rotate(req: RotateRequest) -> Rotation;
    fn end_session(req: EndRequest) -> bool;
    fn list_sessions(uid: UserId, now_ms: i64) -> Vec<SessionInfo>;
    fn end_user_sessions(req: EndAllRequest) -> Vec<String>;
    fn idle_candidates(cutoff_ms: i64, limit: usize) -> Vec<(UserId, SessionId)>;
    fn expire_if_idle(uid: UserId, sid: SessionId, now_ms: i64, idle_ms: i64, ended_ttl_s: u64)
        -> bool as IdleCheck;
    fn begin_attempt(req: AttemptRequest) -> Admission;
    fn end_attempt(
        email: EmailKey, source: AttemptSource, attempt: String, outcome: AttemptOutcome,
        window_s: u64
    ) -> u64 as AttemptEnd;
    fn end_devices(uid: UserId, now_ms: i64) -> ();
    fn lift_lockout(email: EmailKey) -> u64;
    fn devices_ended_at(uid: UserId, now_ms: i64) -> Option<i64>;
    fn take_rate_token(ip: ClientIp, now_ms: i64, interval_ms: f64, burst: u32) -> u64
        as RateRequest;
    fn housekeeping(now_ms: i64) -> ();
}

impl SessionStore {
    /// The backend's name, as `/health` lists it.
    pub fn backend(&self) -> &'static str {
        match self {
            SessionStore::Redis(_) => "redis",
            SessionStore::Embedded(_) => "sqlite_sessions",
        }
    }

    /// The same store, applying `rules` (the defaults of `config/default.toml` until given).
    pub fn with_rules(self, rules: SessionRules) -> Self {
        match self {
            SessionStore::Redis(s) => SessionStore::Redis(s.with_rules(rules)),
            SessionStore::Embedded(s) => SessionStore::Embedded(s.with_rules(rules)),
        }
    }

    /// The same store for the calling thread: on Redis a connection of its own (see
    /// [`RedisConnection::for_this_thread`](crate::session_store::redis_conn::RedisConnection::for_this_thread)),
    /// embedded the shared database.
    pub fn for_this_thread(&self) -> Result<Self, String> {
        Ok(match self {
            SessionStore::Redis(s) => SessionStore::Redis(s.for_this_thread()?),
            SessionStore::Embedded(s) => SessionStore::Embedded(s.clone()),
        })
    }
}
