use std::time::Instant;

use actix::Message;

use crate::domain::Password;
use crate::ActorError;

/// Hash a password with the configured cost; replies with a `$2b$` bcrypt hash.
#[derive(Message)]
#[rtype(result = "Result<String, ActorError>")]
pub struct HashPassword {
    pub password: Password,
    /// When it was sent: the pool exports how long work waits for a thread.
    pub sent: Instant,
}

impl HashPassword {
    pub fn new(password: Password) -> Self {
        Self {
            password,
            sent: Instant::now(),
        }
    }
}

/// Check a password against a stored bcrypt hash (`$2a$`, `$2b$` or `$2y$`).
#[derive(Message)]
#[rtype(result = "Result<bool, ActorError>")]
pub struct VerifyPassword {
    pub password: Password,
    pub hash: String,
    pub sent: Instant,
}

impl VerifyPassword {
    pub fn new(password: Password, hash: String) -> Self {
        Self {
            password,
            hash,
            sent: Instant::now(),
        }
    }
}
