use mongodb::bson::doc;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, assert_unauthorized, spawn_app, spawn_app_with, PASSWORD};

#[actix_web::test]
async fn login_returns_the_seed_shape_and_counts_the_login() {
    let app = spawn_app().await;
    let (email, id) = app.create_user().await;

    let response = app.login(&email, PASSWORD).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], json!(true));
    assert_eq!(body["message"], "Login successful");
    let data = &body["data"];
    assert_eq!(data["token_type"], "Bearer");
    assert_eq!(data["expires_in"], 1800);
    assert!(data["access_token"].as_str().unwrap().split('.').count() == 3);
    assert!(data["refresh_token"].as_str().unwrap().split('.').count() == 3);
    assert_eq!(data["user"]["_id"], id.as_str());
    assert_eq!(data["user"]["login_count"], 1);
    assert!(data["user"]["last_login_at"].is_string());
    assert!(data["user"].get("password_hash").is_none());

    let stored = app
        .store
        .find_one("users", doc! {"email": &email})
        .await
        .unwrap();
    assert_eq!(stored.get_i64("login_count").unwrap(), 1);
    // A BSON date on MongoDB, epoch milliseconds on SQLite: set, either way.
    assert!(
        stored.get_datetime("last_login_at").is_ok() || stored.get_i64("last_login_at").is_ok()
    );
    assert!(app
        .audit_actions(&id)
        .await
        .contains(&"auth.login.success".to_string()));
}

#[actix_web::test]
async fn the_email_is_matched_case_insensitively() {
    let app = spawn_app().await;
    let (email, _) = app.create_user().await;

    let response = app.login(&email.to_uppercase(), PASSWORD).await;

    assert_eq!(response.status(), StatusCode::OK);
}

#[actix_web::test]
async fn unknown_email_and_wrong_password_get_the_same_401() {
    let app = spawn_app().await;
    let (email, id) = app.create_user().await;

    let wrong_password = assert_unauthorized(app.login(&email, "wrong-password-1").await).await;
    let unknown = assert_unauthorized(app.login("nobody@example.com", PASSWORD).await).await;

    assert_eq!(wrong_password, "Invalid email or password");
    assert_eq!(unknown, wrong_password);
    assert!(app
        .audit_actions(&id)
        .await
        .contains(&"auth.login.failure".to_string()));
    assert_eq!(
        app.count(
            "audit_log",
            doc! {"action": "auth.login.failure", "email": "nobody@example.com"}
        )
        .await,
        1
    );
}

#[actix_web::test]
async fn a_correct_password_for_a_non_active_account_is_403() {
    let app = spawn_app().await;
    for status in ["suspended", "inactive"] {
        let (email, _) = app.create_user().await;
        app.store
            .set("users", doc! {"email": &email}, doc! {"status": status})
            .await;

        let message = assert_error(app.login(&email, PASSWORD).await, StatusCode::FORBIDDEN).await;

        assert!(message.contains(status), "{message}");
    }
}

#[actix_web::test]
async fn more_than_the_allowed_failures_lock_the_email_with_429_and_retry_after() {
    let app = spawn_app().await;
    let (email, _) = app.create_user().await;
    for _ in 0..5 {
        assert_unauthorized(app.login(&email, "wrong-password-1").await).await;
    }

    // Even the right password is refused while locked.
    let response = app.login(&email, PASSWORD).await;

    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry_after > 0 && retry_after <= 900, "{retry_after}");
    assert_error(response, StatusCode::TOO_MANY_REQUESTS).await;
}

#[actix_web::test]
async fn the_lockout_ends_with_its_window() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES", "2"), ("LOGIN_FAILURE_WINDOW", "1")]).await;
    let (email, _) = app.create_user().await;
    for _ in 0..2 {
        app.login(&email, "wrong-password-1").await;
    }
    assert_eq!(
        app.login(&email, PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;

    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn a_successful_login_resets_the_failure_count() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES", "3")]).await;
    let (email, _) = app.create_user().await;
    for _ in 0..2 {
        app.login(&email, "wrong-password-1").await;
    }
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);

    for _ in 0..2 {
        app.login(&email, "wrong-password-1").await;
    }

    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn a_login_upgrades_a_hash_of_another_cost_or_prefix_and_ends_no_session() {
    let app = spawn_app_with(&[("BCRYPT_COST", "5"), ("MAX_CONCURRENT_SESSIONS", "5")]).await;
    let (email, id) = app.create_user().await;
    let filter = doc! {"_id": mongodb::bson::oid::ObjectId::parse_str(&id).unwrap()};
    let older = bcrypt::hash_with_result(PASSWORD, 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoA);
    app.store
        .set("users", filter.clone(), doc! {"password_hash": &older})
        .await;

    let (first, _) = app.tokens_for(&email).await;

    let mut stored = String::new();
    for _ in 0..50 {
        let user = app.store.find_one("users", filter.clone()).await.unwrap();
        stored = user.get_str("password_hash").unwrap().to_string();
        if stored.starts_with("$2b$05$") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(stored.starts_with("$2b$05$"), "{stored}");
    // A rehash is not a password change: the session goes on, the password still works.
    assert_eq!(app.me(&first).await.status(), StatusCode::OK);
    let (second, _) = app.tokens_for(&email).await;
    assert_eq!(app.me(&first).await.status(), StatusCode::OK);
    assert_eq!(app.me(&second).await.status(), StatusCode::OK);
}
