//! What the store contract tests share: the backends a run has, each fresh for its test.
//!
//! The embedded stores always run; Redis when `TEST_REDIS_HOST`/`TEST_REDIS_PORT` are set, and
//! MongoDB when `TEST_MONGODB_URI` is. Each test gets its own data directory, Redis key prefix
//! and MongoDB database, so tests run in parallel against shared servers.
// Each test binary uses the part for its own store.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actors::db_queue::{self, DbQueue, DbQueueActor, SqliteStore, Store, UserCache};
use actors::mailbox::{ActorStats, Mailbox};
use actors::probe::Dependency;
use actors::session_store::keys::Keys;
use actors::session_store::{
    redis_conn, RedisSessions, SessionRules, SessionStore, SqliteSessions,
};

/// A test per case, each running the case on every backend of its kind (`SessionBackend` or
/// `StoreBackend`) in turn.
macro_rules! on_every_backend {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod on_every_backend {
            $(
                #[actix::test]
                async fn $case() {
                    for backend in crate::common::$backend::all() {
                        eprintln!("{} on {}", stringify!($case), backend.name());
                        super::$case(&backend).await;
                    }
                }
            )*
        }
    };
}

/// How long a test waits for a server or an operation.
const DEADLINE: Duration = Duration::from_secs(10);

/// A name nobody else uses: `tag` and a random suffix.
pub fn unique(tag: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{tag}_{}", &id[..16])
}

/// A directory of its own under the system temp dir, removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(unique(&format!("actors-{tag}")));
        std::fs::create_dir_all(&path).expect("the scratch directory is created");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where session and token state lives in one run of a case.
pub enum SessionBackend {
    Embedded(Scratch),
    Redis {
        host: String,
        port: u16,
        prefix: String,
    },
}

impl SessionBackend {
    /// The embedded store, and Redis when the environment names one.
    pub fn all() -> Vec<Self> {
        let mut backends = vec![Self::Embedded(Scratch::new("sessions"))];
        if let (Ok(host), Ok(port)) = (
            std::env::var("TEST_REDIS_HOST"),
            std::env::var("TEST_REDIS_PORT"),
        ) {
            backends.push(Self::Redis {
                host,
                port: port.parse().expect("TEST_REDIS_PORT is a port"),
                prefix: format!("{}:", unique("test")),
            });
        }
        backends
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::Redis { .. } => "redis",
        }
    }

    /// The store under `rules`: on Redis a new connection under this backend's prefix, embedded
    /// the same file each time.
    pub fn open(&self, rules: SessionRules) -> SessionStore {
        let store = match self {
            Self::Embedded(dir) => SessionStore::Embedded(
                SqliteSessions::open(dir.path()).expect("the sessions file opens"),
            ),
            Self::Redis { host, port, prefix } => {
                let conn = redis_conn::connect(host, *port, 0, None, DEADLINE)
                    .expect("the Redis address is valid");
                SessionStore::Redis(RedisSessions::new(conn, Keys::new(prefix.as_str())))
            }
        };
        store.with_rules(rules)
    }
}

/// Where users, wallets and the audit trail live in one run of a case.
pub enum StoreBackend {
    Embedded(Scratch),
    Mongo { uri: String, database: String },
}

impl StoreBackend {
    /// The embedded store, and MongoDB when the environment names one.
    pub fn all() -> Vec<Self> {
        let mut backends = vec![Self::Embedded(Scratch::new("store"))];
        if let Ok(uri) = std::env::var("TEST_MONGODB_URI") {
            backends.push(Self::Mongo {
                uri: uri.trim_end_matches('/').to_string(),
                database: unique("test"),
            });
        }
        backends
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::Mongo { .. } => "mongodb",
        }
    }

    /// A DbQueueActor on this store, its indexes prepared, and the queue to reach it.
    pub async fn start(&self) -> DbQueue {
        let store = match self {
            Self::Embedded(dir) => {
                Store::Embedded(SqliteStore::open(dir.path()).expect("the users file opens"))
            }
            Self::Mongo { uri, database } => {
                let uri = format!("{uri}/{database}?directConnection=true");
                let store = db_queue::connect(&uri, None, None, DEADLINE)
                    .await
                    .expect("the MongoDB URI is valid");
                Store::Mongo(store)
            }
        };
        let database = Dependency::new(store.backend());
        let stats = ActorStats::new("db_queue", 64);
        let cache = UserCache::new(Duration::ZERO, 0);
        let actor = DbQueueActor::new(
            store,
            Arc::clone(&stats),
            DEADLINE,
            Arc::clone(&database),
            DEADLINE,
            cache,
        )
        .start();
        let db = DbQueue::new(Mailbox::new(actor, stats, DEADLINE), DEADLINE, database);
        db.prepare().await.expect("the indexes are prepared");
        db
    }
}
