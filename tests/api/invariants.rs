//! The rules that must hold when requests race (SPEC 7): conflicting requests are released
//! together (a barrier), on both backends, for several rounds.
use std::sync::Arc;

use futures::future::join_all;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Barrier;

use crate::helpers::{
    assert_error, at_once, client_from, count, spawn_app_in, spawn_app_with, spawn_app_with_admin,
    Isolation, TestApp, PASSWORD,
};

const WRONG: &str = "wrong-password-1";

/// A login request as a future that owns what it needs.
fn login(
    app: &TestApp,
    client: &reqwest::Client,
    email: &str,
    password: &str,
) -> impl std::future::Future<Output = Response> + 'static {
    let request = client
        .post(app.url("/auth/login"))
        .json(&json!({"email": email, "password": password}));
    async move { request.send().await.unwrap() }
}

#[actix_web::test]
async fn forty_wrong_guesses_at_once_get_at_most_the_allowed_checks_and_then_even_the_right_password_is_429(
) {
    let app = spawn_app_with(&[]).await;
    for _round in 0..3 {
        let (email, _) = app.create_user().await;

        let statuses = at_once(40, |_| login(&app, &app.client, &email, WRONG)).await;

        assert_eq!(
            count(&statuses, StatusCode::UNAUTHORIZED),
            5,
            "{statuses:?}"
        );
        assert_eq!(count(&statuses, StatusCode::TOO_MANY_REQUESTS), 35);
        let right = app.login(&email, PASSWORD).await;
        assert_error(right, StatusCode::TOO_MANY_REQUESTS).await;
    }
}

#[actix_web::test]
async fn the_guesses_split_over_two_instances_get_no_more_checks() {
    let iso = Isolation::new();
    let first = spawn_app_in(&iso, &[]).await;
    let second = spawn_app_in(&iso, &[]).await;
    for _round in 0..3 {
        let (email, _) = first.create_user().await;

        let statuses = at_once(40, |i| {
            let app = if i % 2 == 0 { &first } else { &second };
            login(app, &app.client, &email, WRONG)
        })
        .await;

        assert_eq!(
            count(&statuses, StatusCode::UNAUTHORIZED),
            5,
            "{statuses:?}"
        );
        assert_eq!(count(&statuses, StatusCode::TOO_MANY_REQUESTS), 35);
        for app in [&first, &second] {
            let right = app.login(&email, PASSWORD).await;
            assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
        }
    }
}

#[actix_web::test]
async fn ten_right_password_logins_at_once_all_succeed() {
    let app = spawn_app_with(&[("MAX_CONCURRENT_SESSIONS", "10")]).await;
    for _round in 0..3 {
        let (email, _) = app.create_user().await;

        let statuses = at_once(10, |_| login(&app, &app.client, &email, PASSWORD)).await;

        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{statuses:?}"
        );
    }
}

#[actix_web::test]
async fn a_stranger_locking_one_address_out_does_not_lock_the_owner_out_elsewhere() {
    let app = spawn_app_with(&[]).await;
    let (email, _) = app.create_user().await;
    let (stranger, owner) = (client_from("127.0.0.2"), client_from("127.0.0.3"));
    for _ in 0..5 {
        let guess = app.login_with(&stranger, &email, WRONG, None).await;
        assert_eq!(guess.status(), StatusCode::UNAUTHORIZED);
    }
    let locked = app.login_with(&stranger, &email, PASSWORD, None).await;
    assert_error(locked, StatusCode::TOO_MANY_REQUESTS).await;

    let owner_login = app.login_with(&owner, &email, PASSWORD, None).await;

    assert_eq!(owner_login.status(), StatusCode::OK);
}

#[actix_web::test]
async fn failures_spread_over_addresses_lock_the_account_everywhere() {
    let app = spawn_app_with(&[
        ("LOGIN_MAX_FAILURES", "2"),
        ("LOGIN_MAX_FAILURES_PER_ACCOUNT", "5"),
    ])
    .await;
    let (email, _) = app.create_user().await;
    for (address, guesses) in [("127.0.0.2", 2), ("127.0.0.3", 2), ("127.0.0.4", 1)] {
        let client = client_from(address);
        for _ in 0..guesses {
            let guess = app.login_with(&client, &email, WRONG, None).await;
            assert_eq!(guess.status(), StatusCode::UNAUTHORIZED, "{address}");
        }
    }

    for address in ["127.0.0.4", "127.0.0.5", "127.0.0.1"] {
        let client = client_from(address);
        let right = app.login_with(&client, &email, PASSWORD, None).await;
        assert_error(right, StatusCode::TOO_MANY_REQUESTS).await;
    }
}

