//! The Redis key schema shared by the TokenActor and the SessionActor. Every key starts with
//! the configured prefix, so several deployments (or tests) can share one Redis.
use crate::domain::{Email, SessionId, UserId};

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// HASH of one live session: `uid`, `role`, `created`, `seen` (ms), the current access and
    /// refresh `jti`s, the previous refresh `jti` and when it was rotated (for reuse detection
    /// and the grace window), and the successor pair given within the grace window.
    pub fn session(&self, sid: &SessionId) -> String {
        format!("{}sess:{}", self.prefix, sid)
    }

    /// The prefix scripts use to build session keys of evicted sessions.
    pub fn session_prefix(&self) -> String {
        format!("{}sess:", self.prefix)
    }

    /// STRING: why a session ended (`logout`, `evicted`, …); kept as long as its refresh token
    /// could live, so a 401 can say why.
    pub fn ended(&self, sid: &SessionId) -> String {
        format!("{}ended:{}", self.prefix, sid)
    }

    pub fn ended_prefix(&self) -> String {
        format!("{}ended:", self.prefix)
    }

    /// ZSET of a user's live sessions, scored by creation time (ms): the oldest is evicted first.
    pub fn user_sessions(&self, uid: &UserId) -> String {
        format!("{}user_sess:{}", self.prefix, uid)
    }

    pub fn user_sessions_prefix(&self) -> String {
        format!("{}user_sess:", self.prefix)
    }

    /// ZSET of every live session scored by last activity (ms): what the idle sweep scans.
    pub fn activity(&self) -> String {
        format!("{}sess_seen", self.prefix)
    }

    /// Counter of failed logins for one email within the failure window.
    pub fn login_failures(&self, email: &Email) -> String {
        format!("{}login_fail:{}", self.prefix, email.as_str())
    }
}
