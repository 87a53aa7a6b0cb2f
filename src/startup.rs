//! Starts each actor once, shares their mailboxes through `web::Data`, builds the `App`.
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Arbiter, Supervisor};
use actix_http::{error::DispatchError, HttpService, KeepAlive};
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, ErrorHandlers};
use actix_web::rt::net::TcpStream;
use actix_web::rt::task::JoinHandle;
use actix_web::{web, App};
use actors::account::{AccountActors, AccountSettings};
use actors::db_queue::{
    self, DbQueue, DbQueueActor, FindUserByEmail, Guard, IndexPlan, MongoStore, RegisterUser,
    SqliteStore, Store, UserCache, Written,
};
use actors::domain::{AuditEntry, NewUser, Password, Registered, Role, UserStatus};
use actors::error::DuplicateField;
use actors::hasher::{HashPassword, HasherActor};
use actors::mailbox::{ActorStats, Mailbox};
use actors::probe::Dependency;
use actors::session::{SessionActor, SessionSettings};
use actors::session_store::keys::Keys;
use actors::session_store::redis_conn;
use actors::session_store::{
    RedisSessions, ReplicaWait, SessionRules, SessionStore, SqliteSessions,
};
use actors::token::{SigningAlgorithm, SigningKeys, TokenActors, TokenSettings};

use crate::introspection::IntrospectionClients;
use actors::ActorError;
use rand::distr::{Alphanumeric, SampleString};
use secrecy::{ExposeSecret, SecretString};
use tracing_actix_web::TracingLogger;

use crate::configuration::{BootstrapAdmin, Settings, StorageBackend, TokensBackend};
use crate::routes;
use crate::state::AppState;
use crate::wire::JsonErrors;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {cause}")]
    Listen { addr: String, cause: std::io::Error },
    #[error("the database is not usable at start-up: {0}")]
    Database(String),
    #[error("start-up failed: {0}")]
    Other(String),
}

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

/// The JWT secret: configured, or (outside production, which refuses to start without one) a
/// development secret generated once and kept in `DATA_DIR/jwt_secret`, so tokens survive
/// restarts. If that file cannot be written, a random secret for this process only.
fn jwt_secret(settings: &Settings) -> SecretString {
    if let Some(secret) = settings.jwt.secret_key.as_ref() {
        if !secret.expose_secret().is_empty() {
            return secret.clone();
        }
    }
    let path = std::path::Path::new(&settings.storage.data_dir).join("jwt_secret");
    match dev_secret(&path) {
        Ok(secret) => {
            tracing::warn!(
                path = %path.display(),
                "JWT_SECRET_KEY is not set: using the development secret kept in the data \
                 directory; set JWT_SECRET_KEY in production"
            );
            secret
        }
        Err(e) => {
            tracing::warn!(
                path = %path.display(), error = %e,
                "JWT_SECRET_KEY is not set and no development secret can be kept: using a \
                 random secret for this process; tokens will not survive a restart"
            );
            SecretString::from(Alphanumeric.sample_string(&mut rand::rng(), 64))
        }
    }
}

