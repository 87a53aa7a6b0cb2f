//! Spawning the service for a test, and one helper per endpoint.
use std::collections::HashMap;
use std::time::Duration;

use cs_user_management::configuration::Settings;
use cs_user_management::startup::Application;
use mongodb::bson::{doc, Document};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

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

/// A fresh database name and Redis prefix, and the environment that points the service at them.
pub struct Isolation {
    pub db_name: String,
    pub prefix: String,
}

impl Isolation {
    pub fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            db_name: format!("test_{}", &id[..16]),
            prefix: format!("test:{}:", &id[..16]),
        }
    }

    pub fn env(&self, overrides: &[(&str, &str)]) -> HashMap<String, String> {
        let mut env: HashMap<String, String> = [
            ("APP_ENV", "test".to_string()),
            ("HOST", "127.0.0.1".to_string()),
            ("PORT", "0".to_string()),
            ("SERVER_WORKERS", "2".to_string()),
            (
                "MONGODB_URI",
                format!(
                    "{}/{}?directConnection=true&serverSelectionTimeoutMS=5000",
                    mongo_base(),
                    self.db_name
                ),
            ),
            ("REDIS_HOST", redis_host()),
            ("REDIS_PORT", redis_port().to_string()),
            ("REDIS_KEY_PREFIX", self.prefix.clone()),
            ("JWT_SECRET_KEY", TEST_SECRET.to_string()),
            ("BCRYPT_COST", "4".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in overrides {
            env.insert(k.to_string(), v.to_string());
        }
        env
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: mongodb::Database,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the service in this test's actix system with extra settings (seed variable names).
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    init_logs();
    let iso = Isolation::new();
    let settings = Settings::load_from(&iso.env(overrides)).expect("test settings load");
    let app = Application::build(settings)
        .await
        .expect("the service starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp::connect(address, &iso).await
}

fn init_logs() {
    if std::env::var("TEST_LOG").is_ok() {
        cs_user_management::telemetry::init();
    }
}

impl TestApp {
    /// A client for a service already running at `address` with the given isolation.
    pub async fn connect(address: String, iso: &Isolation) -> TestApp {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mongo =
            mongodb::Client::with_uri_str(format!("{}/?directConnection=true", mongo_base()))
                .await
                .unwrap();
        TestApp {
            address,
            client,
            db: mongo.database(&iso.db_name),
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
        self.db
            .collection::<Document>(collection)
            .count_documents(filter)
            .await
            .unwrap()
    }

    pub async fn audit_actions(&self, user_id: &str) -> Vec<String> {
        use futures::TryStreamExt;
        let cursor = self
            .db
            .collection::<Document>("audit_log")
            .find(doc! {"user_id": user_id})
            .await
            .unwrap();
        let docs: Vec<Document> = cursor.try_collect().await.unwrap();
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
pub async fn spawn_app_with_state(
    overrides: &[(&str, &str)],
) -> (
    TestApp,
    actix_web::web::Data<cs_user_management::startup::AppState>,
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
