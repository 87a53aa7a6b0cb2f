//! Where session and token state lives: Redis (shared by every instance) or the embedded SQLite
//! file in the data directory. The TokenActor and the SessionActor hold a [`SessionStore`] and
//! call the same operations whichever backend is behind it; each operation is atomic on both
//! (one Lua script on Redis, one transaction on SQLite).
mod redis;
mod sqlite;

pub use self::redis::RedisSessions;
pub use self::sqlite::SqliteSessions;
use crate::domain::{Email, EndReason, Role, SessionId, UserId};
use crate::session::LimitPolicy;
use crate::ActorError;

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
}

/// What opening a session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// The limit is reached under the `reject` policy.
    Rejected,
    /// Opened; `evicted` were ended by the limit, `expired` had been idle past the timeout.
    Opened {
        evicted: Vec<SessionId>,
        expired: Vec<SessionId>,
    },
}

/// Whether an access token's session accepts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessCheck {
    Live,
    Ended(EndReason),
    /// An older access token of a session that has since rotated.
    Superseded,
    /// The token names a session of another user.
    Invalid,
}

/// A refresh token presented for rotation.
#[derive(Debug, Clone)]
pub struct RotateRequest {
    pub sid: SessionId,
    pub uid: String,
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
    Rotated,
    /// Presented again within the grace window: the pair it already yielded.
    Grace(String),
    /// A rotated refresh token came back: the session has just been ended.
    Reuse,
    Ended(EndReason),
    Invalid,
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
    fn check_access(sid: SessionId, uid: String, jti: String, now_ms: i64, idle_ms: i64)
        -> AccessCheck;
    fn rotate(req: RotateRequest) -> Rotation;
    fn end_session(uid: UserId, sid: SessionId, reason: EndReason, ended_ttl_s: u64) -> bool;
    fn end_user_sessions(
        uid: UserId, reason: EndReason, ended_ttl_s: u64, keep: Option<SessionId>
    ) -> Vec<String>;
    fn idle_candidates(cutoff_ms: i64, limit: usize) -> Vec<String>;
    fn expire_if_idle(sid: SessionId, now_ms: i64, idle_ms: i64, ended_ttl_s: u64)
        -> Option<String>;
    fn failures(email: Email) -> (u64, Option<u64>);
    fn count_failure(email: Email, window_s: u64) -> u64;
    fn clear_failures(email: Email) -> ();
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
}
