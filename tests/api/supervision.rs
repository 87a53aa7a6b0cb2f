//! Actors that fail are restarted without restarting the process, counted, and serve again;
//! `/metrics` exports every actor's figures.
use reqwest::StatusCode;

use crate::helpers::spawn_app;

#[cfg(feature = "fault-injection")]
#[actix_web::test]
async fn a_panicking_actor_is_restarted_counted_and_serves_again() {
    use actors::mailbox::InjectPanic;
    use actors::ActorError;

    use serde_json::Value;

    use crate::helpers::{spawn_app_with_state, PASSWORD};

    let (app, state) = spawn_app_with_state(&[]).await;
    let (email, _, _, _) = app.signed_in_user().await;

    let db = state.db.call(InjectPanic).await;
    let sessions = state.sessions.call(InjectPanic).await;
    // An AccountActor and a TokenActor like those the HTTP workers run (they share their
    // figures).
    let tokens = state.accounts.tokens.start_here().call(InjectPanic).await;
    let account = state
        .accounts
        .start_here(std::time::Duration::from_secs(5))
        .call(InjectPanic)
        .await;

    // The caller caught in the failure gets an error that maps to 503, not a hang or a 500.
    for outcome in [db, tokens, sessions, account] {
        assert!(
            matches!(outcome, Err(ActorError::Unavailable { .. })),
            "{outcome:?}"
        );
    }
    // The restart happens just after the caller is answered: poll for it (bounded).
    let mut health = Value::Null;
    for _ in 0..50 {
        health = app.get_json("/health").await;
        let restarted = ["account", "db_queue", "token", "session"]
            .iter()
            .all(|a| health["details"]["actors"][a]["restarts"] == 1);
        if restarted {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for actor in ["account", "db_queue", "token", "session"] {
        let figures = &health["details"]["actors"][actor];
        assert_eq!(figures["restarts"], 1, "{actor}: {figures}");
        assert_eq!(figures["alive"], true, "{actor}: {figures}");
    }
    assert_eq!(health["status"], "degraded");
    // Normal service: sign in again, use the token.
    let login = app.login(&email, PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    let body: Value = login.json().await.unwrap();
    let access = body["data"]["access_token"].as_str().unwrap();
    assert_eq!(app.me(access).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn metrics_export_http_and_actor_figures_in_prometheus_text() {
    let app = spawn_app().await;
    app.signed_in_user().await;

    let response = app.client.get(app.url("/metrics")).send().await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    for needle in [
        "csum_http_requests_total{",
        "route=\"/auth/login\"",
        "csum_http_request_duration_seconds_bucket{",
        "csum_actor_handling_seconds_bucket{",
        "csum_actor_messages_total{",
        "csum_actor_mailbox_len{actor=\"db_queue\"}",
        "csum_actor_mailbox_capacity{actor=\"hasher\"}",
        "csum_actor_in_flight{actor=\"token\"}",
        "csum_actor_alive{actor=\"session\"}",
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }
    for dependency in crate::helpers::dependency_names() {
        let needle = format!("csum_dependency_up{{dependency=\"{dependency}\"}}");
        assert!(text.contains(&needle), "missing {needle}");
    }
}
