use actix::Message;

use crate::domain::Password;
use crate::ActorError;

/// Hash a password with the configured cost; replies with a `$2b$` bcrypt hash.
#[derive(Message)]
#[rtype(result = "Result<String, ActorError>")]
pub struct HashPassword(pub Password);

/// Check a password against a stored bcrypt hash (`$2a$`, `$2b$` or `$2y$`).
#[derive(Message)]
#[rtype(result = "Result<bool, ActorError>")]
pub struct VerifyPassword {
    pub password: Password,
    pub hash: String,
}
