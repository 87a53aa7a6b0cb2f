//! The SessionActor's messages.
use actix::Message;

use crate::domain::{AuditEntry, Email, Role, SessionId, UserId};
use crate::ActorError;

/// Open a session for a user who just proved their password, under the concurrent-session
/// limit: the oldest sessions are evicted (`evict_oldest`) or the login refused (`reject`,
/// answered with [`ActorError::SessionLimit`]).
#[derive(Message)]
#[rtype(result = "Result<OpenedSession, ActorError>")]
pub struct OpenSession {
    pub user_id: UserId,
    pub role: Role,
    pub email: String,
    pub ip: Option<String>,
    /// The id and token `jti`s the TokenActor signed for this session.
    pub session_id: SessionId,
    pub access_jti: String,
    pub refresh_jti: String,
}

#[derive(Debug, Clone)]
pub struct OpenedSession {
    pub session_id: SessionId,
    pub evicted: Vec<SessionId>,
    /// The entries of the sessions this ended (evicted, or found idle past the timeout), for
    /// the caller to write with the login's own entry in one database operation.
    pub audit: Vec<AuditEntry>,
}

/// Fails with [`ActorError::LockedOut`] while an email has too many recent failed logins;
/// otherwise replies with the failures counted so far in the window.
#[derive(Message)]
#[rtype(result = "Result<u64, ActorError>")]
pub struct CheckLoginAllowed(pub Email);

/// Count a failed login for an email; replies with the failures in the current window.
#[derive(Message)]
#[rtype(result = "Result<u64, ActorError>")]
pub struct RecordLoginFailure(pub Email);

/// Forget an email's failed logins (after a successful one).
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct ClearLoginFailures(pub Email);

/// End every session idle longer than `session_timeout`, writing an audit entry for each;
/// replies with how many this instance ended. Runs every `session_check_interval`.
#[derive(Message)]
#[rtype(result = "Result<usize, ActorError>")]
pub struct SweepIdleSessions;
