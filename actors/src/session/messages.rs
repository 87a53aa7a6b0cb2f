//! The SessionActor's messages.
use actix::Message;

use crate::domain::{AttemptSource, ClientIp, EmailKey};
use crate::session_store::AttemptOutcome;
use crate::ActorError;

/// Ask to check a login's password. Replies once the attempt is counted (as pending), after
/// waiting while every slot under the limits is held by attempts still being checked; fails
/// with [`ActorError::LockedOut`] (not counted) when the (email, client) or the email's
/// failures are at their limit; a known device is judged by its own failures only. The
/// attempt must then be ended with [`EndLoginAttempt`].
#[derive(Message)]
#[rtype(result = "Result<LoginAttempt, ActorError>")]
pub struct BeginLoginAttempt {
    /// The email's key (SPEC 10): one budget for every spelling of the address.
    pub email: EmailKey,
    pub source: AttemptSource,
}

/// An attempt holding a slot under the lockout.
#[derive(Debug, Clone)]
pub struct LoginAttempt {
    /// The email's key (SPEC 10): one budget for every spelling of the address.
    pub email: EmailKey,
    pub source: AttemptSource,
    pub id: String,
}

/// End an attempt: a failure is counted, a success takes its slot back and resets the
/// address's counter, an abandoned one only gives its slot back. Replies with the address's
/// failures in the window.
#[derive(Message)]
#[rtype(result = "Result<u64, ActorError>")]
pub struct EndLoginAttempt {
    pub attempt: LoginAttempt,
    pub outcome: AttemptOutcome,
}

/// One register, login or refresh from `0`'s address against its rate limit
/// (`AUTH_RATE_LIMIT` per second, bursts of `AUTH_RATE_BURST`): [`ActorError::RateLimited`]
/// beyond it. Checked before any other work, so a flood from one address cannot starve the
/// bcrypt pool, and a refused attempt is never counted toward the lockout.
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct TakeRateToken(pub ClientIp);

/// Clear every failure counter of an email (an administrator lifts its lockout); replies with
/// how many there were.
#[derive(Message)]
#[rtype(result = "Result<u64, ActorError>")]
pub struct LiftLockout(pub EmailKey);

/// End every session idle longer than `session_timeout`, writing an audit entry for each;
/// replies with how many this instance ended. Runs every `session_check_interval`.
#[derive(Message)]
#[rtype(result = "Result<usize, ActorError>")]
pub struct SweepIdleSessions;