#[actix_web::test]
async fn a_success_resets_its_addresses_counter() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES", "3")]).await;
    let (email, _) = app.create_user().await;
    let client = client_from("127.0.0.2");
    for _round in 0..3 {
        for _ in 0..2 {
            let guess = app.login_with(&client, &email, WRONG, None).await;
            assert_eq!(guess.status(), StatusCode::UNAUTHORIZED);
        }
        let right = app.login_with(&client, &email, PASSWORD, None).await;
        assert_eq!(right.status(), StatusCode::OK);
    }
}

#[actix_web::test]
async fn x_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let app = spawn_app_with(&[]).await;
    let (email, _) = app.create_user().await;
    for i in 0..5 {
        let forwarded = format!("10.0.0.{i}");
        let guess = app
            .login_with(&app.client, &email, WRONG, Some(&forwarded))
            .await;
        assert_eq!(guess.status(), StatusCode::UNAUTHORIZED);
    }

    let right = app
        .login_with(&app.client, &email, PASSWORD, Some("10.0.0.99"))
        .await;

    assert_error(right, StatusCode::TOO_MANY_REQUESTS).await;
}

#[actix_web::test]
async fn behind_a_trusted_proxy_the_rightmost_untrusted_forwarded_entry_is_the_client() {
    let app = spawn_app_with(&[("TRUSTED_PROXIES", "127.0.0.1/32, 10.9.0.0/16")]).await;
    let (email, id) = app.create_user().await;
    for _ in 0..5 {
        // The client claims an address; the proxies it went through (10.9.x) are trusted.
        let guess = app
            .login_with(
                &app.client,
                &email,
                WRONG,
                Some("6.6.6.6, 10.0.0.1, 10.9.0.7"),
            )
            .await;
        assert_eq!(guess.status(), StatusCode::UNAUTHORIZED);
    }
    let locked = app
        .login_with(&app.client, &email, PASSWORD, Some("10.0.0.1"))
        .await;
    assert_error(locked, StatusCode::TOO_MANY_REQUESTS).await;

    let other = app
        .login_with(&app.client, &email, PASSWORD, Some("10.0.0.2"))
        .await;

    assert_eq!(other.status(), StatusCode::OK);
    let success = app
        .store
        .find_one(
            "audit_log",
            mongodb::bson::doc! {"user_id": &id, "action": "auth.login.success"},
        )
        .await
        .unwrap();
    assert_eq!(success.get_str("ip").unwrap(), "10.0.0.2");
}

