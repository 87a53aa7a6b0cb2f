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

/// A name that looks like a setting but is none stops start-up (exit 2) naming it and the
/// setting probably meant; so does a Redis setting without the Redis address. Variables a
/// container platform sets for a linked service named `redis` are not settings and pass.
#[test]
fn check_config_refuses_mistyped_setting_names_naming_the_one_meant() {
    for (name, value, meant) in [
        ("APP__SERVR__PORT", "9000", "APP__SERVER__PORT"),
        (
            "JWT_SECRET",
            "a-secret-meant-for-jwt-secret-key-0123",
            "JWT_SECRET_KEY",
        ),
        ("MONGO_URI", "mongodb://127.0.0.1:1", "MONGODB_URI"),
        ("LOGIN_MAX_FAILURE", "3", "LOGIN_MAX_FAILURES"),
    ] {
        let out = run(&["check-config"], &Isolation::new().env(&[(name, value)]));

        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(name) && err.contains(meant), "{name}: {err}");
    }
    let mut env = Isolation::new().env(&[("REDIS_PORT", "6380")]);
    for name in ["REDIS_HOST", "TOKENS_BACKEND", "REDIS_KEY_PREFIX"] {
        env.remove(name);
    }
    let out = run(&["check-config"], &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("REDIS_PORT") && err.contains("REDIS_HOST"),
        "{err}"
    );

    let linked = Isolation::new().env(&[
        ("REDIS_SERVICE_HOST", "10.0.0.7"),
        ("REDIS_PORT_6379_TCP", "tcp://10.0.0.7:6379"),
        ("RUST_LOG", "info"),
    ]);
    let out = run(&["check-config"], &linked);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// What a dry run may touch: every file of an embedded data directory (name and content), or
/// every document and index of every collection of the MongoDB database.
async fn snapshot(iso: &Isolation, app: &TestApp) -> Vec<String> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    match &app.store {
        crate::helpers::Backdoor::Sqlite(_) => {
            let mut files: Vec<String> = std::fs::read_dir(&iso.data_dir)
                .map(|dir| {
                    dir.flatten()
                        .map(|f| {
                            let bytes = std::fs::read(f.path()).unwrap_or_default();
                            let mut hash = DefaultHasher::new();
                            bytes.hash(&mut hash);
                            let name = f.file_name().to_string_lossy().to_string();
                            format!("{name} {} bytes {:x}", bytes.len(), hash.finish())
                        })
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            files
        }
        crate::helpers::Backdoor::Mongo(db) => {
            use futures::TryStreamExt;
            let mut seen = Vec::new();
            let mut names = db.list_collection_names().await.unwrap();
            names.sort();
            for name in names {
                let collection = db.collection::<mongodb::bson::Document>(&name);
                let indexes: Vec<_> = collection
                    .list_indexes()
                    .await
                    .unwrap()
                    .try_collect()
                    .await
                    .unwrap();
                seen.push(format!("{name} indexes {indexes:?}"));
                let documents: Vec<_> = collection
                    .find(doc! {})
                    .sort(doc! {"_id": 1})
                    .await
                    .unwrap()
                    .try_collect()
                    .await
                    .unwrap();
                seen.push(format!("{name} documents {documents:?}"));
            }
            seen
        }
    }
}

/// `migrate --dry-run` reads only: on a store with audit entries aged past the retention, it
/// announces the purge with its count and every byte (embedded: every file of the data
/// directory; MongoDB: every document and index) is as it was.
#[actix_web::test]
async fn migrate_dry_run_announces_the_purge_and_changes_nothing() {
    let iso = Isolation::new();
    // The service that wrote the data keeps everything (no retention of its own).
    let app = crate::helpers::spawn_app_in(&iso, &[("AUDIT_RETENTION_DAYS", "0")]).await;
    let long_ago = chrono::Utc::now().timestamp_millis() - 400 * 86_400_000;
    let at = if crate::helpers::embedded() {
        mongodb::bson::Bson::Int64(long_ago)
    } else {
        mongodb::bson::Bson::DateTime(mongodb::bson::DateTime::from_millis(long_ago))
    };
    for _ in 0..3 {
        let (_, id) = app.create_user().await;
        app.store
            .set("audit_log", doc! {"user_id": &id}, doc! {"at": at.clone()})
            .await;
    }
    app.create_user().await;
    let aged = app.count("audit_log", doc! {"at": at}).await;
    assert!(aged >= 3, "{aged} audit entries aged");
    assert!(
        app.count("audit_log", doc! {}).await > aged,
        "recent entries too"
    );
    // Embedded: an operator's copy of the store, as a stopped service leaves it (one file, no
    // write-ahead log): the service above keeps its own open.
    let (iso, copy) = if let crate::helpers::Backdoor::Sqlite(path) = &app.store {
        let copy = Isolation::new();
        std::fs::create_dir_all(&copy.data_dir).unwrap();
        let to = copy.data_dir.join("users.db");
        rusqlite::Connection::open(path)
            .and_then(|c| c.execute("VACUUM INTO ?", [to.display().to_string()]))
            .expect("the store copied");
        let copied = crate::helpers::TestApp::connect(app.address.clone(), &copy).await;
        (copy, copied)
    } else {
        (iso, app)
    };
    let before = snapshot(&iso, &copy).await;

    let out = run(
        &["migrate", "--dry-run"],
        &iso.env(&[("AUDIT_RETENTION_DAYS", "90")]),
    );

    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!(
            "would remove {aged} audit entries older than 90 days"
        )),
        "{said}"
    );
    assert_eq!(snapshot(&iso, &copy).await, before, "{said}");
}

