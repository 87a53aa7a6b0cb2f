//! Validated input types (and the client's address) and the records the service hands back.
//!
//! Input becomes one of these newtypes through `parse`, which is the only constructor; messages
//! to actors carry only these, never raw strings.
mod client_ip;
mod email;
mod ids;
mod password;
mod records;
mod search_keys;
mod username;

pub use client_ip::{AttemptSource, ClientIp, DEFAULT_IPV6_PREFIX};
pub use email::{Email, EmailKey};
pub use ids::{SessionId, UserId};
pub use password::Password;
pub(crate) use records::rfc3339;
pub use records::{
    AuditEntry, AuditRecord, EndReason, NewUser, Page, Registered, Role, User, UserChanges,
    UserStatus, Wallet,
};
pub use search_keys::{probe_key, search_keys, search_slot, SEARCH_SLOTS};
pub use username::Username;