/// The user as an administrator reads it.
async fn stored_user(app: &TestApp, admin: &str, id: &str) -> Value {
    let response = app.get_auth(&format!("/users/{id}"), admin).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Every status the tasks got is one of `allowed`.
fn all_of<E: std::fmt::Debug>(
    tasks: Vec<Result<Vec<StatusCode>, E>>,
    allowed: &[StatusCode],
    round: usize,
) {
    for statuses in tasks {
        let statuses = statuses.unwrap();
        assert!(
            statuses.iter().all(|s| allowed.contains(s)),
            "round {round}: {statuses:?}"
        );
    }
}

/// A new user, signed in: (id, access token).
async fn signed_in(app: &TestApp) -> (String, String) {
    let (email, id) = app.create_user().await;
    let (access, _) = app.tokens_for(&email).await;
    (id, access)
}

/// Sends the user's own update (carrying `field: value`) again and again until the service
/// refuses them (their session ended, or they lost the right), for at most `limit` requests;
/// returns the statuses.
async fn keep_updating(
    app: &TestApp,
    id: &str,
    token: &str,
    field: &str,
    value: &str,
    task: usize,
    limit: usize,
) -> Vec<StatusCode> {
    let mut statuses = Vec::new();
    for n in 0..limit {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let body = json!({field: value, "username": format!("t{task}_{n}_{tag}")});
        let status = app
            .put_auth(&format!("/auth/{id}"), token, &body)
            .await
            .status();
        statuses.push(status);
        if status != StatusCode::OK {
            break;
        }
    }
    statuses
}

#[actix_web::test]
async fn a_users_own_updates_never_undo_a_suspension() {
    let (app, admin) = spawn_app_with_admin(&[]).await;
    let app = Arc::new(app);
    for round in 0..10 {
        let (id, access) = signed_in(&app).await;
        let barrier = Arc::new(Barrier::new(9));
        let users = (0..8).map(|task| {
            let (app, barrier, id, access) =
                (app.clone(), barrier.clone(), id.clone(), access.clone());
            actix_web::rt::spawn(async move {
                barrier.wait().await;
                keep_updating(&app, &id, &access, "status", "active", task, 40).await
            })
        });
        let users: Vec<_> = users.collect();
        barrier.wait().await;
        let suspend = app
            .put_auth(
                &format!("/auth/{id}"),
                &admin,
                &json!({"status": "suspended"}),
            )
            .await;
        assert_eq!(suspend.status(), StatusCode::OK, "round {round}");
        all_of(
            join_all(users).await,
            &[StatusCode::OK, StatusCode::UNAUTHORIZED],
            round,
        );

        let stored = stored_user(&app, &admin, &id).await;
        assert_eq!(stored["status"], "suspended", "round {round}");
        assert_eq!(app.me(&access).await.status(), StatusCode::UNAUTHORIZED);
    }
}

/// A second administrator, signed in: (id, access token).
async fn second_admin(app: &TestApp, admin: &str) -> (String, String) {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let email = format!("admin_{tag}@example.com");
    let body = json!({"email": &email, "username": format!("a_{tag}"), "password": PASSWORD,
        "role": "admin"});
    let created: Value = app
        .post_auth("/users", admin, &body)
        .await
        .json()
        .await
        .unwrap();
    let id = created["user"]["_id"].as_str().unwrap().to_string();
    let (access, _) = app.tokens_for(&email).await;
    (id, access)
}

#[actix_web::test]
async fn a_demoted_administrator_keeps_no_power_whatever_they_send() {
    let (app, admin) = spawn_app_with_admin(&[]).await;
    let app = Arc::new(app);
    for round in 0..10 {
        let (id, access) = second_admin(&app, &admin).await;
        let barrier = Arc::new(Barrier::new(9));
        let theirs: Vec<_> = (0..8)
            .map(|task| {
                let (app, barrier, id, access) =
                    (app.clone(), barrier.clone(), id.clone(), access.clone());
                actix_web::rt::spawn(async move {
                    barrier.wait().await;
                    keep_updating(&app, &id, &access, "role", "admin", task, 15).await
                })
            })
            .collect();
        barrier.wait().await;
        let demote = app
            .put_auth(&format!("/auth/{id}"), &admin, &json!({"role": "user"}))
            .await;
        assert_eq!(demote.status(), StatusCode::OK, "round {round}");

        // From the moment the demotion is answered: no administrator's power.
        let audit = app.get_auth("/audit", &access).await;
        assert_error(audit, StatusCode::FORBIDDEN).await;
        all_of(
            join_all(theirs).await,
            &[StatusCode::OK, StatusCode::FORBIDDEN],
            round,
        );
        let stored = stored_user(&app, &admin, &id).await;
        assert_eq!(stored["role"], "user", "round {round}");
        let search = app.post_auth("/users/search", &access, &json!({})).await;
        assert_eq!(search.status(), StatusCode::FORBIDDEN);
    }
}

#[actix_web::test]
async fn no_session_opened_with_the_old_password_survives_its_change() {
    let app = Arc::new(
        spawn_app_with(&[
            ("MAX_CONCURRENT_SESSIONS", "50"),
            ("LOGIN_MAX_FAILURES", "0"),
        ])
        .await,
    );
    let new_password = "a-new-password-7";
    for round in 0..10 {
        let (email, id) = app.create_user().await;
        let (owner, _) = app.tokens_for(&email).await;
        let barrier = Arc::new(Barrier::new(5));
        let logins: Vec<_> = (0..4)
            .map(|_| {
                let (app, barrier, email) = (app.clone(), barrier.clone(), email.clone());
                actix_web::rt::spawn(async move {
                    barrier.wait().await;
                    let mut pairs = Vec::new();
                    for _ in 0..8 {
                        let response = app.login(&email, PASSWORD).await;
                        if response.status() != StatusCode::OK {
                            break;
                        }
                        let body: Value = response.json().await.unwrap();
                        let data = &body["data"];
                        pairs.push((
                            data["access_token"].as_str().unwrap().to_string(),
                            data["refresh_token"].as_str().unwrap().to_string(),
                        ));
                    }
                    pairs
                })
            })
            .collect();
        barrier.wait().await;
        let change = app
            .put_auth(
                &format!("/auth/{id}"),
                &owner,
                &json!({"password": new_password, "current_password": PASSWORD}),
            )
            .await;
        assert_eq!(change.status(), StatusCode::OK, "round {round}");

        let pairs: Vec<(String, String)> = join_all(logins)
            .await
            .into_iter()
            .flat_map(Result::unwrap)
            .collect();
        for (access, refresh) in &pairs {
            let me = app.me(access).await;
            assert_eq!(me.status(), StatusCode::UNAUTHORIZED, "round {round}");
            let refreshed = app.refresh(refresh).await;
            assert_eq!(
                refreshed.status(),
                StatusCode::UNAUTHORIZED,
                "round {round}"
            );
        }
        // The owner's own session goes on, and the new password works.
        assert_eq!(app.me(&owner).await.status(), StatusCode::OK);
        assert_eq!(
            app.login(&email, new_password).await.status(),
            StatusCode::OK
        );
    }
}

#[actix_web::test]
async fn the_last_active_administrator_cannot_demote_suspend_or_delete_themself() {
    let (app, admin) = spawn_app_with_admin(&[]).await;
    let me: Value = app.get_auth("/auth/me", &admin).await.json().await.unwrap();
    let admin_id = me["data"]["user"]["_id"].as_str().unwrap().to_string();
    let path = format!("/auth/{admin_id}");

    for change in [json!({"role": "user"}), json!({"status": "suspended"})] {
        let refused = app.put_auth(&path, &admin, &change).await;
        assert_error(refused, StatusCode::CONFLICT).await;
    }
    assert_error(app.delete_auth(&path, &admin).await, StatusCode::CONFLICT).await;
    assert_eq!(app.me(&admin).await.status(), StatusCode::OK);

    // With a second administrator, the first may step down.
    let (_, other) = second_admin(&app, &admin).await;
    let demoted = app.put_auth(&path, &admin, &json!({"role": "user"})).await;
    assert_eq!(demoted.status(), StatusCode::OK);
    let other_me: Value = app.get_auth("/auth/me", &other).await.json().await.unwrap();
    let other_path = format!(
        "/auth/{}",
        other_me["data"]["user"]["_id"].as_str().unwrap()
    );
    assert_error(
        app.put_auth(&other_path, &other, &json!({"status": "suspended"}))
            .await,
        StatusCode::CONFLICT,
    )
    .await;
}

#[actix_web::test]
async fn two_administrators_demoting_each_other_at_once_leave_one() {
    let (app, root) = spawn_app_with_admin(&[]).await;
    let root_me: Value = app.get_auth("/auth/me", &root).await.json().await.unwrap();
    let root_id = root_me["data"]["user"]["_id"].as_str().unwrap().to_string();
    for round in 0..5 {
        // Leave exactly two active administrators: root and a new one.
        let (other_id, other) = second_admin(&app, &root).await;
        let statuses = at_once(2, |i| {
            let (token, target) = if i == 0 {
                (&root, &other_id)
            } else {
                (&other, &root_id)
            };
            let request = app
                .client
                .put(app.url(&format!("/auth/{target}")))
                .bearer_auth(token)
                .json(&json!({"role": "user"}));
            async move { request.send().await.unwrap() }
        })
        .await;

        assert_eq!(
            count(&statuses, StatusCode::OK),
            1,
            "round {round}: {statuses:?}"
        );
        let admins: Value = app
            .client
            .post(app.url("/users/search"))
            .bearer_auth(if statuses[0] == StatusCode::OK {
                &root
            } else {
                &other
            })
            .json(&json!({"limit": 100}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let active_admins = admins["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["role"] == "admin" && u["status"] == "active")
            .count();
        assert_eq!(active_admins, 1, "round {round}");
        if statuses[0] != StatusCode::OK {
            // The other won: make root an administrator again for the next round.
            let restore = app
                .put_auth(
                    &format!("/auth/{root_id}"),
                    &other,
                    &json!({"role": "admin"}),
                )
                .await;
            assert_eq!(restore.status(), StatusCode::OK);
            let demote_other = app
                .put_auth(
                    &format!("/auth/{other_id}"),
                    &root,
                    &json!({"role": "user"}),
                )
                .await;
            assert_eq!(demote_other.status(), StatusCode::OK);
        }
    }
}

#[cfg(feature = "fault-injection")]
#[actix_web::test]
async fn a_login_whose_stamp_fails_leaves_no_session_open() {
    use actors::db_queue::FailLoginStamps;

    let (app, state) = crate::helpers::spawn_app_with_state(&[
        ("MAX_CONCURRENT_SESSIONS", "1"),
        ("SESSION_LIMIT_POLICY", "reject"),
    ])
    .await;
    let (email, _) = app.create_user().await;
    state.db.call(FailLoginStamps(1)).await.unwrap();

    let failed = app.login(&email, PASSWORD).await;

    assert_error(failed, StatusCode::SERVICE_UNAVAILABLE).await;
    // Under `reject` with a limit of one, a session left open would refuse this login.
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn a_session_older_than_the_stored_password_ends_even_if_its_revocation_was_lost() {
    // As if a password change committed but ending the user's sessions then failed.
    let app = spawn_app_with(&[("USER_CACHE_TTL_MS", "0")]).await;
    let (_, id, access, refresh) = app.signed_in_user().await;
    let filter = mongodb::bson::doc! {"_id": mongodb::bson::oid::ObjectId::parse_str(&id).unwrap()};
    app.store
        .set(
            "users",
            filter,
            mongodb::bson::doc! {"credential_version": 1_i64},
        )
        .await;

    let message = crate::helpers::assert_unauthorized(app.me(&access).await).await;

    assert!(message.contains("password"), "{message}");
    assert_eq!(
        app.refresh(&refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
}
