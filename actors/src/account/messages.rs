//! The AccountActor's messages: one per workflow. Each carries validated input (and, for a
//! signed-in caller, the access token exactly as presented); the actor does the rest.
use actix::Message;

use crate::db_queue::{ListAudit, SearchUsers, UserWithWallet};
use crate::domain::{
    AuditRecord, ClientIp, Email, Page, Password, Registered, Role, User, UserId, UserStatus,
    Username,
};
use crate::token::TokenPair;
use crate::ActorError;

/// Create an account and its wallet.
#[derive(Message)]
#[rtype(result = "Result<Registered, ActorError>")]
pub struct Register {
    pub username: Username,
    pub email: Email,
    pub password: Password,
    pub ip: ClientIp,
}

/// Sign in: the lockout's check-and-count, the password check, the account's status, a new
/// session with its token pair, the login's stamp and audit entries.
#[derive(Message)]
#[rtype(result = "Result<SignedIn, ActorError>")]
pub struct Login {
    pub email: Email,
    pub password: Password,
    pub ip: ClientIp,
    /// The client's `User-Agent` (shortened), shown in its list of sessions.
    pub user_agent: String,
    /// The device token a login sent back, if any (SPEC 10); unchecked.
    pub device_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SignedIn {
    /// As stored after this login's stamp.
    pub user: User,
    pub tokens: TokenPair,
    /// Names the device this login came from, for its next logins.
    pub device_token: String,
}

/// Exchange a refresh token for a new pair (rotation; reuse ends the session).
#[derive(Message)]
#[rtype(result = "Result<TokenPair, ActorError>")]
pub struct Refresh {
    pub refresh_token: String,
    pub ip: ClientIp,
}

/// End the session of an access token.
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct Logout {
    pub token: String,
    pub ip: ClientIp,
}

/// The signed-in user and their wallet (shared with the user cache, not copied).
#[derive(Message)]
#[rtype(result = "Result<UserWithWallet, ActorError>")]
pub struct Me {
    pub token: String,
}

/// Whether a token is live, for another service (RFC 7662): its claims and its user's role now,
/// or none.
#[derive(Message)]
#[rtype(result = "Result<Option<Introspection>, ActorError>")]
pub struct IntrospectToken(pub String);

/// A live token's claims, and its user's role as it is now (the token's `role` claim is the
/// role at sign-in: a refresh keeps it).
#[derive(Debug, Clone)]
pub struct Introspection {
    pub claims: crate::token::Claims,
    pub role: crate::domain::Role,
}

/// An administrator creates an account (and its wallet).
#[derive(Message)]
#[rtype(result = "Result<User, ActorError>")]
pub struct CreateAccount {
    pub token: String,
    pub email: Email,
    pub username: Username,
    pub password: Password,
    pub status: UserStatus,
    pub role: Role,
    pub ip: ClientIp,
}

/// A user, to themself or an administrator.
#[derive(Message)]
#[rtype(result = "Result<User, ActorError>")]
pub struct GetAccount {
    pub token: String,
    pub target: UserId,
}

/// Change an account: its owner (username, email, password with the current one) or an
/// administrator (also status and role). `None` leaves a field as it is.
#[derive(Message)]
#[rtype(result = "Result<User, ActorError>")]
pub struct UpdateAccount {
    pub token: String,
    pub target: UserId,
    pub changes: AccountChanges,
    pub ip: ClientIp,
}

#[derive(Debug, Clone, Default)]
pub struct AccountChanges {
    pub email: Option<Email>,
    pub username: Option<Username>,
    pub status: Option<UserStatus>,
    pub role: Option<Role>,
    pub password: Option<Password>,
    pub current_password: Option<Password>,
}

/// Delete an account (its owner or an administrator): its sessions end, its wallet is kept
/// as `closed`.
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct DeleteAccount {
    pub token: String,
    pub target: UserId,
    pub ip: ClientIp,
}

/// Search accounts (administrators).
#[derive(Message)]
#[rtype(result = "Result<Page<User>, ActorError>")]
pub struct SearchAccounts {
    pub token: String,
    pub query: SearchUsers,
}

/// Read the audit trail (administrators).
#[derive(Message)]
#[rtype(result = "Result<Page<AuditRecord>, ActorError>")]
pub struct ReadAudit {
    pub token: String,
    pub query: ListAudit,
}

/// Succeeds only for an active administrator's token (for the diagnostics endpoint).
#[derive(Message)]
#[rtype(result = "Result<User, ActorError>")]
pub struct RequireAdmin {
    pub token: String,
}

/// The caller's live sessions, newest first, and which one is theirs.
#[derive(Message)]
#[rtype(result = "Result<MySessions, ActorError>")]
pub struct ListMySessions {
    pub token: String,
}

#[derive(Debug, Clone)]
pub struct MySessions {
    pub sessions: Vec<crate::session_store::SessionInfo>,
    pub current: crate::domain::SessionId,
}

/// End one of the caller's sessions (404 if it is not theirs or not live).
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct EndMySession {
    pub token: String,
    /// As given in the path: a malformed id is no session of theirs (404).
    pub session_id: String,
    pub ip: ClientIp,
}

/// End every session of the caller but the current one; replies with how many ended.
#[derive(Message)]
#[rtype(result = "Result<usize, ActorError>")]
pub struct EndMyOtherSessions {
    pub token: String,
    pub ip: ClientIp,
}

/// An administrator lifts a user's lockout (clears every failure counter of their email);
/// replies with how many counters there were.
#[derive(Message)]
#[rtype(result = "Result<u64, ActorError>")]
pub struct LiftUserLockout {
    pub token: String,
    pub target: UserId,
    pub ip: ClientIp,
}

/// An administrator ends every session of a user; replies with how many ended.
#[derive(Message)]
#[rtype(result = "Result<usize, ActorError>")]
pub struct EndUserSessions {
    pub token: String,
    pub target: UserId,
    pub ip: ClientIp,
}
