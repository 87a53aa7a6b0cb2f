//! `/health`, `/health/live`, `/health/ready`: their shape, what a dependency outage does to them
//! and to requests, and start-up refusing a bad configuration.
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};
use serde_json::Value;

use crate::helpers::{assert_error, free_port, spawn_app, spawn_app_with, PASSWORD};

const ACTORS: [&str; 5] = ["account", "db_queue", "token", "session", "hasher"];
const ACTOR_FIGURES: [&str; 10] = [
    "alive",
    "mailbox_len",
    "mailbox_capacity",
    "in_flight",
    "processed_total",
    "failed_total",
    "rejected_total",
    "restarts",
    "p50_ms",
    "p99_ms",
];

/// A port nobody listens on.
fn sorted_keys(object: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = object
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

async fn get(app: &crate::helpers::TestApp, path: &str) -> Response {
    app.client.get(app.url(path)).send().await.unwrap()
}

#[actix_web::test]
async fn health_reports_the_dependencies_the_queue_and_every_actor() {
    let app = spawn_app().await;

    let response = get(&app, "/health").await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "healthy", "{body}");
    assert_eq!(
        body["dependencies"],
        serde_json::json!(crate::helpers::dependency_names())
    );
    let queue = &body["details"]["database_queue"];
    assert_eq!(
        sorted_keys(queue),
        [
            "pending_results",
            "queue_enabled",
            "queue_size",
            "worker_alive"
        ]
    );
    assert!(queue["queue_size"].is_u64());
    assert_eq!(queue["worker_alive"], true);
    assert_eq!(queue["queue_enabled"], true);
    assert!(queue["pending_results"].is_u64());
    for actor in ACTORS {
        let figures = &body["details"]["actors"][actor];
        for figure in ACTOR_FIGURES {
            assert!(figures.get(figure).is_some(), "{actor}.{figure}: {body}");
        }
        assert_eq!(figures["alive"], true, "{actor}");
        assert!(figures["mailbox_capacity"].as_u64().unwrap() > 0, "{actor}");
        assert!(figures["p50_ms"].is_number() && figures["p99_ms"].is_number());
    }
}

#[actix_web::test]
async fn live_and_ready_are_200_when_the_dependencies_are_up() {
    let app = spawn_app().await;

    let live = get(&app, "/health/live").await;
    let ready = get(&app, "/health/ready").await;

    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(ready.status(), StatusCode::OK);
}

#[actix_web::test]
async fn with_redis_down_the_service_starts_reports_unhealthy_and_answers_503() {
    if !crate::helpers::needs_servers("it stops Redis") {
        return;
    }
    let port = free_port().to_string();
    let app = spawn_app_with(&[("REDIS_PORT", port.as_str()), ("REDIS_TIMEOUT_MS", "300")]).await;
    // Registration needs only MongoDB.
    let (email, _) = app.create_user().await;

    let health = get(&app, "/health").await;
    let ready = get(&app, "/health/ready").await;
    let live = get(&app, "/health/live").await;
    let login = app.login(&email, PASSWORD).await;

    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "unhealthy", "{body}");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(live.status(), StatusCode::OK);
    assert!(
        login
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some(),
        "a 503 carries Retry-After"
    );
    assert_error(login, StatusCode::SERVICE_UNAVAILABLE).await;
}

/// Runs the binary with `env` on top of this process's environment minus `JWT_SECRET_KEY`;
/// returns its exit code (None if killed after the deadline) and its stderr.
async fn run_binary(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cs-user-management"))
        .env_remove("JWT_SECRET_KEY")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the service binary starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.and_then(|s| s.code()), stderr)
}

#[actix_web::test]
async fn production_refuses_to_start_without_a_long_enough_jwt_secret() {
    let base = [
        ("APP_ENV", "production"),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
    ];
    let short = [base.as_slice(), &[("JWT_SECRET_KEY", "0123456789")]].concat();

    for env in [base.as_slice(), short.as_slice()] {
        let (code, stderr) = run_binary(env).await;

        assert!(
            code.is_some_and(|c| c != 0),
            "exits non-zero within the deadline: {code:?}, {stderr}"
        );
        assert!(stderr.contains("JWT_SECRET_KEY"), "{stderr}");
        assert!(stderr.trim().lines().count() <= 2, "{stderr}");
        assert!(!stderr.contains("0123456789"), "the secret is not echoed");
    }
}

#[actix_web::test]
async fn a_bcrypt_kernel_the_cpu_cannot_run_stops_start_up_with_one_line() {
    let data = std::env::temp_dir().join(format!("cs-um-kernel-{}", std::process::id()));
    let data_dir = data.to_string_lossy().into_owned();
    let env = [
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("STORAGE_BACKEND", "embedded"),
        ("TOKENS_BACKEND", "embedded"),
        ("DATA_DIR", data_dir.as_str()),
        ("BCRYPT_FORCE_BACKEND", "no-such-kernel"),
        ("RUST_BACKTRACE", "1"),
    ];

    let (code, stderr) = run_binary(&env).await;
    let _ = std::fs::remove_dir_all(&data);

    assert!(
        code.is_some_and(|c| c != 0),
        "exits non-zero within the deadline: {code:?}, {stderr}"
    );
    assert!(stderr.contains("BCRYPT_FORCE_BACKEND"), "{stderr}");
    assert!(!stderr.contains("panicked"), "no panic message: {stderr}");
    assert!(
        !stderr.contains("stack backtrace"),
        "no backtrace: {stderr}"
    );
}
