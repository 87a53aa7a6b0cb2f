//! The command line on the service binary: --version, check-config, migrate, create-admin,
//! healthcheck.
use std::collections::HashMap;
use std::process::{Command, Output, Stdio};

use mongodb::bson::doc;
use reqwest::StatusCode;

use crate::helpers::{spawn_app, Isolation, TestApp, PASSWORD};

/// Runs the binary with exactly this environment (plus PATH), bounded by a timeout.
pub fn run(args: &[&str], env: &HashMap<String, String>) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_cs-user-management"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs")
}

#[test]
fn version_prints_the_crate_version() {
    let out = run(&["--version"], &HashMap::new());

    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
}

#[test]
fn check_config_prints_the_resolved_configuration_with_secrets_masked() {
    let env = Isolation::new().env(&[
        ("MONGODB_URI", "mongodb://app:hunter22@db:27017/x"),
        ("REDIS_PASSWORD", "redis-secret-9"),
        ("MAX_CONCURRENT_SESSIONS", "7"),
    ]);

    let out = run(&["check-config"], &env);

    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(json["sessions"]["max_concurrent_sessions"], 7);
    assert_eq!(json["jwt"]["secret_key"], "***");
    for secret in [crate::helpers::TEST_SECRET, "hunter22", "redis-secret-9"] {
        assert!(!text.contains(secret), "leaked {secret}");
    }
}

#[test]
fn check_config_exits_non_zero_on_a_bad_setting_naming_it() {
    let env = Isolation::new().env(&[("SESSION_LIMIT_POLICY", "sometimes")]);

    let out = run(&["check-config"], &env);

    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SESSION_LIMIT_POLICY"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[actix_web::test]
async fn migrate_creates_the_indexes() {
    let iso = Isolation::new();

    let out = run(&["migrate"], &iso.env(&[]));

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = TestApp::connect(String::new(), &iso).await;
    let names = app.store.index_names("users").await;
    for index in [
        "email_key_unique",
        "username_ci_unique",
        "status",
        "created_at",
    ] {
        assert!(names.iter().any(|n| n == index), "{index} in {names:?}");
    }
}

#[actix_web::test]
async fn create_admin_makes_an_administrator_who_can_sign_in() {
    let iso = Isolation::new();
    let mut env = iso.env(&[]);
    env.insert("ADMIN_PASSWORD".into(), PASSWORD.into());

    let out = run(
        &[
            "create-admin",
            "--email",
            "Ops@Example.com",
            "--username",
            "ops_admin",
        ],
        &env,
    );
    let again = run(
        &[
            "create-admin",
            "--email",
            "ops@example.com",
            "--username",
            "ops_admin",
        ],
        &env,
    );

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!again.status.success());
    let app = TestApp::connect(String::new(), &iso).await;
    let admin = app
        .store
        .find_one("users", doc! {"email": "ops@example.com"})
        .await
        .expect("created");
    assert_eq!(admin.get_str("role").unwrap(), "admin");
    assert_eq!(app.count("wallets", doc! {}).await, 1);
}

#[actix_web::test]
async fn healthcheck_succeeds_against_a_live_service_and_fails_without_one() {
    let app = spawn_app().await;
    let port = app.address.rsplit(':').next().unwrap().to_string();
    let iso = Isolation::new();
    assert_eq!(
        app.client
            .get(app.url("/health/live"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    let ok = run(&["healthcheck"], &iso.env(&[("PORT", &port)]));
    let closed = run(&["healthcheck"], &iso.env(&[("PORT", "1")]));

    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(!closed.status.success());
}

#[actix_web::test]
async fn migrate_dry_run_purges_no_audit_entry() {
    if !crate::helpers::embedded() {
        // On MongoDB the retention is a TTL index, which the server applies by itself.
        eprintln!("not applicable: MongoDB's TTL monitor, not the service, expires entries");
        return;
    }
    let iso = Isolation::new();
    let app = crate::helpers::spawn_app_in(&iso, &[]).await;
    let (_, id) = app.create_user().await;
    let long_ago = chrono::Utc::now().timestamp_millis() - 400 * 86_400_000;
    app.store
        .set(
            "audit_log",
            mongodb::bson::doc! {"user_id": &id},
            mongodb::bson::doc! {"at": long_ago},
        )
        .await;
    let before = app.count("audit_log", mongodb::bson::doc! {}).await;

    let out = run(
        &["migrate", "--dry-run"],
        &iso.env(&[("AUDIT_RETENTION_DAYS", "90")]),
    );

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(app.count("audit_log", mongodb::bson::doc! {}).await, before);
}
