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

/// A session to open under the per-user limit.
#[derive(Debug, Clone)]
pub struct OpenRequest {
    pub sid: SessionId,
    pub uid: UserId,
    pub role: Role,
    pub now_ms: i64,
    pub max: u32,
    pub policy: LimitPolicy,
    /// How long the session may live at most (the refresh token's lifetime), seconds.
    pub lifetime_s: u64,
    pub idle_ms: i64,
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

/// A refresh token presented for rotation.
#[derive(Debug, Clone)]
pub struct RotateRequest {
    pub sid: SessionId,
    pub uid: UserId,
    pub presented_jti: String,
    pub access_jti: String,
    pub refresh_jti: String,
    pub now_ms: i64,
    pub idle_ms: i64,
    pub grace_ms: i64,
    /// The new pair, as JSON, kept for the grace window.
    pub successor: String,
    pub lifetime_s: u64,
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

/// Token and session state, on Redis or embedded.
#[derive(Clone)]
pub enum SessionStore {
    Redis(RedisSessions),
    Embedded(SqliteSessions),
}

/// Forwards one operation to whichever store is configured.
macro_rules! forward {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        impl SessionStore {
            $(pub async fn $name(&self, $($arg: $ty),*) -> Result<$ret, ActorError> {
                match self {
                    SessionStore::Redis(s) => s.$name($($arg),*).await,
                    SessionStore::Embedded(s) => s.$name($($arg),*).await,
                }
            })*
        }
    };
}

forward! {
    fn ping() -> ();
    fn open_session(req: OpenRequest) -> Opening;
    fn check_access(
        sid: SessionId, uid: UserId, kind: TokenKind, jti: String, now_ms: i64, idle_ms: i64
    ) -> AccessCheck;
    fn rotate(req: RotateRequest) -> Rotation;
    fn end_session(uid: UserId, sid: SessionId, reason: EndReason, ended_ttl_s: u64) -> bool;
    fn list_sessions(uid: UserId, now_ms: i64, idle_ms: i64) -> Vec<SessionInfo>;
    fn end_user_sessions(
        uid: UserId, reason: EndReason, ended_ttl_s: u64, keep: Option<SessionId>,
        credential_version: Option<i64>
    ) -> Vec<String>;
    fn idle_candidates(cutoff_ms: i64, limit: usize) -> Vec<(UserId, SessionId)>;
    fn expire_if_idle(uid: UserId, sid: SessionId, now_ms: i64, idle_ms: i64, ended_ttl_s: u64)
        -> bool;
    fn begin_attempt(req: AttemptRequest) -> Admission;
    fn end_attempt(
        email: EmailKey, source: AttemptSource, attempt: String, outcome: AttemptOutcome,
        window_s: u64
    ) -> u64;
    fn end_devices(uid: UserId, now_ms: i64, ttl_s: u64) -> ();
    fn lift_lockout(email: EmailKey) -> u64;
    fn devices_ended_at(uid: UserId, now_ms: i64) -> Option<i64>;
    fn take_rate_token(ip: ClientIp, now_ms: i64, interval_ms: f64, burst: u32) -> u64;
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
