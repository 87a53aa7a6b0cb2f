//! Sharing one database with the seed's Python service: password hashes each side can verify,
//! and users and wallets the seed wrote work here.
use std::process::Command;

use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{needs_servers, spawn_app, PASSWORD};

/// The Python interpreter with `bcrypt` installed: `TEST_PYTHON`, else the repo's `.venv`.
fn python() -> String {
    std::env::var("TEST_PYTHON")
        .unwrap_or_else(|_| format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR")))
}

/// Whether Python's `bcrypt.checkpw` accepts `password` for `hash`.
fn python_checkpw(password: &str, hash: &str) -> bool {
    let status = Command::new(python())
        .args([
            "-c",
            "import bcrypt,sys; \
             sys.exit(0 if bcrypt.checkpw(sys.argv[1].encode(), sys.argv[2].encode()) else 1)",
            password,
            hash,
        ])
        .status()
        .expect("TEST_PYTHON runs");
    match status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("python bcrypt check failed to run: {other:?}"),
    }
}

/// A hash made the way the seed's service made them.
fn python_hashpw(password: &str) -> String {
    let output = Command::new(python())
        .args([
            "-c",
            "import bcrypt,sys; \
             print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(rounds=4)).decode())",
            password,
        ])
        .output()
        .expect("TEST_PYTHON runs");
    assert!(output.status.success(), "python bcrypt.hashpw failed");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[actix_web::test]
async fn a_stored_password_hash_is_bcrypt_2b_that_python_verifies() {
    let app = spawn_app().await;
    let (email, _) = app.create_user().await;

    let stored = app
        .store
        .find_one("users", doc! {"email": &email})
        .await
        .unwrap();
    let hash = stored.get_str("password_hash").unwrap();

    assert!(hash.starts_with("$2b$"), "{hash}");
    assert!(python_checkpw(PASSWORD, hash));
    assert!(!python_checkpw("not-the-password", hash));
}

#[actix_web::test]
async fn a_user_and_wallet_written_by_the_seed_service_can_log_in_and_see_the_wallet() {
    if !needs_servers("the seed's data is MongoDB documents") {
        return;
    }
    let app = spawn_app().await;
    let id = ObjectId::new();
    let email = format!("seed_{}@example.com", &id.to_hex()[16..]);
    let now = DateTime::now();
    let db = app.store.mongo();
    db.collection::<Document>("users")
        .insert_one(doc! {
            "_id": id,
            "email": &email,
            "username": format!("Seed_{}", &id.to_hex()[16..]),
            "password_hash": python_hashpw(PASSWORD),
            "status": "active",
            "created_at": now,
            "updated_at": now,
        })
        .await
        .unwrap();
    db.collection::<Document>("wallets")
        .insert_one(doc! {"user_id": id.to_hex(), "balance": 1500, "currency": "credits"})
        .await
        .unwrap();

    let login = app.login(&email, PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    let login: Value = login.json().await.unwrap();
    let access = login["data"]["access_token"].as_str().unwrap();
    let me = app.me(access).await;

    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    let (user, wallet) = (&me["data"]["user"], &me["data"]["wallet"]);
    assert_eq!(user["_id"], id.to_hex().as_str());
    assert_eq!(user["email"], email.as_str());
    assert_eq!(user["role"], "user");
    assert_eq!(user["status"], "active");
    assert_eq!(user["login_count"], 1);
    assert_eq!(wallet["user_id"], id.to_hex().as_str());
    assert_eq!(wallet["balance"], 1500);
    assert_eq!(wallet["currency"], "credits");
}
