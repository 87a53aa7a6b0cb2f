//! The DbQueueActor's messages: every database operation the service performs.
use actix::Message;
use chrono::{DateTime, Utc};

use crate::domain::{
    AuditEntry, AuditRecord, Email, NewUser, User, UserChanges, UserId, UserStatus, Wallet,
};
use crate::ActorError;

/// Create the collections' indexes (idempotent).
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct EnsureIndexes;

/// Insert a user and their wallet in one transaction: both or neither.
#[derive(Message)]
#[rtype(result = "Result<(User, Wallet), ActorError>")]
pub struct RegisterUser {
    pub user: NewUser,
    pub initial_balance: i64,
    /// Written in the same transaction, so the trail never misses a created account.
    pub audit: AuditEntry,
}

/// Look a user up by (normalised) email, hash included, for login.
#[derive(Message)]
#[rtype(result = "Result<Option<User>, ActorError>")]
pub struct FindUserByEmail(pub Email);

/// A user and their wallet (the wallet may be missing for legacy data); fills the user cache.
#[derive(Message)]
#[rtype(result = "Result<Option<super::UserWithWallet>, ActorError>")]
pub struct FindUserWithWallet(pub UserId);

/// A user by id, hash included.
#[derive(Message)]
#[rtype(result = "Result<Option<User>, ActorError>")]
pub struct FindUserById(pub UserId);

/// Stamp a successful login: `last_login_at = at`, `login_count += 1`, and write its audit
/// entries (the sessions it ended, then the login itself) in one insert.
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct RecordLogin {
    pub user_id: UserId,
    pub at: DateTime<Utc>,
    pub audit: Vec<AuditEntry>,
}

/// Append an entry to the audit trail.
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct WriteAudit(pub AuditEntry);

/// Apply validated changes to a user; `None` when there is no such user. Duplicate email or
/// username is [`ActorError::Duplicate`]. The audit entry is written with the change.
#[derive(Message)]
#[rtype(result = "Result<Option<User>, ActorError>")]
pub struct UpdateUser {
    pub id: UserId,
    pub changes: UserChanges,
    pub audit: AuditEntry,
}

/// Delete a user and close their wallet (kept, `status: "closed"`), in one transaction with the
/// audit entry; `false` when there was no such user.
#[derive(Message)]
#[rtype(result = "Result<bool, ActorError>")]
pub struct DeleteUser {
    pub id: UserId,
    pub audit: AuditEntry,
}

/// Users matching literal, case-insensitive substrings of username/email and an exact status,
/// newest first; replies with one page and the total.
#[derive(Message)]
#[rtype(result = "Result<(Vec<User>, u64), ActorError>")]
pub struct SearchUsers {
    pub username: Option<String>,
    pub email: Option<String>,
    pub status: Option<UserStatus>,
    pub limit: i64,
    pub skip: u64,
}

/// Audit entries, newest first, filtered by subject and/or action; one page and the total.
#[derive(Message)]
#[rtype(result = "Result<(Vec<AuditRecord>, u64), ActorError>")]
pub struct ListAudit {
    pub user_id: Option<String>,
    pub action: Option<String>,
    pub limit: i64,
    pub skip: u64,
}
