//! The one place that knows there are two stores: the DbQueueActor holds a [`Store`] and
//! runs each batch on whichever backend is behind it (see `batch`).
use super::mongo::MongoStore;
use super::sqlite::SqliteStore;
use crate::ActorError;

/// The database behind the DbQueueActor: MongoDB, or the embedded SQLite file.
#[derive(Clone)]
pub enum Store {
    Mongo(MongoStore),
    Embedded(SqliteStore),
}

impl Store {
    /// The probe's ping, off the queue.
    pub async fn ping(self) -> Result<(), ActorError> {
        match self {
            Store::Mongo(s) => s.ping().await,
            Store::Embedded(s) => s.ping().await,
        }
    }
}

impl Store {
    /// The MongoDB database's name, or the embedded database's file.
    pub fn database_name(&self) -> String {
        match self {
            Store::Mongo(s) => s.database_name().to_string(),
            Store::Embedded(s) => s.database_name(),
        }
    }

    /// MongoDB's search memory; the embedded store has none (its trigram index serves).
    pub fn search_memory(&self) -> Option<std::sync::Arc<super::SearchMemory>> {
        match self {
            Store::Mongo(s) => Some(s.search_memory()),
            Store::Embedded(_) => None,
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