/// A database an earlier version made has single-field search key indexes: `migrate
/// --dry-run` announces their replacement by the `…_slot` indexes (which bound a search's
/// reads by slot) and changes nothing; `migrate` makes the new ones and drops the old.
#[actix_web::test]
async fn migrate_replaces_the_search_key_indexes_of_earlier_versions() {
    if !crate::helpers::needs_servers("the search key indexes are MongoDB's") {
        return;
    }
    let iso = Isolation::new();
    let made = run(&["migrate"], &iso.env(&[]));
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let app = TestApp::connect(String::new(), &iso).await;
    let users = app
        .store
        .mongo()
        .collection::<mongodb::bson::Document>("users");
    const FIELDS: [&str; 2] = ["username_keys", "email_keys"];
    for field in FIELDS {
        users.drop_index(format!("{field}_slot")).await.unwrap();
        let earlier = mongodb::IndexModel::builder()
            .keys(doc! {field: 1})
            .options(
                mongodb::options::IndexOptions::builder()
                    .name(field.to_string())
                    .build(),
            )
            .build();
        users.create_index(earlier).await.unwrap();
    }
    let before = app.store.index_names("users").await;

    let dry_run = run(&["migrate", "--dry-run"], &iso.env(&[]));

    let said = String::from_utf8_lossy(&dry_run.stdout);
    assert!(dry_run.status.success(), "{said}");
    for field in FIELDS {
        for step in [
            format!("would create index users.{field}_slot"),
            format!("would drop index users.{field} (users.{field}_slot serves its searches)"),
        ] {
            assert!(said.contains(&step), "{step} in {said}");
        }
    }
    assert_eq!(app.store.index_names("users").await, before, "{said}");

    let migrated = run(&["migrate"], &iso.env(&[]));

    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let names = app.store.index_names("users").await;
    for field in FIELDS {
        assert!(names.contains(&format!("{field}_slot")), "{names:?}");
        assert!(!names.iter().any(|n| n == field), "{names:?}");
    }
}

/// A dry run where no store exists yet says it would make one, and makes nothing.
#[test]
fn migrate_dry_run_on_a_new_data_directory_creates_nothing() {
    if !crate::helpers::embedded() {
        eprintln!("not applicable: a MongoDB database is made by its first write");
        return;
    }
    let iso = Isolation::new();

    let out = run(&["migrate", "--dry-run"], &iso.env(&[]));

    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("would create"), "{said}");
    assert!(!iso.data_dir.exists(), "{said}");
}
