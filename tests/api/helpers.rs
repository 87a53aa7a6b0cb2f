//! Spawning the service for a test, and one helper per endpoint.
//!
//! The suite runs against one pair of backends per run: the embedded SQLite pair (the default),
//! or MongoDB + Redis with `TEST_BACKEND=mongodb`. `scripts/test.sh` runs it both ways. A test
//! that reads or changes stored data directly goes through [`Backdoor`], which speaks to either.
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use cs_user_management::configuration::Settings;
use cs_user_management::startup::Application;
use mongodb::bson::{doc, Bson, Document};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

mod kit;
pub(crate) use kit::*;

/// Part `n` of a JWT (0 the header, 1 the claims), decoded without checking: the test's own
/// token.
pub fn jwt_part(token: &str, n: usize) -> Value {
    use base64::Engine;
    let encoded = token.split('.').nth(n).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

pub const TEST_SECRET: &str = "test-secret-key-that-is-long-enough-0123456789";
pub const PASSWORD: &str = "correct-horse-9";

/// Base MongoDB URI (no database) and Redis address of the servers `scripts/test.sh` started.
pub fn mongo_base() -> String {
    std::env::var("TEST_MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into())
}

pub fn redis_host() -> String {
    std::env::var("TEST_REDIS_HOST").unwrap_or_else(|_| "127.0.0.1".into())
}

pub fn redis_port() -> u16 {
    std::env::var("TEST_REDIS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(6379)
}

/// True when this run tests the embedded backend: unless `TEST_BACKEND=mongodb` (with
/// `TEST_MONGODB_URI` and `TEST_REDIS_*`), so a plain `cargo test` needs no server.
pub fn embedded() -> bool {
    std::env::var("TEST_BACKEND").map_or(true, |b| b != "mongodb")
}

/// For a test about MongoDB or Redis themselves (their outages, the seed's MongoDB data): on the
/// embedded run it says why it does not apply and the test returns.
pub fn needs_servers(why: &str) -> bool {
    if embedded() {
        eprintln!("not applicable to the embedded backend: {why}");
        return false;
    }
    true
}

/// The names `/health` gives the backends of this run.
pub fn dependency_names() -> [&'static str; 2] {
    if embedded() {
        ["sqlite", "sqlite_sessions"]
    } else {
        ["mongodb", "redis"]
    }
}

/// Where embedded tests keep their data directories (`scripts/test.sh` removes it afterwards).
fn data_root() -> PathBuf {
    std::env::var_os("TEST_DATA_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("cs-um-test-data"))
}

/// A fresh database name, Redis prefix and data directory, and the environment that points the
/// service at them.
pub struct Isolation {
    pub db_name: String,
    pub prefix: String,
    pub data_dir: PathBuf,
}

impl Isolation {
    pub fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            db_name: format!("test_{}", &id[..16]),
            prefix: format!("test:{}:", &id[..16]),
            data_dir: data_root().join(&id[..16]),
        }
    }

    pub fn env(&self, overrides: &[(&str, &str)]) -> HashMap<String, String> {
        let mut env: HashMap<String, String> = [
            ("APP_ENV", "test".to_string()),
            ("HOST", "127.0.0.1".to_string()),
            ("PORT", "0".to_string()),
            ("SERVER_WORKERS", "2".to_string()),
            ("DATA_DIR", self.data_dir.display().to_string()),
            ("JWT_SECRET_KEY", TEST_SECRET.to_string()),
            ("BCRYPT_COST", "4".to_string()),
            // Every test's traffic comes from 127.0.0.1; the rate-limit tests turn it on.
            ("AUTH_RATE_LIMIT", "0".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if embedded() {
            env.insert("STORAGE_BACKEND".into(), "embedded".into());
            env.insert("TOKENS_BACKEND".into(), "embedded".into());
        } else {
            let uri = format!(
                "{}/{}?directConnection=true&serverSelectionTimeoutMS=5000",
                mongo_base(),
                self.db_name
            );
            env.insert("MONGODB_URI".into(), uri);
            // The search memory's change stream is off unless a test turns it on: SecantusDB
            // keeps one oplog for every database, so each stream's next read walks every other
            // test's writes (268 ms after 20,000 of them), and a stream per service under test
            // loaded the shared server until its pings failed.
            env.insert("APP__ACTORS__SEARCH_MEMORY".into(), "0".into());
            env.insert("REDIS_HOST".into(), redis_host());
            env.insert("REDIS_PORT".into(), redis_port().to_string());
            env.insert("REDIS_KEY_PREFIX".into(), self.prefix.clone());
            // The cluster pass of `scripts/test.sh`: the token store is a Redis Cluster.
            if let Ok(nodes) = std::env::var("TEST_REDIS_CLUSTER_NODES") {
                env.insert("REDIS_CLUSTER_NODES".into(), nodes);
            }
        }
        for (k, v) in overrides {
            env.insert(k.to_string(), v.to_string());
        }
        env
    }
}

/// Direct access to what the service stored, on either backend, for assertions and for setting
/// up states the API cannot reach (a user suspended behind the service's back).
pub enum Backdoor {
    Mongo(mongodb::Database),
    /// `DATA_DIR/users.db`.
    Sqlite(PathBuf),
}

/// A document's fields as SQL columns and values (`_id` is the `id` column; an ObjectId is
/// its hex).
fn sql_pairs(doc: &Document) -> Vec<(String, rusqlite::types::Value)> {
    use rusqlite::types::Value;
    doc.iter()
        .map(|(key, value)| {
            let column = if key == "_id" { "id" } else { key.as_str() };
            let value = match value {
                Bson::String(s) => Value::Text(s.clone()),
                Bson::ObjectId(id) => Value::Text(id.to_hex()),
                Bson::Int32(i) => Value::Integer(i64::from(*i)),
                Bson::Int64(i) => Value::Integer(*i),
                Bson::Null => Value::Null,
                other => panic!("the backdoor does not translate {other:?}"),
            };
            (column.to_string(), value)
        })
        .collect()
}

/// A filter of equalities as a SQL condition and its arguments.
fn sql_filter(filter: &Document) -> (String, Vec<rusqlite::types::Value>) {
    let pairs = sql_pairs(filter);
    let mut condition = vec!["1 = 1".to_string()];
    condition.extend(pairs.iter().map(|(c, _)| format!("{c} IS ?")));
    (
        condition.join(" AND "),
        pairs.into_iter().map(|(_, v)| v).collect(),
    )
}

fn row_document(row: &rusqlite::Row, columns: &[String]) -> Document {
    use rusqlite::types::ValueRef;
    let mut doc = Document::new();
    for (i, column) in columns.iter().enumerate() {
        let value = match row.get_ref(i).unwrap() {
            ValueRef::Null => Bson::Null,
            ValueRef::Integer(n) => Bson::Int64(n),
            ValueRef::Real(f) => Bson::Double(f),
            ValueRef::Text(t) | ValueRef::Blob(t) => {
                Bson::String(String::from_utf8_lossy(t).into_owned())
            }
        };
        let key = if column == "id" {
            "_id"
        } else {
            column.as_str()
        };
        doc.insert(key, value);
    }
    doc
}

impl Backdoor {
    pub fn sqlite<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> T + Send + 'static,
    ) -> impl std::future::Future<Output = T> {
        let Backdoor::Sqlite(path) = self else {
            panic!("not the embedded backend")
        };
        let path = path.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let conn = rusqlite::Connection::open(&path).unwrap();
                conn.busy_timeout(Duration::from_secs(10)).unwrap();
                f(&conn)
            })
            .await
            .unwrap()
        }
    }

    /// The MongoDB database, for the tests that are about MongoDB itself.
    pub fn mongo(&self) -> &mongodb::Database {
        match self {
            Backdoor::Mongo(db) => db,
            Backdoor::Sqlite(_) => panic!("this test needs MongoDB"),
        }
    }

    pub async fn find(&self, table: &str, filter: Document) -> Vec<Document> {
        match self {
            Backdoor::Mongo(db) => {
                use futures::TryStreamExt;
                let cursor = db.collection::<Document>(table).find(filter).await.unwrap();
                cursor.try_collect().await.unwrap()
            }
            Backdoor::Sqlite(_) => {
                let sql = format!("SELECT * FROM {table} WHERE {}", sql_filter(&filter).0);
                let args = sql_filter(&filter).1;
                self.sqlite(move |c| {
                    let mut statement = c.prepare(&sql).unwrap();
                    let columns: Vec<String> = statement
                        .column_names()
                        .into_iter()
                        .map(str::to_string)
                        .collect();
                    statement
                        .query_map(rusqlite::params_from_iter(args.iter()), |row| {
                            Ok(row_document(row, &columns))
                        })
                        .unwrap()
                        .map(Result::unwrap)
                        .collect()
                })
                .await
            }
        }
    }

    pub async fn find_one(&self, table: &str, filter: Document) -> Option<Document> {
        self.find(table, filter).await.into_iter().next()
    }

    pub async fn count(&self, table: &str, filter: Document) -> u64 {
        match self {
            Backdoor::Mongo(db) => db
                .collection::<Document>(table)
                .count_documents(filter)
                .await
                .unwrap(),
            Backdoor::Sqlite(_) => self.find(table, filter).await.len() as u64,
        }
    }

    /// `$set` on the first match.
    pub async fn set(&self, table: &str, filter: Document, set: Document) {
        match self {
            Backdoor::Mongo(db) => {
                db.collection::<Document>(table)
                    .update_one(filter, doc! {"$set": set})
                    .await
                    .unwrap();
            }
            Backdoor::Sqlite(_) => {
                let (condition, mut args) = sql_filter(&filter);
                let pairs = sql_pairs(&set);
                let assignments: Vec<String> =
                    pairs.iter().map(|(c, _)| format!("{c} = ?")).collect();
                let mut all: Vec<_> = pairs.into_iter().map(|(_, v)| v).collect();
                all.append(&mut args);
                let sql = format!(
                    "UPDATE {table} SET {} WHERE {condition}",
                    assignments.join(", ")
                );
                self.sqlite(move |c| c.execute(&sql, rusqlite::params_from_iter(all.iter())))
                    .await
                    .unwrap();
            }
        }
    }

    pub async fn delete_one(&self, table: &str, filter: Document) {
        match self {
            Backdoor::Mongo(db) => {
                db.collection::<Document>(table)
                    .delete_one(filter)
                    .await
                    .unwrap();
            }
            Backdoor::Sqlite(_) => {
                let (condition, args) = sql_filter(&filter);
                let sql = format!("DELETE FROM {table} WHERE {condition}");
                self.sqlite(move |c| c.execute(&sql, rusqlite::params_from_iter(args.iter())))
                    .await
                    .unwrap();
            }
        }
    }

    /// The names of a collection's (table's) indexes.
    pub async fn index_names(&self, table: &str) -> Vec<String> {
        match self {
            Backdoor::Mongo(db) => db
                .collection::<Document>(table)
                .list_index_names()
                .await
                .unwrap(),
            Backdoor::Sqlite(_) => {
                let table = table.to_string();
                self.sqlite(move |c| {
                    let mut statement = c
                        .prepare(
                            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?",
                        )
                        .unwrap();
                    statement
                        .query_map([table], |r| r.get(0))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect()
                })
                .await
            }
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// What the service stored, read directly.
    pub store: Backdoor,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the service in this test's actix system with extra settings (seed variable names).
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_in(&Isolation::new(), overrides).await
}

/// Starts the service on `iso`'s database, Redis prefix and data directory: several services
/// started on one isolation are instances sharing their backends.
pub async fn spawn_app_in(iso: &Isolation, overrides: &[(&str, &str)]) -> TestApp {
    init_logs();
    let settings = Settings::load_from(&iso.env(overrides)).expect("test settings load");
    let app = Application::build(settings)
        .await
        .expect("the service starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp::connect(address, iso).await
}

/// A client whose connections come from `ip` (any of 127.0.0.0/8 is this machine): another
/// client address, as the service sees it.
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().ok())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn init_logs() {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = cs_user_management::telemetry::init();
    }
}

impl TestApp {
    /// A client for a service already running at `address` with the given isolation.
    pub async fn connect(address: String, iso: &Isolation) -> TestApp {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let store = if embedded() {
            Backdoor::Sqlite(iso.data_dir.join("users.db"))
        } else {
            let mongo =
                mongodb::Client::with_uri_str(format!("{}/?directConnection=true", mongo_base()))
                    .await
                    .unwrap();
            Backdoor::Mongo(mongo.database(&iso.db_name))
        };
        TestApp {
            address,
            client,
            store,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POST with a raw body (for malformed input).
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn register(&self, username: &str, email: &str, password: &str) -> Response {
        self.post_json(
            "/auth/register",
            &json!({"username": username, "email": email, "password": password}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/auth/login",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    /// A login sent with `client` (see [`client_from`]), with an `X-Forwarded-For` if given.
    pub async fn login_with(
        &self,
        client: &reqwest::Client,
        email: &str,
        password: &str,
        forwarded_for: Option<&str>,
    ) -> Response {
        let mut request = client
            .post(self.url("/auth/login"))
            .json(&json!({"email": email, "password": password}));
        if let Some(forwarded) = forwarded_for {
            request = request.header("x-forwarded-for", forwarded);
        }
        request.send().await.unwrap()
    }

    /// GET without credentials, the body as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        response.json().await.unwrap()
    }

    pub async fn me(&self, access_token: &str) -> Response {
        self.get_auth("/auth/me", access_token).await
    }

    pub async fn logout(&self, access_token: &str) -> Response {
        self.client
            .post(self.url("/auth/logout"))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json("/auth/refresh", &json!({"refresh_token": refresh_token}))
            .await
    }

    /// Registers a user (unique name) and returns (email, user id).
    pub async fn create_user(&self) -> (String, String) {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let email = format!("user_{tag}@example.com");
        let response = self.register(&format!("u_{tag}"), &email, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        let id = body["data"]["user"]["_id"].as_str().unwrap().to_string();
        (email, id)
    }

    /// Logs in and returns (access, refresh).
    pub async fn tokens_for(&self, email: &str) -> (String, String) {
        let response = self.login(email, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        (
            body["data"]["access_token"].as_str().unwrap().to_string(),
            body["data"]["refresh_token"].as_str().unwrap().to_string(),
        )
    }

    /// A registered, logged-in user: (email, user id, access, refresh).
    pub async fn signed_in_user(&self) -> (String, String, String, String) {
        let (email, id) = self.create_user().await;
        let (access, refresh) = self.tokens_for(&email).await;
        (email, id, access, refresh)
    }

    pub async fn count(&self, collection: &str, filter: Document) -> u64 {
        self.store.count(collection, filter).await
    }

    pub async fn audit_actions(&self, user_id: &str) -> Vec<String> {
        let docs = self
            .store
            .find("audit_log", doc! {"user_id": user_id})
            .await;
        docs.iter()
            .map(|d| d.get_str("action").unwrap_or_default().to_string())
            .collect()
    }
}

/// Asserts the contract's error shape and returns the message.
pub async fn assert_error(response: Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status, "unexpected status");
    let body: Value = response.json().await.expect("error bodies are JSON");
    assert_eq!(body["success"], json!(false), "{body}");
    let message = body["error"].as_str().expect("error is a string");
    assert!(!message.is_empty());
    let code = body["error_code"].as_str().unwrap_or_default();
    assert!(
        !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
        "a snake_case error_code: {body}"
    );
    message.to_string()
}

/// Asserts a 401 with `WWW-Authenticate: Bearer` and returns the message.
pub async fn assert_unauthorized(response: Response) -> String {
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert_error(response, StatusCode::UNAUTHORIZED).await
}

pub const ADMIN_EMAIL: &str = "root@example.com";

/// The service with a bootstrap administrator; returns the app and an admin access token.
pub async fn spawn_app_with_admin(overrides: &[(&str, &str)]) -> (TestApp, String) {
    let mut all = vec![
        ("BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL),
        ("BOOTSTRAP_ADMIN_USERNAME", "root_admin"),
        ("BOOTSTRAP_ADMIN_PASSWORD", PASSWORD),
        // The admin and the user under test may each hold a few sessions.
        ("MAX_CONCURRENT_SESSIONS", "5"),
    ];
    all.extend_from_slice(overrides);
    let app = spawn_app_with(&all).await;
    let (admin, _) = app.tokens_for(ADMIN_EMAIL).await;
    (app, admin)
}

impl TestApp {
    pub async fn put_auth(&self, path: &str, token: &str, body: &Value) -> Response {
        self.client
            .put(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete_auth(&self, path: &str, token: &str) -> Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_auth(&self, path: &str, token: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }
}

/// Like [`spawn_app_with`], also handing back the service's state (its actors' mailboxes), for
/// tests that reach into an actor directly (fault injection).
#[cfg(feature = "fault-injection")]
pub async fn spawn_app_with_state(
    overrides: &[(&str, &str)],
) -> (
    TestApp,
    actix_web::web::Data<cs_user_management::state::AppState>,
) {
    init_logs();
    let iso = Isolation::new();
    let settings = Settings::load_from(&iso.env(overrides)).expect("test settings load");
    let app = Application::build(settings)
        .await
        .expect("the service starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    actix_web::rt::spawn(app.run_until_stopped());
    (TestApp::connect(address, &iso).await, state)
}

/// Runs `count` copies of `request` released at once; their statuses in order.
pub async fn at_once<F, Fut>(count: usize, request: F) -> Vec<StatusCode>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Response> + 'static,
{
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(count));
    let tasks = (0..count).map(|i| {
        let (barrier, request) = (std::sync::Arc::clone(&barrier), request(i));
        actix_web::rt::spawn(async move {
            barrier.wait().await;
            request.await.status()
        })
    });
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

pub fn count(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}
