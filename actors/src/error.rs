//! Errors the actors answer with. They know nothing of HTTP; the web layer maps each kind to a
//! status code.
use crate::domain::EndReason;

/// Which unique field a write collided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuplicateField {
    Email,
    Username,
    /// The store said "duplicate" without saying which; rare (a race with a delete).
    Unknown,
}

/// Why a presented token is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRejection {
    /// Bad signature, bad algorithm, malformed, wrong issuer.
    Invalid,
    /// Past its `exp`.
    Expired,
    /// A refresh token used as an access token, or the reverse; holds the expected `typ`.
    WrongType(&'static str),
    /// Its session has ended, for the given reason.
    Ended(EndReason),
    /// This very request presented an already-rotated refresh token: the session has just been
    /// revoked because of it (later attempts see `Ended(RefreshReuse)`).
    ReuseDetected { user_id: String, session_id: String },
    /// An older access or refresh token of a session that has since rotated.
    Superseded,
}

#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// The actor's mailbox is full; the caller should come back later.
    #[error("the {0} is overloaded")]
    Overloaded(&'static str),
    /// The actor did not answer within the configured deadline.
    #[error("the {0} did not answer in time")]
    Timeout(&'static str),
    /// A backend (MongoDB, Redis) or the actor itself cannot be reached.
    #[error("{dependency} is unavailable: {cause}")]
    Unavailable {
        dependency: &'static str,
        cause: String,
    },
    #[error("duplicate {0:?}")]
    Duplicate(DuplicateField),
    /// The live-session limit is reached under the `reject` policy.
    #[error("session limit reached")]
    SessionLimit,
    #[error("token rejected: {0:?}")]
    Token(TokenRejection),
    /// Too many failed logins; retry after this many seconds.
    #[error("locked out for {0} s")]
    LockedOut(u64),
    /// Anything else; the cause is for the log, never for the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ActorError {
    pub fn mongo(e: mongodb::error::Error) -> Self {
        use mongodb::error::ErrorKind;
        match *e.kind {
            ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::DnsResolve { .. } => ActorError::Unavailable {
                dependency: "mongodb",
                cause: e.to_string(),
            },
            _ => ActorError::Internal(format!("mongodb: {e}")),
        }
    }

    pub fn redis(e: redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
        {
            ActorError::Unavailable {
                dependency: "redis",
                cause: e.to_string(),
            }
        } else {
            ActorError::Internal(format!("redis: {e}"))
        }
    }

    /// True when the failure is the backend's or the load's, not the request's.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            ActorError::Unavailable { .. }
                | ActorError::Internal(_)
                | ActorError::Timeout(_)
                | ActorError::Overloaded(_)
        )
    }
}
