//! The DbQueueActor's messages: every database operation the service performs.
use actix::Message;
use chrono::{DateTime, Utc};

use crate::domain::{AuditEntry, Email, NewUser, User, UserId, Wallet};
use crate::ActorError;

/// Round trip to the database; used by readiness checks.
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct Ping;

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

/// A user and their wallet (the wallet may be missing for legacy data).
#[derive(Message)]
#[rtype(result = "Result<Option<(User, Option<Wallet>)>, ActorError>")]
pub struct FindUserWithWallet(pub UserId);

/// A user by id, hash included.
#[derive(Message)]
#[rtype(result = "Result<Option<User>, ActorError>")]
pub struct FindUserById(pub UserId);

/// Stamp a successful login: `last_login_at = at`, `login_count += 1`, and write its audit entry.
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct RecordLogin {
    pub user_id: UserId,
    pub at: DateTime<Utc>,
    pub audit: AuditEntry,
}

/// Append an entry to the audit trail.
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct WriteAudit(pub AuditEntry);
