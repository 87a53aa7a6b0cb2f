//! Errors the actors answer with. They know nothing of HTTP; the web layer maps each kind to a
//! status code. Failures keep their cause as a `source`, so the log shows the whole chain while
//! the client sees only a generic message.
use crate::domain::{EndReason, SessionId, UserId, UserStatus};

/// Any error kept as a cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
    ReuseDetected {
        user_id: UserId,
        session_id: SessionId,
    },
    /// An older access or refresh token of a session that has since rotated.
    Superseded,
}

#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// The actor's mailbox is full; the caller should come back later.
    #[error("the {0} is overloaded")]
    Overloaded(&'static str),
    /// The actor's queue is longer than it can serve within its target wait: refused at once,
    /// before any work, with how long until it has room.
    #[error("the {actor} is saturated; retry in {retry_after_s} s")]
    Saturated {
        actor: &'static str,
        retry_after_s: u64,
    },
    /// The actor did not answer within the configured deadline.
    #[error("the {0} did not answer in time")]
    Timeout(&'static str),
    /// A backend (MongoDB, Redis, SQLite) or the actor itself cannot be reached.
    #[error("{dependency} is unavailable")]
    Unavailable {
        dependency: &'static str,
        #[source]
        source: BoxError,
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
    /// Too many requests from one address; retry after this many seconds.
    #[error("rate limited for {0} s")]
    RateLimited(u64),
    /// Unknown email, wrong password, or a password that changed while it was being checked.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// The right password for an account that is not active.
    #[error("account is {}", .0.as_str())]
    AccountNotActive(UserStatus),
    /// Input a workflow refuses (what a parser could not know, e.g. a missing
    /// `current_password`).
    #[error("{0}")]
    Invalid(String),
    /// Authenticated, but not allowed to do this.
    #[error("{}", .0.message())]
    Forbidden(Refusal),
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The change would leave the service without an active administrator.
    #[error("the last active administrator cannot be demoted, suspended or deleted")]
    LastAdmin,
    /// A compare-and-set kept failing: the record kept changing under the request.
    #[error("the record changed while the request was applied; retry")]
    Conflict,
    /// Stored data this version cannot take over as it is (start-up); says what and the fix.
    #[error("{0}")]
    Incompatible(String),
    /// Anything else; the cause is for the log, never for the client.
    #[error("internal error: {context}")]
    Internal {
        context: &'static str,
        #[source]
        source: BoxError,
    },
}

/// Why an authenticated caller may not do what they asked (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The action is an administrator's.
    AdminRequired,
    /// A user may act on their own account only.
    OwnAccountOnly,
    /// Status and role are changed by an administrator only.
    AdminChangesStatusAndRole,
    /// The `current_password` of a password change is wrong.
    WrongCurrentPassword,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::AdminRequired => "Administrator role required",
            Refusal::OwnAccountOnly => "You may only access your own account",
            Refusal::AdminChangesStatusAndRole => "Only an administrator may change status or role",
            Refusal::WrongCurrentPassword => "current_password is incorrect",
        }
    }
}

impl ActorError {
    /// A failure of the service itself, with its cause.
    pub fn internal(context: &'static str, source: impl Into<BoxError>) -> Self {
        ActorError::Internal {
            context,
            source: source.into(),
        }
    }

    /// A dependency (or an actor) that cannot serve, with why.
    pub fn unavailable(dependency: &'static str, source: impl Into<BoxError>) -> Self {
        ActorError::Unavailable {
            dependency,
            source: source.into(),
        }
    }

    /// A MongoDB failure: unavailable (503, try again) when the deployment could not serve it
    /// now ([`mongo_is_transient`]), internal otherwise.
    pub fn mongo(e: mongodb::error::Error) -> Self {
        if mongo_is_transient(&e) {
            ActorError::unavailable("mongodb", e)
        } else {
            ActorError::internal("mongodb", e)
        }
    }

    /// A Redis failure: unavailable when the server or the cluster could not serve it now (the
    /// connection lost, a cluster re-electing a primary or moving slots, a replica answering
    /// for a primary, a server loading its data), internal otherwise.
    pub fn redis(e: redis::RedisError) -> Self {
        use redis::{ErrorKind, ServerErrorKind};
        let cluster_in_flux = matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::BusyLoading
                )
        );
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
            || e.is_cluster_error()
            || cluster_in_flux
        {
            ActorError::unavailable("redis", e)
        } else {
            ActorError::internal("redis", e)
        }
    }

    /// Seconds a refused caller should wait, when the refusal knows it.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ActorError::Saturated { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        }
    }

    /// True when the failure is the backend's or the load's, not the request's.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            ActorError::Unavailable { .. }
                | ActorError::Internal { .. }
                | ActorError::Timeout(_)
                | ActorError::Overloaded(_)
                | ActorError::Saturated { .. }
        )
    }
}

/// The server's codes for "this node cannot serve that now": not (or no longer) primary,
/// shutting down or interrupted by a state change, a host or the network failing, a write
/// conflict, a time limit, a transaction the node no longer knows (the driver's retryable
/// codes, with the transaction and time-limit ones). `failCommand` injects exactly these.
const TRANSIENT_MONGO_CODES: [i32; 20] = [
    6,     // HostUnreachable
    7,     // HostNotFound
    50,    // MaxTimeMSExpired
    64,    // WriteConcernFailed
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    134,   // ReadConcernMajorityNotAvailableYet
    189,   // PrimarySteppedDown
    251,   // NoSuchTransaction
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10058, // LegacyNotPrimary
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
    24,    // LockTimeout
    46,    // LockBusy
];

/// The error codes a MongoDB failure carries: the command's, its write concern error's.
fn mongo_codes(e: &mongodb::error::Error) -> Vec<i32> {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Command(c) => vec![c.code],
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => vec![w.code],
        ErrorKind::InsertMany(m) => m.write_concern_error.iter().map(|w| w.code).collect(),
        _ => Vec::new(),
    }
}

/// True when a MongoDB failure is the deployment's state, not the request's: no server to
/// select, the connection lost, a node stepping down or shutting down, a write conflict, a
/// write concern that could not be confirmed, or anything the server or driver labelled as
/// worth retrying. Such a request may succeed when tried again: 503, never 500.
pub fn mongo_is_transient(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{
        ErrorKind, WriteFailure, RETRYABLE_WRITE_ERROR, TRANSIENT_TRANSACTION_ERROR,
        UNKNOWN_TRANSACTION_COMMIT_RESULT,
    };
    let kind_says = matches!(
        e.kind.as_ref(),
        ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::DnsResolve { .. }
            | ErrorKind::Write(WriteFailure::WriteConcernError(_))
    );
    kind_says
        || [
            TRANSIENT_TRANSACTION_ERROR,
            UNKNOWN_TRANSACTION_COMMIT_RESULT,
            RETRYABLE_WRITE_ERROR,
        ]
        .iter()
        .any(|label| e.contains_label(label))
        || mongo_codes(e)
            .iter()
            .any(|code| TRANSIENT_MONGO_CODES.contains(code))
}

/// A cause that may be shown to anyone (in `/health`): what the deployment is doing, with no
/// address, query or stack in it. Other causes are for the log only.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PublicReason(pub &'static str);

/// An error and its causes, `outer: inner: innermost`, for the log.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
