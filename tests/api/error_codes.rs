//! Every error body carries a stable `error_code` beside its message: each code the OpenAPI
//! document lists is produced here by a request that causes it, with the status it goes with.
use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::edge::raw_answer;
use crate::helpers::{
    embedded, spawn_app, spawn_app_with, spawn_app_with_admin, TestApp, PASSWORD, TEST_SECRET,
};
use crate::tokens::{claims_of, sign};

/// Codes no request of this test causes, and why.
const NOT_PRODUCED: &[(&str, &str)] = &[
    (
        "email_or_username_taken",
        "a duplicate the store cannot attribute to a field; both stores name the field",
    ),
    (
        "concurrent_change",
        "a conditional write that lost a race; tests/api/invariants.rs races them",
    ),
    ("internal_error", "no request may cause a 500"),
    ("http_error", "no answer is made with another status"),
];

/// The codes seen so far.
#[derive(Default)]
struct Seen(BTreeSet<String>);

impl Seen {
    /// Asserts `response` is an error of `status` and the contract's shape with `code`.
    async fn expect(&mut self, response: Response, status: u16, code: &str) {
        assert_eq!(response.status().as_u16(), status, "for {code}");
        let body: Value = response.json().await.expect("error bodies are JSON");
        assert_eq!(body["success"], false, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert_eq!(body["error_code"], code, "{body}");
        self.0.insert(code.to_string());
    }

    /// The same for an answer read off a raw socket: (status, content type, body).
    fn expect_raw(&mut self, (status, _, body): (u16, String, String), want: u16, code: &str) {
        assert_eq!(status, want, "{body}");
        let body: Value = serde_json::from_str(&body).expect("a JSON body");
        assert_eq!(body["error_code"], code, "{body}");
        self.0.insert(code.to_string());
    }
}

fn token(body: &Value, name: &str) -> String {
    body["data"][name].as_str().unwrap_or_default().to_string()
}

/// Codes answered by one service with an administrator: input, tokens, rights, conflicts.
async fn on_one_service(seen: &mut Seen) -> (TestApp, BTreeSet<String>) {
    let (app, admin) = spawn_app_with_admin(&[("LOGIN_MAX_FAILURES", "2")]).await;
    let documented: BTreeSet<String> = app.get_json("/openapi.json").await["components"]["schemas"]
        ["ErrorCode"]["enum"]
        .as_array()
        .expect("the codes are documented")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    let url = |path: &str| app.url(path);

    // Input.
    let bad_email = app.register("codes_x", "not-an-email", PASSWORD).await;
    seen.expect(bad_email, 400, "validation_failed").await;
    seen.expect(
        app.post_raw("/auth/login", "{").await,
        400,
        "malformed_request",
    )
    .await;
    let big = app.post_raw("/auth/login", "x".repeat(70_000)).await;
    seen.expect(big, 413, "payload_too_large").await;
    let text = (app.client.post(url("/auth/login")))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    seen.expect(text, 415, "unsupported_media_type").await;
    let nowhere = app.client.get(url("/nowhere")).send().await.unwrap();
    seen.expect(nowhere, 404, "not_found").await;
    let wrong_method = app.client.delete(url("/auth/login")).send().await.unwrap();
    seen.expect(wrong_method, 405, "method_not_allowed").await;

    // Tokens.
    let bare = app.client.get(url("/auth/me")).send().await.unwrap();
    seen.expect(bare, 401, "missing_token").await;
    seen.expect(app.me("garbage").await, 401, "invalid_token")
        .await;
    let (email, id, access, refresh) = app.signed_in_user().await;
    seen.expect(app.me(&refresh).await, 401, "wrong_token_type")
        .await;
    let mut claims = claims_of(&access);
    claims["exp"] = json!(claims["iat"].as_i64().unwrap_or(0) - 10);
    let expired = app.me(&sign(&claims, TEST_SECRET)).await;
    seen.expect(expired, 401, "token_expired").await;
    let rotated: Value = app.refresh(&refresh).await.json().await.unwrap();
    seen.expect(app.me(&access).await, 401, "token_superseded")
        .await;
    seen.expect(app.refresh(&refresh).await, 401, "refresh_token_reused")
        .await;
    let after_reuse = app.me(&token(&rotated, "access_token")).await;
    seen.expect(after_reuse, 401, "refresh_token_reused").await;

    // Sessions ended each way.
    let (_, _, access, _) = app.signed_in_user().await;
    app.logout(&access).await;
    seen.expect(app.me(&access).await, 401, "session_logged_out")
        .await;
    let (email_b, id_b, access_b, _) = app.signed_in_user().await;
    let (other_b, _) = app.tokens_for(&email_b).await;
    let change = json!({"password": "another-password-9", "current_password": PASSWORD});
    app.put_auth(&format!("/auth/{id_b}"), &access_b, &change)
        .await;
    seen.expect(app.me(&other_b).await, 401, "password_changed")
        .await;
    let (_, id_c, access_c, _) = app.signed_in_user().await;
    app.delete_auth(&format!("/users/{id_c}/sessions"), &admin)
        .await;
    seen.expect(app.me(&access_c).await, 401, "session_revoked")
        .await;
    let (email_d, id_d, access_d, _) = app.signed_in_user().await;
    let suspend = json!({"status": "suspended"});
    app.put_auth(&format!("/auth/{id_d}"), &admin, &suspend)
        .await;
    seen.expect(app.me(&access_d).await, 401, "account_suspended")
        .await;
    seen.expect(
        app.login(&email_d, PASSWORD).await,
        403,
        "account_not_active",
    )
    .await;
    let (_, id_e, access_e, _) = app.signed_in_user().await;
    app.delete_auth(&format!("/auth/{id_e}"), &admin).await;
    seen.expect(app.me(&access_e).await, 401, "account_deleted")
        .await;

    // Rights.
    let (_, user_id, user, _) = app.signed_in_user().await;
    let search = app.post_auth("/users/search", &user, &json!({})).await;
    seen.expect(search, 403, "admin_required").await;
    let others = app.get_auth(&format!("/users/{id}"), &user).await;
    seen.expect(others, 403, "not_your_account").await;
    let wrong = json!({"password": "another-password-9", "current_password": "wrong-password-1"});
    let changed = app
        .put_auth(&format!("/auth/{user_id}"), &user, &wrong)
        .await;
    seen.expect(changed, 403, "wrong_current_password").await;

    // Conflicts.
    let taken = app.register("codes_other", &email, PASSWORD).await;
    seen.expect(taken, 409, "email_taken").await;
    let me: Value = app.me(&user).await.json().await.unwrap();
    let username = me["data"]["user"]["username"].as_str().unwrap_or_default();
    let taken = app
        .register(username, "codes-fresh@example.com", PASSWORD)
        .await;
    seen.expect(taken, 409, "username_taken").await;
    let admin_me: Value = app.me(&admin).await.json().await.unwrap();
    let admin_id = admin_me["data"]["user"]["_id"].as_str().unwrap_or_default();
    let demote = json!({"role": "user"});
    let demoted = app
        .put_auth(&format!("/auth/{admin_id}"), &admin, &demote)
        .await;
    seen.expect(demoted, 409, "last_admin").await;

    // Guessing.
    seen.expect(
        app.login(&email, "wrong-password-1").await,
        401,
        "invalid_credentials",
    )
    .await;
    app.login(&email, "wrong-password-1").await;
    seen.expect(app.login(&email, PASSWORD).await, 429, "account_locked")
        .await;
    let unknown_client = (app.client.post(app.url("/auth/introspect")))
        .basic_auth("nobody", Some("not-a-client-secret"))
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    seen.expect(unknown_client, 401, "client_unauthorized")
        .await;

    // Answers no handler writes.
    let headers: String = (0..120).map(|i| format!("x-h{i}: {i}\r\n")).collect();
    let head = format!("GET /health HTTP/1.1\r\nhost: x\r\n{headers}\r\n");
    seen.expect_raw(
        raw_answer(&app, head.into_bytes()).await,
        431,
        "header_fields_too_large",
    );
    let slow = b"GET /health HTTP/1.1\r\nhost: x\r\n".to_vec();
    seen.expect_raw(raw_answer(&app, slow).await, 408, "request_timeout");
    (app, documented)
}

#[actix_web::test]
async fn every_documented_error_code_is_produced_by_a_request_that_causes_it() {
    let mut seen = Seen::default();
    let (_app, documented) = on_one_service(&mut seen).await;

    // Session limits: evict (the default, one session) and reject.
    let app = spawn_app().await;
    let (email, _, first, _) = app.signed_in_user().await;
    app.tokens_for(&email).await;
    seen.expect(app.me(&first).await, 401, "session_evicted")
        .await;
    let app = spawn_app_with(&[("SESSION_LIMIT_POLICY", "reject")]).await;
    let (email, _, _, _) = app.signed_in_user().await;
    seen.expect(
        app.login(&email, PASSWORD).await,
        409,
        "session_limit_reached",
    )
    .await;

    // Idle past the timeout.
    let app = spawn_app_with(&[("SESSION_TIMEOUT", "1")]).await;
    let (_, _, access, _) = app.signed_in_user().await;
    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    seen.expect(app.me(&access).await, 401, "session_expired")
        .await;

    // One address over its rate.
    let app = spawn_app_with(&[("AUTH_RATE_LIMIT", "1"), ("AUTH_RATE_BURST", "1")]).await;
    app.login("nobody@example.com", PASSWORD).await;
    let limited = app.login("nobody@example.com", PASSWORD).await;
    seen.expect(limited, 429, "rate_limited").await;

    // A hashing pool with more work than its wait target: registrations at once at cost 12
    // with a 1 ms target (an idle pool admits the first, a busy one refuses the rest).
    let app = spawn_app_with(&[("BCRYPT_COST", "12"), ("HASHER_QUEUE_TARGET_MS", "1")]).await;
    let registrations = (0..16).map(|n| {
        let app = &app;
        async move {
            let name = format!(
                "storm_{n}_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            app.register(&name, &format!("{name}@example.com"), PASSWORD)
                .await
        }
    });
    let answers = futures::future::join_all(registrations).await;
    let statuses: Vec<StatusCode> = answers.iter().map(Response::status).collect();
    let refused = answers
        .into_iter()
        .find(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)
        .unwrap_or_else(|| panic!("a refusal among {statuses:?}"));
    seen.expect(refused, 503, "overloaded").await;

    // A token store that is down (the embedded one lives in the process).
    let mut not_produced: Vec<&str> = NOT_PRODUCED.iter().map(|(code, _)| *code).collect();
    if embedded() {
        not_produced.push("dependency_unavailable");
    } else {
        let app = spawn_app_with(&[("REDIS_PORT", "1"), ("REDIS_CLUSTER_NODES", "")]).await;
        let down = app.login("nobody@example.com", PASSWORD).await;
        seen.expect(down, 503, "dependency_unavailable").await;
    }

    let missing: Vec<&String> = (documented.iter())
        .filter(|c| !seen.0.contains(*c) && !not_produced.contains(&c.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "documented, never produced: {missing:?}"
    );
    let undocumented: Vec<&String> = seen.0.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "produced, not documented: {undocumented:?}"
    );
}
