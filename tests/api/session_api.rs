//! The sessions API (SPEC 8): `GET /auth/sessions`, `DELETE /auth/sessions/{session_id}`,
//! `DELETE /auth/sessions` and `DELETE /users/{user_id}/sessions`, on both backends and across
//! instances, with the races that matter: a session ended while it refreshes stays ended.
use std::collections::HashSet;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, assert_unauthorized, client_from, jwt_part, spawn_app_in, spawn_app_with,
    spawn_app_with_admin, Isolation, TestApp, PASSWORD,
};

/// Three sessions of one new user, each from its own address and `User-Agent`, oldest first:
/// (access, refresh) each.
async fn three_sessions(app: &TestApp, email: &str) -> Vec<(String, String)> {
    let mut sessions = Vec::new();
    for n in 2..5 {
        let client = reqwest::Client::builder()
            .local_address(format!("127.0.0.{n}").parse::<std::net::IpAddr>().ok())
            .user_agent(format!("agent-{n}/1.0"))
            .build()
            .unwrap();
        let response = app.login_with(&client, email, PASSWORD, None).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        let data = &body["data"];
        sessions.push((
            data["access_token"].as_str().unwrap().to_string(),
            data["refresh_token"].as_str().unwrap().to_string(),
        ));
    }
    sessions
}

async fn list(app: &TestApp, access: &str) -> Vec<Value> {
    let response = app.get_auth("/auth/sessions", access).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], true);
    body["data"]["sessions"].as_array().unwrap().clone()
}

/// The session id of `access` (its `sid` claim, read without checking: the test's own token).
fn sid_of(access: &str) -> String {
    jwt_part(access, 1)["sid"].as_str().unwrap().to_string()
}

async fn works(app: &TestApp, (access, refresh): &(String, String)) -> (bool, bool) {
    let me = app.me(access).await.status() == StatusCode::OK;
    let refreshed = app.refresh(refresh).await.status() == StatusCode::OK;
    (me, refreshed)
}

