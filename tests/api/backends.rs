//! The backends themselves: the binary with nothing configured runs on the embedded store in
//! `./data`, and the mixed pairs (embedded storage with Redis, MongoDB with embedded tokens) work.
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::process::Command;

use crate::helpers::{
    assert_unauthorized, free_port, needs_servers, spawn_app_with, ScratchDir, TestApp, PASSWORD,
};

#[actix_web::test]
async fn with_nothing_configured_the_binary_serves_the_api_from_the_data_directory() {
    // Arrange: the binary with an empty environment (PATH and a port only), in a fresh directory.
    let scratch = ScratchDir::new("zero-config");
    let port = free_port();
    let log = std::fs::File::create(scratch.join("service.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cs-user-management"))
        .current_dir(&scratch.0)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", port.to_string())
        .env("BCRYPT_COST", "4")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let mut health = None;
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{base}/health")).send().await {
            health = Some(r.json::<Value>().await.unwrap());
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the service exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = health.expect("the service answers /health within 30 s");

    // Act: the whole flow.
    let app = TestApp {
        address: base,
        client,
        store: crate::helpers::Backdoor::Sqlite(scratch.join("data/users.db")),
    };
    let (email, id) = app.create_user().await;
    let (access, _) = app.tokens_for(&email).await;
    let me = app.me(&access).await;
    let logout = app.logout(&access).await;
    let after = app.me(&access).await;

    // Assert
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(
        health["dependencies"],
        serde_json::json!(["sqlite", "sqlite_sessions"])
    );
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(logout.status(), StatusCode::OK);
    assert_unauthorized(after).await;
    assert_eq!(
        app.audit_actions(&id).await.len(),
        3,
        "register, login, logout"
    );
    let data = scratch.join("data");
    for file in ["users.db", "sessions.db", "jwt_secret"] {
        assert!(data.join(file).is_file(), "{file} in ./data");
    }
    for secret in ["jwt_secret", "users.db", "sessions.db"] {
        assert_eq!(secret_mode(&data.join(secret)), 0o600, "{secret}");
    }
    let log = std::fs::read_to_string(scratch.join("service.log")).unwrap_or_default();
    assert!(
        log.contains("JWT_SECRET_KEY is not set"),
        "a warning: {log}"
    );
    let _ = child.kill().await;
}

fn secret_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Register, sign in, read the profile, log out: the token dies at once.
async fn the_whole_flow_works(app: &TestApp) {
    let (email, _) = app.create_user().await;
    let (access, refresh) = app.tokens_for(&email).await;
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);
    let rotated: Value = app.refresh(&refresh).await.json().await.unwrap();
    let access = rotated["data"]["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);
    assert_eq!(app.logout(&access).await.status(), StatusCode::OK);
    assert_unauthorized(app.me(&access).await).await;
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
}

async fn dependencies(app: &TestApp) -> Value {
    app.get_json("/health").await["dependencies"].clone()
}

#[actix_web::test]
async fn embedded_storage_with_redis_tokens_works() {
    if !needs_servers("it pairs the embedded store with Redis") {
        return;
    }
    let app = spawn_app_with(&[("STORAGE_BACKEND", "embedded")]).await;
    assert_eq!(
        dependencies(&app).await,
        serde_json::json!(["sqlite", "redis"])
    );
    the_whole_flow_works(&app).await;
}

#[actix_web::test]
async fn mongodb_storage_with_embedded_tokens_works() {
    if !needs_servers("it pairs MongoDB with the embedded token store") {
        return;
    }
    let app = spawn_app_with(&[("TOKENS_BACKEND", "embedded")]).await;
    assert_eq!(
        dependencies(&app).await,
        serde_json::json!(["mongodb", "sqlite_sessions"])
    );
    the_whole_flow_works(&app).await;
}
