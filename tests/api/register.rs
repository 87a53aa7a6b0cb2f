use mongodb::bson::doc;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, PASSWORD};

#[actix_web::test]
async fn register_returns_201_with_the_user_and_a_wallet() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = app.register("Ada_L", "  Ada@Example.COM ", PASSWORD).await;

    // Assert
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], json!(true));
    assert_eq!(body["message"], "User registered successfully");
    let user = &body["data"]["user"];
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["username"], "Ada_L");
    assert_eq!(user["status"], "active");
    assert_eq!(user["role"], "user");
    assert_eq!(user["login_count"], 0);
    assert_eq!(user["last_login_at"], Value::Null);
    assert!(user.get("password_hash").is_none());
    let id = user["_id"].as_str().unwrap();
    assert_eq!(id.len(), 24);
    let created = user["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 20, "{created}");
    let wallet = &body["data"]["wallet"];
    assert_eq!(wallet["user_id"], id);
    assert_eq!(wallet["balance"], 0);
    assert_eq!(wallet["currency"], "credits");
    assert_eq!(wallet["status"], "active");

    assert_eq!(app.count("users", doc! {}).await, 1);
    assert_eq!(app.count("wallets", doc! {"user_id": id}).await, 1);
    assert_eq!(app.audit_actions(id).await, vec!["user.register"]);
}

#[actix_web::test]
async fn the_initial_wallet_balance_is_configurable() {
    let app = crate::helpers::spawn_app_with(&[("WALLET_INITIAL_BALANCE", "250")]).await;

    let response = app.register("bal_user", "bal@example.com", PASSWORD).await;

    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["wallet"]["balance"], 250);
}

#[actix_web::test]
async fn fields_a_caller_may_not_set_are_ignored() {
    let app = spawn_app().await;

    let response = app
        .post_json(
            "/auth/register",
            &json!({"username": "mallory", "email": "m@example.com", "password": PASSWORD,
                    "role": "admin", "status": "suspended", "_id": "507f1f77bcf86cd799439011",
                    "login_count": 99, "password_hash": "$2b$04$x"}),
        )
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let user = &body["data"]["user"];
    assert_eq!(user["role"], "user");
    assert_eq!(user["status"], "active");
    assert_eq!(user["login_count"], 0);
    assert_ne!(user["_id"], "507f1f77bcf86cd799439011");
}

#[actix_web::test]
async fn a_duplicate_email_is_409_whatever_its_case() {
    let app = spawn_app().await;
    app.register("first_one", "dup@example.com", PASSWORD).await;

    let response = app
        .register("second_one", "DUP@Example.com", PASSWORD)
        .await;

    let message = assert_error(response, StatusCode::CONFLICT).await;
    assert!(message.to_lowercase().contains("email"), "{message}");
    assert_eq!(app.count("users", doc! {}).await, 1);
    assert_eq!(app.count("wallets", doc! {}).await, 1);
}

#[actix_web::test]
async fn a_duplicate_username_is_409_whatever_its_case() {
    let app = spawn_app().await;
    app.register("SameName", "one@example.com", PASSWORD).await;

    let response = app.register("samename", "two@example.com", PASSWORD).await;

    let message = assert_error(response, StatusCode::CONFLICT).await;
    assert!(message.to_lowercase().contains("username"), "{message}");
    assert_eq!(app.count("users", doc! {}).await, 1);
    assert_eq!(app.count("wallets", doc! {}).await, 1);
}

#[actix_web::test]
async fn invalid_fields_are_400_and_change_nothing() {
    let app = spawn_app().await;
    let cases = [
        ("ok_name", "not-an-email", PASSWORD, "email"),
        (
            "ok_name",
            &format!("{}@example.com", "a".repeat(250)),
            PASSWORD,
            "email",
        ),
        ("ab", "a@example.com", PASSWORD, "username"),
        (&"a".repeat(31), "a@example.com", PASSWORD, "username"),
        ("bad-name", "a@example.com", PASSWORD, "username"),
        ("ok_name", "a@example.com", "short", "password"),
        ("ok_name", "a@example.com", &"p".repeat(73), "password"),
        // 25 three-byte characters: only 25 characters but 75 bytes.
        ("ok_name", "a@example.com", &"€".repeat(25), "password"),
    ];
    for (username, email, password, field) in cases {
        let response = app.register(username, email, password).await;
        let message = assert_error(response, StatusCode::BAD_REQUEST).await;
        assert!(message.contains(field), "{field}: {message}");
    }
    assert_eq!(app.count("users", doc! {}).await, 0);
    assert_eq!(app.count("wallets", doc! {}).await, 0);
}

#[actix_web::test]
async fn a_72_byte_password_is_accepted_whole() {
    let app = spawn_app().await;
    let password = "p".repeat(72);
    app.register("long_pw", "long@example.com", &password).await;

    let response = app.login("long@example.com", &password).await;
    assert_eq!(response.status(), StatusCode::OK);
    // bcrypt sees all 72 bytes: changing the last one fails.
    let response = app
        .login("long@example.com", &format!("{}q", "p".repeat(71)))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn twenty_parallel_registrations_of_one_email_give_exactly_one_user_and_wallet() {
    let app = spawn_app().await;

    let attempts = (0..20).map(|i| {
        let app = &app;
        async move {
            app.register(&format!("racer_{i}"), "race@example.com", PASSWORD)
                .await
                .status()
        }
    });
    let statuses = futures::future::join_all(attempts).await;

    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let conflicts = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (1, 19), "{statuses:?}");
    assert_eq!(app.count("users", doc! {}).await, 1);
    assert_eq!(app.count("wallets", doc! {}).await, 1);
}

#[actix_web::test]
async fn parallel_registrations_of_one_username_give_exactly_one_user() {
    let app = spawn_app().await;

    let attempts = (0..10).map(|i| {
        let app = &app;
        async move {
            app.register("SameRacer", &format!("r{i}@example.com"), PASSWORD)
                .await
                .status()
        }
    });
    let statuses = futures::future::join_all(attempts).await;

    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{statuses:?}");
    assert_eq!(app.count("users", doc! {}).await, 1);
    assert_eq!(app.count("wallets", doc! {}).await, 1);
}