#[actix_web::test]
async fn a_user_lists_their_sessions_newest_first_with_address_agent_and_the_current_one() {
    let app = spawn_app_with(&[("MAX_CONCURRENT_SESSIONS", "5")]).await;
    let (email, _) = app.create_user().await;
    let sessions = three_sessions(&app, &email).await;

    let listed = list(&app, &sessions[1].0).await;

    assert_eq!(listed.len(), 3, "{listed:#?}");
    let ids: Vec<&str> = listed
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = sessions.iter().rev().map(|s| sid_of(&s.0)).collect();
    assert_eq!(ids, expected, "newest first");
    let current: Vec<&Value> = listed.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["session_id"], sid_of(&sessions[1].0));
    assert_eq!(current[0]["ip"], "127.0.0.3");
    assert_eq!(current[0]["user_agent"], "agent-3/1.0");
    for s in &listed {
        for field in ["created_at", "last_seen_at"] {
            let at = s[field].as_str().unwrap();
            assert!(
                chrono::DateTime::parse_from_rfc3339(at).is_ok(),
                "{field}: {at}"
            );
        }
    }
    // No token: 401; another user's list holds only their own.
    assert_unauthorized(
        app.client
            .get(app.url("/auth/sessions"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let (_, _, other_access, _) = app.signed_in_user().await;
    assert_eq!(list(&app, &other_access).await.len(), 1);
}

#[actix_web::test]
async fn ending_one_session_ends_only_it_at_once_and_someone_elses_id_is_404() {
    let app = spawn_app_with(&[("MAX_CONCURRENT_SESSIONS", "5")]).await;
    let (email, user_id) = app.create_user().await;
    let sessions = three_sessions(&app, &email).await;
    let (_, _, stranger, _) = app.signed_in_user().await;
    let target = sid_of(&sessions[0].0);

    // Someone else's session, a malformed id and an unknown one: 404, nothing ended.
    let path = format!("/auth/sessions/{target}");
    assert_error(
        app.delete_auth(&path, &stranger).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_error(
        app.delete_auth("/auth/sessions/not-a-session", &sessions[2].0)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let unknown = format!("/auth/sessions/{}", uuid::Uuid::new_v4().simple());
    assert_error(
        app.delete_auth(&unknown, &sessions[2].0).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(list(&app, &sessions[2].0).await.len(), 3);

    // The owner ends it from another session.
    let response = app.delete_auth(&path, &sessions[2].0).await;
    assert_eq!(response.status(), StatusCode::OK);

    let (me, refreshed) = works(&app, &sessions[0]).await;
    assert!(
        !me && !refreshed,
        "the ended session's tokens are refused at once"
    );
    let message = assert_unauthorized(app.me(&sessions[0].0).await).await;
    assert!(message.contains("revoked"), "{message}");
    assert_eq!(works(&app, &sessions[1]).await, (true, true));
    assert_eq!(list(&app, &sessions[2].0).await.len(), 2);
    // Again: it is gone.
    assert_error(
        app.delete_auth(&path, &sessions[2].0).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let actions = app.audit_actions(&user_id).await;
    assert_eq!(
        actions.iter().filter(|a| *a == "session.revoked").count(),
        1,
        "{actions:?}"
    );
}

#[actix_web::test]
async fn ending_all_but_the_current_session_keeps_only_the_caller_signed_in() {
    let app = spawn_app_with(&[("MAX_CONCURRENT_SESSIONS", "5")]).await;
    let (email, _) = app.create_user().await;
    let sessions = three_sessions(&app, &email).await;

    let response = app.delete_auth("/auth/sessions", &sessions[1].0).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["ended"], 2, "{body}");
    for ended in [&sessions[0], &sessions[2]] {
        assert_eq!(works(&app, ended).await, (false, false));
    }
    let listed = list(&app, &sessions[1].0).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["current"], true);
    assert_eq!(works(&app, &sessions[1]).await, (true, true));
}

#[actix_web::test]
async fn an_administrator_ends_every_session_of_a_user_who_stays_active() {
    let (app, admin) = spawn_app_with_admin(&[]).await;
    let (email, user_id) = app.create_user().await;
    let sessions = three_sessions(&app, &email).await;
    let path = format!("/users/{user_id}/sessions");

    // Not an administrator: 403, nothing ended. Unknown user: 404. Malformed id: 400.
    assert_error(
        app.delete_auth(&path, &sessions[0].0).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(list(&app, &sessions[0].0).await.len(), 3);
    assert_error(
        app.delete_auth("/users/507f1f77bcf86cd799439011/sessions", &admin)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_error(
        app.delete_auth("/users/nope/sessions", &admin).await,
        StatusCode::BAD_REQUEST,
    )
    .await;

    let response = app.delete_auth(&path, &admin).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["ended"], 3, "{body}");
    for session in &sessions {
        assert_eq!(works(&app, session).await, (false, false));
    }
    // Not suspended: the user signs in again.
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
    let actions = app.audit_actions(&user_id).await;
    assert!(
        actions.iter().any(|a| a == "session.revoked"),
        "{actions:?}"
    );
}

#[actix_web::test]
async fn a_session_ended_on_one_instance_is_refused_on_another() {
    let iso = Isolation::new();
    let overrides = [("MAX_CONCURRENT_SESSIONS", "5")];
    let a = spawn_app_in(&iso, &overrides).await;
    let b = spawn_app_in(&iso, &overrides).await;
    let (email, _) = a.create_user().await;
    let sessions = three_sessions(&a, &email).await;

    assert_eq!(list(&b, &sessions[2].0).await.len(), 3);
    let path = format!("/auth/sessions/{}", sid_of(&sessions[0].0));
    assert_eq!(
        b.delete_auth(&path, &sessions[2].0).await.status(),
        StatusCode::OK
    );
    assert_eq!(works(&a, &sessions[0]).await, (false, false));
    let response = a.delete_auth("/auth/sessions", &sessions[2].0).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(works(&b, &sessions[1]).await, (false, false));
    assert_eq!(list(&b, &sessions[2].0).await.len(), 1);
}

#[actix_web::test]
async fn a_session_ended_while_it_refreshes_stays_ended_whatever_the_order() {
    let app = spawn_app_with(&[("MAX_CONCURRENT_SESSIONS", "10")]).await;
    let (email, _) = app.create_user().await;
    let (keeper, _) = app.tokens_for(&email).await;
    for round in 0..8 {
        let (access, refresh) = app.tokens_for(&email).await;
        let path = format!("/auth/sessions/{}", sid_of(&access));
        // Released together: the owner ends the session from another one while it refreshes.
        let (ended, refreshed) = futures::join!(
            app.delete_auth(&path, &keeper),
            app.client
                .post(app.url("/auth/refresh"))
                .json(&json!({"refresh_token": refresh}))
                .send()
        );
        assert_eq!(ended.status(), StatusCode::OK, "round {round}");
        let refreshed = refreshed.unwrap();
        if refreshed.status() == StatusCode::OK {
            let body: Value = refreshed.json().await.unwrap();
            let data = &body["data"];
            let pair = (
                data["access_token"].as_str().unwrap().to_string(),
                data["refresh_token"].as_str().unwrap().to_string(),
            );
            assert_eq!(
                works(&app, &pair).await,
                (false, false),
                "round {round}: a pair rotated during the end works afterwards"
            );
        } else {
            assert_eq!(
                refreshed.status(),
                StatusCode::UNAUTHORIZED,
                "round {round}"
            );
        }
        assert_eq!(works(&app, &(access, refresh)).await, (false, false));
    }
}

#[actix_web::test]
async fn two_sessions_each_ending_all_the_others_at_once_leave_at_most_one_of_them() {
    let app = spawn_app_with(&[("MAX_CONCURRENT_SESSIONS", "10")]).await;
    let (email, _) = app.create_user().await;
    for round in 0..6 {
        let sessions = three_sessions(&app, &email).await;
        let (first, second) = (&sessions[1].0, &sessions[2].0);
        let answers = join_all([first, second].map(|t| app.delete_auth("/auth/sessions", t))).await;
        for answer in answers {
            let status = answer.status();
            assert!(
                status == StatusCode::OK || status == StatusCode::UNAUTHORIZED,
                "round {round}: {status}"
            );
        }
        let mut live = HashSet::new();
        for (n, session) in sessions.iter().enumerate() {
            if app.me(&session.0).await.status() == StatusCode::OK {
                live.insert(n);
            }
        }
        assert!(
            live.len() <= 1 && !live.contains(&0),
            "round {round}: live sessions {live:?}"
        );
        // Start the next round from none.
        if let Some(n) = live.into_iter().next() {
            let _ = app.logout(&sessions[n].0).await;
        }
    }
    // A fresh sign-in still works: nothing was left half-ended.
    let client = client_from("127.0.0.9");
    let response = app.login_with(&client, &email, PASSWORD, None).await;
    assert_eq!(response.status(), StatusCode::OK);
}
