//! The one place that knows there are two stores: the DbQueueActor holds a [`Store`] and calls
//! the same operation whichever backend is behind it.
use chrono::{DateTime, Utc};

use super::messages::{
    DeleteUser, IndexPlan, ListAudit, RegisterUser, SearchSlice, SearchUsersSlice, UpdateUser,
    Written,
};
use super::mongo::MongoStore;
use super::sqlite::SqliteStore;
use crate::domain::{AuditEntry, AuditRecord, Email, User, UserId, Wallet};
use crate::ActorError;

/// The database behind the DbQueueActor: MongoDB, or the embedded SQLite file.
#[derive(Clone)]
pub enum Store {
    Mongo(MongoStore),
    Embedded(SqliteStore),
}

/// Forwards one operation to whichever store is configured.
macro_rules! forward {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        impl Store {
            $(pub async fn $name(self, $($arg: $ty),*) -> Result<$ret, ActorError> {
                match self {
                    Store::Mongo(s) => s.$name($($arg),*).await,
                    Store::Embedded(s) => s.$name($($arg),*).await,
                }
            })*
        }
    };
}

forward! {
    fn ping() -> ();
    fn ensure_indexes() -> ();
    fn plan_indexes() -> IndexPlan;
    fn register(m: RegisterUser) -> Written<(User, Wallet)>;
    fn find_user_by_email(email: Email) -> Option<User>;
    fn find_user_by_id(id: UserId) -> Option<User>;
    fn find_user_with_wallet(id: UserId) -> Option<(User, Option<Wallet>)>;
    fn record_login(id: UserId, at: DateTime<Utc>, audit: Vec<AuditEntry>) -> ();
    fn write_audit(entry: AuditEntry) -> ();
    fn upgrade_hash(id: UserId, verified: String, upgraded: String) -> bool;
    fn update_user(m: UpdateUser) -> Written<User>;
    fn delete_user(m: DeleteUser) -> Written<()>;
    fn search_slice(q: SearchUsersSlice) -> SearchSlice;
    fn find_users_by_ids(ids: Vec<UserId>) -> Vec<User>;
    fn list_audit(q: ListAudit) -> (Vec<AuditRecord>, u64);
    fn purge_audit(before: DateTime<Utc>) -> u64;
}

impl Store {
    /// The MongoDB database's name, or the embedded database's file.
    pub fn database_name(&self) -> String {
        match self {
            Store::Mongo(s) => s.database_name().to_string(),
            Store::Embedded(s) => s.database_name(),
        }
    }

    /// The backend's name, as `/health` lists it.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Mongo(_) => "mongodb",
            Store::Embedded(_) => "sqlite",
        }
    }
}
