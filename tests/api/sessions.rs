//! Sessions: the concurrent-session limit (evict or reject), the idle timeout, the periodic
//! sweep, and logout.
use std::time::Duration;

use mongodb::bson::doc;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, assert_unauthorized, spawn_app, spawn_app_with, PASSWORD};

fn mentions(message: &str, words: &str) -> bool {
    message.to_lowercase().contains(words)
}

#[actix_web::test]
async fn a_second_login_evicts_the_first_session_by_default() {
    let app = spawn_app().await;
    let (email, id, first_access, first_refresh) = app.signed_in_user().await;

    let (second_access, _) = app.tokens_for(&email).await;

    let access_message = assert_unauthorized(app.me(&first_access).await).await;
    assert!(
        mentions(&access_message, "newer sign-in"),
        "{access_message}"
    );
    let refresh_message = assert_unauthorized(app.refresh(&first_refresh).await).await;
    assert!(
        mentions(&refresh_message, "newer sign-in"),
        "{refresh_message}"
    );
    assert_eq!(app.me(&second_access).await.status(), StatusCode::OK);
    assert!(app
        .audit_actions(&id)
        .await
        .contains(&"session.evicted".to_string()));
}

#[actix_web::test]
async fn with_a_limit_of_two_the_third_login_evicts_only_the_oldest() {
    let app = spawn_app_with(&[("MAX_CONCURRENT_SESSIONS", "2")]).await;
    let (email, _, first, _) = app.signed_in_user().await;
    let (second, _) = app.tokens_for(&email).await;

    let (third, _) = app.tokens_for(&email).await;

    let message = assert_unauthorized(app.me(&first).await).await;
    assert!(mentions(&message, "newer sign-in"), "{message}");
    assert_eq!(app.me(&second).await.status(), StatusCode::OK);
    assert_eq!(app.me(&third).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn under_the_reject_policy_a_login_beyond_the_limit_is_409() {
    let app = spawn_app_with(&[("SESSION_LIMIT_POLICY", "reject")]).await;
    let (email, _, first_access, _) = app.signed_in_user().await;

    let response = app.login(&email, PASSWORD).await;

    assert_error(response, StatusCode::CONFLICT).await;
    assert_eq!(app.me(&first_access).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn a_session_idle_past_the_timeout_is_refused() {
    let app = spawn_app_with(&[("SESSION_TIMEOUT", "1")]).await;
    let (_, _, access, _) = app.signed_in_user().await;

    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    let response = app.me(&access).await;

    let message = assert_unauthorized(response).await;
    assert!(mentions(&message, "expired after inactivity"), "{message}");
}

#[actix_web::test]
async fn the_periodic_sweep_expires_idle_sessions_and_audits_them() {
    let app = spawn_app_with(&[("SESSION_TIMEOUT", "1"), ("SESSION_CHECK_INTERVAL", "1")]).await;
    let (_, id, _, _) = app.signed_in_user().await;

    let filter = doc! {"action": "session.expired", "user_id": &id};
    let mut audited = 0;
    for _ in 0..40 {
        audited = app.count("audit_log", filter.clone()).await;
        if audited > 0 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }

    assert_eq!(audited, 1, "one session.expired entry for the idle session");
}

#[actix_web::test]
async fn logout_ends_the_access_and_refresh_tokens_at_once() {
    let app = spawn_app().await;
    let (_, id, access, refresh) = app.signed_in_user().await;

    let response = app.logout(&access).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"success": true, "message": "Logged out successfully"})
    );
    let access_message = assert_unauthorized(app.me(&access).await).await;
    assert!(mentions(&access_message, "logout"), "{access_message}");
    let refresh_message = assert_unauthorized(app.refresh(&refresh).await).await;
    assert!(mentions(&refresh_message, "logout"), "{refresh_message}");
    assert!(app
        .audit_actions(&id)
        .await
        .contains(&"auth.logout".to_string()));
}
