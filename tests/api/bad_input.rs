//! Bad input of every kind gets the contract's status and error shape, changes nothing, and is
//! never a 500.
use mongodb::bson::doc;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app, PASSWORD};

const BODY_ENDPOINTS: [&str; 3] = ["/auth/register", "/auth/login", "/auth/refresh"];

#[actix_web::test]
async fn malformed_bodies_are_400_on_every_json_endpoint() {
    let app = spawn_app().await;
    let bodies: [&[u8]; 8] = [
        b"{not json",
        b"[1, 2, 3]",
        b"\"a string\"",
        b"",
        b"null",
        b"42",
        b"{}",
        b"\xff\xfe\x00",
    ];
    for path in BODY_ENDPOINTS {
        for body in bodies {
            let response = app.post_raw(path, body.to_vec()).await;
            let message = assert_error(response, StatusCode::BAD_REQUEST).await;
            assert!(!message.contains("panic"), "{path}: {message}");
        }
    }
    assert_eq!(app.count("users", doc! {}).await, 0);
}

#[actix_web::test]
async fn wrong_json_types_are_400_never_a_query() {
    let app = spawn_app().await;
    let (email, _) = app.create_user().await;
    let cases = [
        (
            "/auth/login",
            json!({"email": {"$ne": null}, "password": PASSWORD}),
        ),
        (
            "/auth/login",
            json!({"email": email, "password": {"$gt": ""}}),
        ),
        (
            "/auth/login",
            json!({"email": ["a@b.co"], "password": PASSWORD}),
        ),
        ("/auth/login", json!({"email": 12, "password": PASSWORD})),
        (
            "/auth/register",
            json!({"username": {"$ne": null}, "email": "x@example.com", "password": PASSWORD}),
        ),
        (
            "/auth/register",
            json!({"username": "okname", "email": true, "password": PASSWORD}),
        ),
        (
            "/auth/register",
            json!({"username": "okname", "email": "x@example.com", "password": 12345678}),
        ),
        (
            "/auth/register",
            json!({"username": "okname", "email": "x@example.com"}),
        ),
        ("/auth/refresh", json!({"refresh_token": {"$ne": null}})),
        ("/auth/refresh", json!({"refresh_token": ""})),
        ("/auth/refresh", json!({"token": "x"})),
    ];
    for (path, body) in cases {
        let response = app.post_json(path, &body).await;
        assert_error(response, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(app.count("users", doc! {}).await, 1);
    assert_eq!(
        app.count("audit_log", doc! {"action": "auth.login.success"})
            .await,
        0
    );
}

#[actix_web::test]
async fn a_70_kib_body_is_413() {
    let app = spawn_app().await;
    let big = json!({"username": "big_one", "email": "big@example.com", "password": PASSWORD,
                     "padding": "x".repeat(70 * 1024)});
    for path in BODY_ENDPOINTS {
        let response = app.post_json(path, &big).await;
        assert_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    }
    assert_eq!(app.count("users", doc! {}).await, 0);
}

#[actix_web::test]
async fn a_73_byte_password_is_400_at_login_too() {
    let app = spawn_app().await;
    let (email, _) = app.create_user().await;

    let response = app.login(&email, &"p".repeat(73)).await;

    let message = assert_error(response, StatusCode::BAD_REQUEST).await;
    assert!(message.contains("72"), "{message}");
}

#[actix_web::test]
async fn unknown_routes_are_404_in_the_error_shape() {
    let app = spawn_app().await;

    let response = app
        .client
        .get(app.url("/no/such/thing"))
        .send()
        .await
        .unwrap();

    assert_error(response, StatusCode::NOT_FOUND).await;
}

#[actix_web::test]
async fn a_wrong_method_is_405_with_allow_in_the_error_shape() {
    let app = spawn_app().await;

    for (path, allow) in [
        ("/auth/login", "POST"),
        ("/auth/me", "GET"),
        ("/health/live", "GET"),
        ("/users/search", "POST"),
        ("/auth/507f1f77bcf86cd799439011", "PUT, DELETE"),
    ] {
        let response = app.client.patch(app.url(path)).send().await.unwrap();
        assert_eq!(
            response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok()),
            Some(allow)
        );
        assert_error(response, StatusCode::METHOD_NOT_ALLOWED).await;
    }
}

#[actix_web::test]
async fn an_update_with_a_bad_body_and_a_bad_id_is_refused_for_its_body() {
    // Arrange
    let app = spawn_app().await;
    let (email, _) = app.create_user().await;
    let (token, _) = app.tokens_for(&email).await;

    // Act: a malformed body, to an id that is none.
    let response = app
        .client
        .put(app.url("/auth/not-an-id"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();

    // Assert: the body is judged first, as it always was.
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error_code"], "malformed_request", "{body}");
}