/// The keys tokens are signed and checked with (`JWT_ALGORITHM`): the HS256 secret and those
/// retired by a rotation; or a key pair from `JWT_PRIVATE_KEY_FILE` (outside production, one
/// generated once in `DATA_DIR`), with the public keys of `JWT_PREVIOUS_PUBLIC_KEY_FILES` and
/// `JWT_NEXT_PUBLIC_KEY_FILE`, and the HS256 secrets of `JWT_PREVIOUS_SECRET_KEYS` verifying
/// the tokens signed before the switch.
fn signing_keys(settings: &Settings) -> Result<SigningKeys, String> {
    let jwt = &settings.jwt;
    let previous: Vec<&[u8]> = jwt
        .previous_secret_keys
        .iter()
        .map(|s| s.expose_secret().as_bytes())
        .collect();
    let algorithm = jwt.algorithm;
    if algorithm == SigningAlgorithm::Hs256 {
        let secret = jwt_secret(settings);
        let secret = secret.expose_secret().as_bytes();
        return Ok(SigningKeys::hmac(
            secret,
            &previous,
            &jwt.issuer,
            &jwt.audience,
        ));
    }
    let read = |path: &str| {
        std::fs::read(path).map_err(|e| format!("cannot read the key file {path}: {e}"))
    };
    let private = match jwt.private_key_file.as_deref().map(str::trim) {
        Some(path) if !path.is_empty() => read(path)?,
        _ => dev_key_pair(settings, algorithm)?,
    };
    let previous_public = jwt
        .previous_public_key_files
        .iter()
        .map(|path| read(path))
        .collect::<Result<Vec<_>, _>>()?;
    let next = match jwt.next_public_key_file.as_deref().map(str::trim) {
        Some(path) if !path.is_empty() => Some(read(path)?),
        _ => None,
    };
    // Whoever holds an HS256 secret can make tokens: after the switch only the secrets listed
    // as previous still verify (JWT_SECRET_KEY does not), until the operator drops them.
    if !previous.is_empty() {
        tracing::warn!(
            "HS256 tokens still verify while JWT_PREVIOUS_SECRET_KEYS is set under JWT_ALGORITHM={}: \
             unset it once JWT_REFRESH_TOKEN_EXPIRES has passed since the switch",
            algorithm.as_str()
        );
    }
    SigningKeys::asymmetric(
        algorithm,
        &private,
        &previous_public,
        next.as_deref(),
        &previous,
        &jwt.issuer,
        &jwt.audience,
    )
}

/// The development key pair of `algorithm`, generated once and kept in `DATA_DIR` (readable by
/// this user only), as the development secret is: its private key as PKCS#8 PEM.
fn dev_key_pair(settings: &Settings, algorithm: SigningAlgorithm) -> Result<Vec<u8>, String> {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let name = format!("jwt_{}.pem", algorithm.as_str().to_lowercase());
    let path = std::path::Path::new(&settings.storage.data_dir).join(name);
    if let Ok(kept) = std::fs::read(&path) {
        return Ok(kept);
    }
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut seed);
    let line_ending = ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF;
    let pem = match algorithm {
        // PKCS#8 v1, the private key alone, as `openssl genpkey -algorithm ed25519` writes it.
        SigningAlgorithm::EdDsa => ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: seed,
            public_key: None,
        }
        .to_pkcs8_pem(line_ending)
        .map_err(|e| e.to_string())?,
        _ => p256::SecretKey::from_slice(&seed)
            .map_err(|e| e.to_string())?
            .to_pkcs8_pem(line_ending)
            .map_err(|e| e.to_string())?,
    };
    let pem = pem.as_bytes().to_vec();
    write_private_file(&path, &pem).map_err(|e| format!("{}: {e}", path.display()))?;
    tracing::warn!(
        path = %path.display(),
        "JWT_PRIVATE_KEY_FILE is not set: using the development key pair kept in the data \
         directory; set JWT_PRIVATE_KEY_FILE in production"
    );
    // Another process may have written its own first: use the one kept.
    std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes `content` to a new file readable by this user only; an existing file is kept.
