//! The TokenActor's messages.
use actix::Message;
use serde::{Deserialize, Serialize};

use crate::domain::{ClientIp, EmailKey, EndReason, Role, SessionId, UserId};
use crate::ActorError;

/// The claims of every token this service signs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id (24 hex).
    pub sub: String,
    /// The session id.
    pub sid: String,
    pub jti: String,
    /// `access` or `refresh`.
    pub typ: String,
    pub role: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    /// `JWT_AUDIENCE` (tokens signed with HS256 before this version have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// The claims of a device token (SPEC 10): which device, bound to which account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceClaims {
    /// The user id (24 hex).
    pub sub: String,
    /// The device id: its failures are counted under it.
    pub did: String,
    /// A fingerprint of the account's email key, so a login can be judged by the device before
    /// its user is looked up.
    pub ek: String,
    /// `device`.
    pub typ: String,
    pub iat: i64,
    /// When the device was first signed in from (ms), kept by every token of the device: a
    /// device first signed in before its user's devices were ended is none.
    pub since_ms: i64,
    pub exp: i64,
    pub iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Sign a device token for a login that just succeeded: for the device it presented a valid
/// token of (its failures stay its own), or a new device.
#[derive(Message)]
#[rtype(result = "Result<String, ActorError>")]
pub struct IssueDeviceToken {
    pub user_id: UserId,
    pub email: EmailKey,
    /// The device a valid token was presented for; `None`: a new device.
    pub device: Option<KnownDevice>,
}

/// Check the device token a login for `email` presented. `None` for anything but a valid,
/// unexpired token of this account's email key whose user has not had their devices ended
/// since: an invalid token counts as none, never as an error.
#[derive(Message)]
#[rtype(result = "Result<Option<KnownDevice>, ActorError>")]
pub struct CheckDeviceToken {
    pub token: String,
    pub email: EmailKey,
}

/// A device a login came from, as its valid device token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownDevice {
    pub user_id: UserId,
    pub device_id: String,
    /// When the device was first signed in from (ms).
    pub since_ms: i64,
}

/// End every device token of a user (with all their sessions, by an administrator).
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct EndDevices(pub UserId);

/// An authenticated caller, from a checked access token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub role: Role,
    /// The credential version its session was opened (or last moved) under: a user whose
    /// stored version is newer changed their password since, and the session is over.
    pub credential_version: i64,
}

/// A signed access/refresh pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Lifetime of the access token in seconds.
    pub expires_in: u64,
}

/// Open a session for a user whose password was just verified, under the concurrent-session
/// limit, and sign its pair: the oldest sessions are evicted (`evict_oldest`) or the login
/// refused (`reject`: [`ActorError::SessionLimit`]). Refused with
/// [`ActorError::InvalidCredentials`] when the user's password changed after `credential_version`
/// was read (the login verified the old one). The tokens' ids never leave the TokenActor.
#[derive(Message)]
#[rtype(result = "Result<OpenedSession, ActorError>")]
pub struct OpenSession {
    pub user_id: UserId,
    pub role: Role,
    pub credential_version: i64,
    /// Shown in the user's list of sessions.
    pub ip: ClientIp,
    pub user_agent: String,
}

#[derive(Debug, Clone)]
pub struct OpenedSession {
    pub pair: TokenPair,
    pub session_id: SessionId,
    /// Sessions this one pushed out under the limit.
    pub evicted: Vec<SessionId>,
    /// Sessions found idle past the timeout and ended on the way.
    pub expired: Vec<SessionId>,
}

/// Check an access token: signature, algorithm, expiry, type, and that its session is live and
/// it is that session's current access token.
#[derive(Message)]
#[rtype(result = "Result<Principal, ActorError>")]
pub struct ValidateAccess(pub String);

/// Exchange a refresh token for a new pair; the old pair stops working. Presenting a rotated
/// refresh token again ends the whole session (outside the grace window).
#[derive(Message)]
#[rtype(result = "Result<Rotated, ActorError>")]
pub struct RotateRefresh(pub String);

/// A refresh's outcome: whose session it is (at its credential version now) and its new pair
/// (the successor already given, when the old token came again within the grace window).
#[derive(Debug, Clone)]
pub struct Rotated {
    pub principal: Principal,
    pub pair: TokenPair,
}

/// A user's live sessions, newest first.
#[derive(Message)]
#[rtype(result = "Result<Vec<crate::session_store::SessionInfo>, ActorError>")]
pub struct ListSessions(pub UserId);

/// End a session of `user_id` (false when it was not live or is another user's): its access and
/// refresh tokens stop working at once.
#[derive(Message)]
#[rtype(result = "Result<bool, ActorError>")]
pub struct RevokeSession {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub reason: EndReason,
}

/// End every session of a user (suspension, deletion, password change), except `keep` if
/// given; replies with how many ended. Their tokens stop working at once on every instance.
/// A password change passes the user's new `credential_version`: from then on no session of an
/// older version opens or is accepted (`keep` moves to the new version).
#[derive(Message)]
#[rtype(result = "Result<usize, ActorError>")]
pub struct RevokeUserSessions {
    pub user_id: UserId,
    pub reason: EndReason,
    pub keep: Option<SessionId>,
    pub credential_version: Option<i64>,
}

/// Whether a token is live now, for another service (RFC 7662): its claims when it is a live
/// access or refresh token of a session that goes on, else none (never an error for the token
/// itself: forged, expired, ended or unreadable are all "not active").
#[derive(Message)]
#[rtype(result = "Result<Option<Claims>, ActorError>")]
pub struct Introspect(pub String);
