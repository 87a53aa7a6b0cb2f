//! The Redis key schema shared by the TokenActor and the SessionActor. Every key starts with
//! the configured prefix, so several deployments (or tests) can share one Redis.
use crate::domain::{ClientIp, Email, SessionId, UserId};

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

    /// STRING: a user's credential version, raised by a password change; a session of an
    /// older version is refused. Kept as long as a session opened before the change could live.
    pub fn credential(&self, uid: &UserId) -> String {
        format!("{}cred:{}", self.prefix, uid)
    }

    /// STRING: an address's theoretical arrival time (ms) for the auth rate limit (GCRA).
    pub fn rate(&self, ip: &ClientIp) -> String {
        format!("{}rate:{}", self.prefix, ip)
    }

    /// Counter of failed logins for one email (from every address) within the failure window.
    pub fn login_failures(&self, email: &Email) -> String {
        format!("{}login_fail:{}", self.prefix, email.as_str())
    }

    /// Counter of failed logins for one email from one address (an email's domain never holds
    /// `|`, so the key is unambiguous).
    pub fn login_failures_from(&self, email: &Email, ip: &ClientIp) -> String {
        format!("{}login_fail:{}|{}", self.prefix, email.as_str(), ip)
    }

    /// ZSET of the attempts for one email whose password is being checked, scored by start (ms).
    pub fn login_pending(&self, email: &Email) -> String {
        format!("{}login_pend:{}", self.prefix, email.as_str())
    }

    /// The same, for one email from one address.
    pub fn login_pending_from(&self, email: &Email, ip: &ClientIp) -> String {
        format!("{}login_pend:{}|{}", self.prefix, email.as_str(), ip)
    }
}