fn write_private_file(path: &std::path::Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(content)?;
            file.sync_all()
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads the kept development secret, or creates it (readable by this user only).
fn dev_secret(path: &std::path::Path) -> std::io::Result<SecretString> {
    if let Ok(kept) = std::fs::read_to_string(path) {
        if kept.trim().len() >= 32 {
            return Ok(SecretString::from(kept.trim().to_string()));
        }
    }
    let secret = Alphanumeric.sample_string(&mut rand::rng(), 64);
    write_private_file(path, secret.as_bytes())?;
    // Another process may have created it first: use the one kept.
    let kept = std::fs::read_to_string(path)?;
    Ok(SecretString::from(kept.trim().to_string()))
}

/// Creates the configured administrator unless a user with that email exists. Several instances
/// starting together race on the unique index: exactly one creates it, the others see 409.
pub async fn bootstrap_admin(
    db: &DbQueue,
    hasher: &Mailbox<HasherActor>,
    admin: BootstrapAdmin,
    initial_balance: i64,
) -> Result<bool, StartupError> {
    let other = |e: ActorError| StartupError::Other(format!("bootstrap admin: {e}"));
    if let Some(existing) = db
        .call(FindUserByEmail(admin.email.clone()))
        .await
        .map_err(other)?
    {
        if existing.role != Role::Admin {
            tracing::warn!(
                "BOOTSTRAP_ADMIN_EMAIL belongs to a user who is not an administrator; left as is"
            );
        }
        return Ok(false);
    }
    let password_hash = hasher
        .call(HashPassword::new(admin.password))
        .await
        .map_err(other)?;
    let audit = AuditEntry::new("user.bootstrap_admin", "success").email(admin.email.as_str());
    let created = db
        .call(RegisterUser {
            user: NewUser {
                email: admin.email,
                username: admin.username,
                password_hash,
                role: Role::Admin,
                status: UserStatus::Active,
            },
            initial_balance,
            guard: Guard::Nobody,
            audit,
        })
        .await;
    match created {
        Ok(Written::Applied(Registered { user, .. })) => {
            tracing::info!(user_id = %user.id, "administrator created");
            Ok(true)
        }
        Ok(Written::NotFound | Written::Changed) => Ok(false),
        // Another instance created it first (same email), or the username is taken.
        Err(ActorError::Duplicate(field)) => {
            if field == DuplicateField::Username {
                tracing::warn!(
                    "BOOTSTRAP_ADMIN_USERNAME is taken by another user; no administrator created"
                );
            }
            Ok(false)
        }
        Err(e) => Err(other(e)),
    }
}

/// The MongoDB store the settings name (connected lazily: nothing is sent yet).
async fn connect_mongo(settings: &Settings) -> Result<MongoStore, StartupError> {
    let m = &settings.mongodb;
    let store = db_queue::connect(
        &m.uri,
        Some(m.user.as_str()),
        m.password.as_ref().map(|p| p.expose_secret()),
        Duration::from_millis(m.server_selection_timeout_ms),
    )
    .await
    .map_err(StartupError::Config)?;
    Ok(store
        .with_audit_retention(settings.audit_retention())
        .with_search_memory(settings.actors.search_memory))
}

/// What `migrate` would change in the configured database (`migrate --dry-run`), read without
/// starting anything or writing anything: no actor, no Redis, no secret file, no purge; the
/// embedded store's file is opened read-only. Names the database read.
pub async fn plan_migration(settings: &Settings) -> Result<(String, IndexPlan), StartupError> {
    match settings.storage_backend() {
        StorageBackend::Mongodb => {
            let store = connect_mongo(settings).await?;
            let name = store.database_name().to_string();
            let plan = store
                .plan_read_only()
                .await
                .map_err(|e| StartupError::Database(e.to_string()))?;
            Ok((name, plan))
        }
        StorageBackend::Embedded => {
            let dir = std::path::Path::new(&settings.storage.data_dir);
            let plan = SqliteStore::plan_read_only(dir, settings.audit_retention())
                .map_err(StartupError::Database)?;
            Ok((dir.join("users.db").display().to_string(), plan))
        }
    }
}

/// Adds the users stored before the search index existed to it, in steps of `rows`, in the
/// background (the service serves meanwhile; searches read every user until it is done), then
/// looks again every 30 s (on MongoDB, users written without keys behind the service's back
/// turn the index off until they are keyed). A database that stops answering pauses it. On
/// MongoDB the search memory is filled beside it ([`spawn_search_memory`]).
fn spawn_search_backfill(db: DbQueue, rows: u32) {
    if db.keeps_search_memory() {
        // A quarter of a slice a step: a login's three operations each wait for one step at
        // most while it fills (a whole slice a step: logins of 208 ms p50 at 100,000 users on
        // SecantusDB, against 18 ms alone).
        spawn_search_memory(db.clone(), (rows / 4).max(1));
    }
    actix_web::rt::spawn(async move {
        loop {
            let started = std::time::Instant::now();
            match db.backfill_search_index(rows).await {
                Ok(0) => {}
                Ok(users) => tracing::info!(
                    users,
                    seconds = started.elapsed().as_secs_f64(),
                    "users added to the search index: it holds every user"
                ),
                Err(ActorError::Unavailable { .. } | ActorError::Timeout(_)) => {}
                Err(e) => tracing::error!(
                    error = %e,
                    "filling the search index failed: searches read every user meanwhile"
                ),
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    });
}

/// Fills the search memory (MongoDB's) in steps of about `chunk` users, in the background, then keeps
/// it current: every second the changes since are applied, so a search has few left to apply
/// before it answers. A step that fails sets the memory aside; the next fills it again.
fn spawn_search_memory(db: DbQueue, chunk: u32) {
    actix_web::rt::spawn(async move {
        let mut failing = false;
        loop {
            match db.keep_search_memory(chunk).await {
                Ok(()) => failing = false,
                Err(ActorError::Unavailable { .. } | ActorError::Timeout(_)) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(
                        error = %e,
                        "the search memory is set aside: searches read the indexes meanwhile"
                    );
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// Prepares the database's indexes once it answers (retrying with a growing pause, at most
/// 5 s), marks it prepared, then creates the bootstrap administrator if one is configured.
/// `running` is a first preparation still under way (much data to take over): its outcome is
/// awaited first. Data that cannot meet the indexes is logged and leaves the service not ready.
fn prepare_when_reachable(
    db: DbQueue,
    database: Arc<Dependency>,
    hasher: Mailbox<HasherActor>,
    admin: Option<(BootstrapAdmin, i64)>,
    backfill_rows: u32,
    running: Option<JoinHandle<Result<(), ActorError>>>,
) {
    actix_web::rt::spawn(async move {
        let mut first = match running {
            Some(running) => Some(finished(running.await)),
            None => None,
        };
        let mut pause = Duration::from_millis(250);
        loop {
            let outcome = match first.take() {
                Some(outcome) => outcome,
                None => {
                    tokio::time::sleep(pause).await;
                    db.prepare().await
                }
            };
            match outcome {
                Ok(()) => break,
                Err(ActorError::Unavailable { .. } | ActorError::Timeout(_)) => {
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::error!(
                        dependency = database.name,
                        error = %e,
                        "the database answers but its indexes cannot be prepared: not ready"
                    );
                    return;
                }
            }
        }
        database.set_prepared(true);
        tracing::info!(
            dependency = database.name,
            "indexes in place: the database is ready for work"
        );
        spawn_search_backfill(db.clone(), backfill_rows);
        if let Some((admin, balance)) = admin {
            if let Err(e) = bootstrap_admin(&db, &hasher, admin, balance).await {
                tracing::error!(error = %e, "the bootstrap administrator was not created");
            }
        }
    });
}

/// The most actor calls one workflow makes in sequence (a login: the lockout twice, the lookup,
/// bcrypt, the session, the stamp; with room to spare): a whole workflow ends within this many
/// call deadlines.
const WORKFLOW_CALLS: u32 = 8;

/// The outcome of a preparation run as a task (a panic in it is an internal error).
fn finished(
    joined: Result<Result<(), ActorError>, actix_web::rt::task::JoinError>,
) -> Result<(), ActorError> {
    joined.unwrap_or_else(|e| {
        Err(ActorError::internal(
            "preparing the database",
            e.to_string(),
        ))
    })
}

/// How the first preparation of the database went at start ([`Actors::start_serving`]).
pub enum Preparation {
    /// Done: the database serves at once.
    Done,
    /// Still running (much data to take over): the service starts not ready, and is ready
    /// when it is done.
    Running(JoinHandle<Result<(), ActorError>>),
    /// The database did not answer: it is prepared when it does.
    Unreachable,
}

/// The running actors, started once per process.
pub struct Actors {
    /// Users with wallets recently read; filled and invalidated by the DbQueueActor only.
    pub user_cache: UserCache,
    pub database: Arc<Dependency>,
    pub token_store: Arc<Dependency>,
    pub db: DbQueue,
    pub tokens: TokenActors,
    /// The keys the TokenActors sign and check with; the JWK Set is published from them.
    pub keys: Arc<SigningKeys>,
    pub sessions: Mailbox<SessionActor>,
    pub hasher: Mailbox<HasherActor>,
    pub database_name: String,
}

impl Actors {
    /// Starts every actor (each on its own arbiter, away from the HTTP workers) and makes sure
    /// the indexes exist. Used by `serve`, `migrate` and `create-admin` alike.
    pub async fn start(settings: &Settings) -> Result<Self, StartupError> {
        let actors = Self::start_unindexed(settings).await?;
        // Unique indexes guard every duplicate rule: serve nothing until they exist.
        actors
            .db
            .prepare()
            .await
            .map_err(|e| StartupError::Database(e.to_string()))?;
        Ok(actors)
    }

    /// [`Actors::start`] for `serve`: a database unreachable at start (as a Redis one is) does
    /// not stop the service; it starts not ready, refuses work needing the database (503,
    /// `Retry-After`), and prepares the indexes as soon as the database answers, then runs
    /// `then` (the bootstrap administrator). A preparation that outlasts one operation's
    /// deadline (much data to take over: it reads every user) goes on while the service starts,
    /// not ready, so `/health/live` answers meanwhile. Data that cannot meet the indexes still
    /// stops start-up when that is known at once (later, it leaves the service not ready).
    pub async fn start_serving(settings: &Settings) -> Result<(Self, Preparation), StartupError> {
        let actors = Self::start_unindexed(settings).await?;
        let db = actors.db.clone();
        let mut running = actix_web::rt::spawn(async move { db.prepare().await });
        let first_wait = Duration::from_millis(settings.mongodb.op_timeout_ms);
        let outcome = match tokio::time::timeout(first_wait, &mut running).await {
            Ok(joined) => finished(joined),
            Err(_) => {
                actors.database.set_prepared(false);
                tracing::info!(
                    dependency = actors.database.name,
                    database = %actors.database_name,
                    "the database is being prepared (much data to take over): starting not ready"
                );
                return Ok((actors, Preparation::Running(running)));
            }
        };
        match outcome {
            Ok(()) => Ok((actors, Preparation::Done)),
            Err(e @ (ActorError::Unavailable { .. } | ActorError::Timeout(_))) => {
                actors.database.set_prepared(false);
                tracing::warn!(
                    dependency = actors.database.name,
                    database = %actors.database_name,
                    error = %e,
                    "the database is unreachable: starting not ready; its indexes are prepared \
                     as soon as it answers"
                );
                Ok((actors, Preparation::Unreachable))
            }
            Err(e) => Err(StartupError::Database(e.to_string())),
        }
    }

    /// Starts every actor, leaving the database's indexes as they are.
    async fn start_unindexed(settings: &Settings) -> Result<Self, StartupError> {
        let a = &settings.actors;
        let call_timeout = settings.call_timeout();
        let probe_interval = Duration::from_millis(a.probe_interval_ms);
        let user_cache = UserCache::new(Duration::from_millis(a.user_cache_ttl_ms), 100_000);
        let store = open_store(settings).await?;
        let session_store = open_session_store(settings)?.with_rules(session_rules(settings));
        let database = Dependency::new(store.backend());
        let token_store = Dependency::new(session_store.backend());
        let database_name = store.database_name();
        tracing::info!(
            storage = store.backend(),
            tokens = session_store.backend(),
            database = %database_name,
            "backends chosen"
        );
        let db = start_db_queue(settings, store, &database, &user_cache);
        let keys = Arc::new(signing_keys(settings).map_err(StartupError::Config)?);
        // The TokenActors run on the HTTP workers, one each (see `AccountActors`); the token
        // store's probe runs here.
        let tokens = TokenActors::new(
            token_settings(settings, &keys),
            session_store.clone(),
            ActorStats::new("token", a.token_capacity),
            call_timeout,
        );
        let pinged = session_store.clone();
        token_store.watch(probe_interval, move || {
            let store = pinged.clone();
            async move { store.ping().await }
        });
        let sessions = start_session_actor(settings, session_store, db.clone());
        let hasher = start_hasher(settings)?;
        // Give the first probes a moment, so /health is right from the first request.
        let first_probes = Instant::now();
        while !(database.is_checked() && token_store.is_checked())
            && first_probes.elapsed() < probe_interval.max(Duration::from_secs(2))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            user_cache,
            database,
            token_store,
            db,
            tokens,
            keys,
            sessions,
            hasher,
            database_name,
        })
    }

    /// [`Actors::start_serving`], then what a prepared database allows at once (the bootstrap
    /// administrator, the search index's backfill), or later when it answers.
    async fn start_and_prepare(settings: &Settings) -> Result<Self, StartupError> {
        let admin = settings
            .bootstrap_admin()
            .map_err(|e| StartupError::Config(e.to_string()))?;
        let balance = settings.wallet.initial_balance;
        let backfill_rows = settings.actors.search_slice.max(1);
        let (actors, preparation) = Actors::start_serving(settings).await?;
        let running = match preparation {
            Preparation::Done => {
                if let Some(admin) = admin {
                    bootstrap_admin(&actors.db, &actors.hasher, admin, balance).await?;
                }
                spawn_search_backfill(actors.db.clone(), backfill_rows);
                return Ok(actors);
            }
            Preparation::Running(running) => Some(running),
            Preparation::Unreachable => None,
        };
        prepare_when_reachable(
            actors.db.clone(),
            Arc::clone(&actors.database),
            actors.hasher.clone(),
            admin.map(|a| (a, balance)),
            backfill_rows,
            running,
        );
        Ok(actors)
    }
}

/// The database the settings name: MongoDB (connected lazily) or the embedded file.
async fn open_store(settings: &Settings) -> Result<Store, StartupError> {
    Ok(match settings.storage_backend() {
        StorageBackend::Mongodb => Store::Mongo(connect_mongo(settings).await?),
        StorageBackend::Embedded => Store::Embedded(
            SqliteStore::open(std::path::Path::new(&settings.storage.data_dir))
                .map_err(StartupError::Config)?,
        ),
    })
}

/// The token store the settings name: Redis (one server or a Cluster) or the embedded file.
fn open_session_store(settings: &Settings) -> Result<SessionStore, StartupError> {
    let r = &settings.redis;
    if settings.tokens_backend() == TokensBackend::Embedded {
        let dir = std::path::Path::new(&settings.storage.data_dir);
        let sessions = SqliteSessions::open(dir).map_err(StartupError::Config)?;
        return Ok(SessionStore::Embedded(sessions));
    }
    let password = r.password.as_ref().map(|p| p.expose_secret());
    let timeout = Duration::from_millis(r.timeout_ms);
    let connection = match r.cluster_nodes.as_slice() {
        [] => redis_conn::connect(&r.host, r.port, r.db, password, timeout),
        nodes => redis_conn::connect_cluster(nodes, password, timeout),
    }
    .map_err(StartupError::Config)?;
    let wait = ReplicaWait {
        replicas: r.wait_replicas,
        timeout: Duration::from_millis(r.wait_timeout_ms),
    };
    Ok(SessionStore::Redis(
        RedisSessions::new(connection, Keys::new(&r.key_prefix)).with_replica_wait(Some(wait)),
    ))
}

/// The DbQueueActor on its own arbiter (thread), away from the HTTP workers.
fn start_db_queue(
    settings: &Settings,
    store: Store,
    database: &Arc<Dependency>,
    cache: &UserCache,
) -> DbQueue {
    let a = &settings.actors;
    let stats = ActorStats::new("db_queue", a.db_queue_capacity);
    let op_timeout = Duration::from_millis(settings.mongodb.op_timeout_ms);
    let probe_interval = Duration::from_millis(a.probe_interval_ms);
    let audit_retention = settings.audit_retention();
    let purge_interval = Duration::from_secs(settings.sessions.session_check_interval);
    let batch_size = a.db_queue_batch.max(1);
    let search_memory = store.search_memory();
    let actor = {
        let (stats, database, cache) = (stats.clone(), database.clone(), cache.clone());
        Supervisor::start_in_arbiter(&Arbiter::new().handle(), move |_| {
            DbQueueActor::new(store, stats, op_timeout, database, probe_interval, cache)
                .with_audit_retention(audit_retention, purge_interval)
                .with_batch_size(batch_size)
        })
    };
    let mailbox = Mailbox::new(actor, stats, settings.call_timeout());
    DbQueue::new(mailbox, op_timeout, database.clone()).with_search_memory(search_memory)
}

fn token_settings(settings: &Settings, keys: &Arc<SigningKeys>) -> TokenSettings {
    let (jwt, sessions) = (&settings.jwt, &settings.sessions);
    TokenSettings {
        keys: Arc::clone(keys),
        issuer: jwt.issuer.clone(),
        audience: jwt.audience.clone(),
        access_ttl: Duration::from_secs(jwt.access_token_expires),
        refresh_ttl: Duration::from_secs(jwt.refresh_token_expires),
        device_ttl: Duration::from_secs(sessions.device_token_ttl),
    }
}

/// What the token store enforces on every session: the limit, its lifetimes and windows.
fn session_rules(settings: &Settings) -> SessionRules {
    let s = &settings.sessions;
    SessionRules {
        max_concurrent: s.max_concurrent_sessions,
        policy: s.limit_policy,
        lifetime: Duration::from_secs(settings.jwt.refresh_token_expires),
        idle_timeout: Duration::from_secs(s.session_timeout),
        reuse_grace: Duration::from_secs(s.refresh_reuse_grace),
        device_ttl: Duration::from_secs(s.device_token_ttl),
    }
}

/// The SessionActor (idle sweep, lockout, rate limit) on its own arbiter.
fn start_session_actor(
    settings: &Settings,
    store: SessionStore,
    db: DbQueue,
) -> Mailbox<SessionActor> {
    let (sessions, security) = (&settings.sessions, &settings.security);
    let call_timeout = settings.call_timeout();
    let session_settings = SessionSettings {
        idle_timeout: Duration::from_secs(sessions.session_timeout),
        check_interval: Duration::from_secs(sessions.session_check_interval),
        max_lifetime: Duration::from_secs(settings.jwt.refresh_token_expires),
        login_max_failures: security.login_max_failures,
        login_max_failures_per_account: security.login_max_failures_per_account,
        login_failure_window: Duration::from_secs(security.login_failure_window),
        attempt_wait: call_timeout / 2,
        // A whole login (its calls each bounded by the call deadline) ends well before.
        attempt_stale: call_timeout * WORKFLOW_CALLS,
        rate_limit: security.auth_rate_limit,
        rate_burst: security.auth_rate_burst,
    };
    let stats = ActorStats::new("session", settings.actors.session_capacity);
    let actor = {
        let stats = stats.clone();
        Supervisor::start_in_arbiter(&Arbiter::new().handle(), move |_| {
            SessionActor::new(session_settings, store, db, stats)
        })
    };
    Mailbox::new(actor, stats, call_timeout)
}

/// The bcrypt pool, with its admission target (0: none).
fn start_hasher(settings: &Settings) -> Result<Mailbox<HasherActor>, StartupError> {
    let a = &settings.actors;
    let stats = ActorStats::new("hasher", a.hasher_capacity);
    let queue_target = match a.hasher_queue_target_ms {
        0 => Duration::MAX,
        ms => Duration::from_millis(ms),
    };
    let cost = settings.security.bcrypt_cost;
    let actor = HasherActor::start(a.hasher_threads, cost, queue_target, stats.clone())
        .map_err(StartupError::Config)?;
    Ok(Mailbox::new(actor, stats, settings.call_timeout()))
}

/// What the handlers share: the actors' mailboxes, the settings, the verifying keys.
async fn app_state(settings: Arc<Settings>, actors: Actors) -> Result<AppState, StartupError> {
    // Unknown emails are checked against this hash, so they take as long as known ones.
    let dummy_password = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let dummy = Password::parse(&dummy_password).map_err(StartupError::Other)?;
    let dummy_hash = actors
        .hasher
        .call(HashPassword::new(dummy))
        .await
        .map_err(|e| StartupError::Other(e.to_string()))?;
    let accounts = AccountActors {
        db: actors.db.clone(),
        tokens: actors.tokens,
        sessions: actors.sessions.clone(),
        hasher: actors.hasher.clone(),
        cache: actors.user_cache,
        stats: ActorStats::new("account", settings.actors.account_capacity),
        settings: AccountSettings {
            initial_balance: settings.wallet.initial_balance,
            dummy_hash,
            idle_timeout: Duration::from_secs(settings.sessions.session_timeout),
            limit_policy: settings.sessions.limit_policy,
            bcrypt_cost: settings.security.bcrypt_cost,
            search_slice: settings.actors.search_slice.max(1),
        },
    };
    let introspection = IntrospectionClients::new(
        &settings.introspection.clients,
        settings.introspection.rate_limit,
    );
    Ok(AppState {
        accounts,
        db: actors.db,
        sessions: actors.sessions,
        hasher: actors.hasher,
        trusted_proxies: settings.security.trusted_proxies.clone().into(),
        ipv6_prefix: settings.security.client_ipv6_prefix,
        settings,
        started_at: Instant::now(),
        database_name: actors.database_name,
        database: actors.database,
        token_store: actors.token_store,
        keys: actors.keys,
        introspection: Arc::new(introspection),
    })
}

/// The HTTP server on `listener`: actix-web's `HttpServer::listen` (HTTP/1 over TCP, its
/// timeouts), with each connection wrapped so the answers actix-http writes by itself carry the
/// JSON error body (see `crate::wire`).
fn http_server(
    settings: &Settings,
    listener: TcpListener,
    state: web::Data<AppState>,
) -> Result<Server, StartupError> {
    let body_limit = settings.server.max_body_bytes;
    let local_addr = listener
        .local_addr()
        .map_err(|e| StartupError::Other(format!("listen: {e}")))?;
    let mut builder =
        actix_web::dev::Server::build().shutdown_timeout(settings.server.shutdown_grace);
    if settings.server.workers > 0 {
        builder = builder.workers(settings.server.workers);
    }
    // Idle keep-alive connections close as a graceful stop begins, as actix-web's own
    // `HttpServer` has them do.
    let stopping = builder.graceful_shutdown_signal();
    let app = move || {
        // Each worker thread runs its own AccountActor and TokenActor: a handler reaches them
        // without a thread hop. A workflow's own calls each have the call deadline, so the
        // handler awaits the whole workflow without a timer of its own.
        let accounts = state.accounts.start_here(Duration::MAX);
        App::new()
            .app_data(web::Data::new(accounts))
            .wrap(ErrorHandlers::new().default_handler(routes::json_error_body))
            .wrap(actix_web::middleware::from_fn(crate::metrics::http_metrics))
            .wrap(actix_web::middleware::from_fn(
                crate::telemetry::echo_request_id,
            ))
            .wrap(TracingLogger::<crate::telemetry::RequestSpan>::new())
            .wrap(
                DefaultHeaders::new()
                    .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                    .add((header::CACHE_CONTROL, "no-store")),
            )
            .app_data(state.clone())
            .app_data(routes::json_config(body_limit))
            .app_data(routes::path_config())
            .app_data(routes::query_config())
            .app_data(web::PayloadConfig::new(body_limit))
            .configure(routes::configure)
    };
    let server = builder
        .listen("http", listener, move || {
            let stopping = stopping.clone();
            let http = HttpService::build()
                .graceful_shutdown_signal(move || {
                    let stopping = stopping.clone();
                    async move { stopping.notified().await }
                })
                .keep_alive(KeepAlive::default())
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                .h1_allow_half_closed(true)
                .local_addr(local_addr)
                .h1(map_config(
                    app()
                        .into_factory()
                        .map_err(|e: actix_web::Error| e.error_response()),
                    |_| AppConfig::default(),
                ));
            fn_service(|io: TcpStream| async move {
                let peer = io.peer_addr().ok();
                Ok::<_, DispatchError>((JsonErrors::new(io), peer))
            })
            .and_then(http)
        })
        .map_err(|e| StartupError::Other(format!("listen: {e}")))?;
    Ok(server.run())
}

impl Application {
    /// Starts the actors, prepares the database (or goes on not ready until it answers),
    /// listens and serves.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        crate::metrics::install();
        let settings = Arc::new(settings);
        let actors = Actors::start_and_prepare(&settings).await?;
        let state = web::Data::new(app_state(Arc::clone(&settings), actors).await?);
        let addr = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&addr).map_err(|cause| StartupError::Listen {
            addr: addr.clone(),
            cause,
        })?;
        let port = listener
            .local_addr()
            .map_err(|cause| StartupError::Listen { addr, cause })?
            .port();
        let server = http_server(&settings, listener, state.clone())?;
        Ok(Self {
            port,
            server,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
