//! One identity, one rule (SPEC 10): every spelling of an email is one account with one lockout
//! budget; the current password of an update is guarded like a login; an IPv6 client counts
//! as its /64; a known device is judged by its own failures; a token in a query string never
//! reaches the log.
use std::sync::Arc;

use mongodb::bson::oid::ObjectId;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, at_once, client_from, count, spawn_app, spawn_app_with, TestApp, PASSWORD,
};

/// A fresh tag, so each test's addresses are its own.
fn tag() -> String {
    ObjectId::new().to_hex()[16..].to_string()
}

/// Spellings of `kasper.ross.<t>@example.com` that are the same account: the Kelvin sign, the
/// long s, the sharp s (small and capital), full-width letters and upper case.
pub(crate) fn spellings_of_kasper(t: &str) -> Vec<String> {
    vec![
        format!("\u{212A}asper.ross.{t}@example.com"),
        format!("kasper.ro\u{17F}s.{t}@example.com"),
        format!("kasper.ro\u{DF}.{t}@example.com"),
        format!("KASPER.RO\u{1E9E}.{t}@EXAMPLE.COM"),
        format!("\u{FF4B}\u{FF41}\u{FF53}\u{FF50}\u{FF45}\u{FF52}.ross.{t}@example.com"),
        format!("KASPER.ROSS.{t}@EXAMPLE.COM"),
    ]
}

async fn user_id_of(response: reqwest::Response) -> String {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["user"]["_id"].as_str().unwrap().to_string()
}

async fn register_kasper(app: &TestApp, t: &str) -> (String, String) {
    let email = format!("kasper.ross.{t}@example.com");
    let created = app.register(&format!("kasper_{t}"), &email, PASSWORD).await;
    let status = created.status();
    let body: Value = created.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["data"]["user"]["_id"].as_str().unwrap().to_string();
    (email, id)
}

#[actix_web::test]
async fn every_spelling_of_an_email_is_one_account() {
    let app = spawn_app().await;
    let t = tag();
    let (email, id) = register_kasper(&app, &t).await;

    for (n, spelling) in spellings_of_kasper(&t).iter().enumerate() {
        let again = app
            .register(&format!("kasper{n}_{t}"), spelling, PASSWORD)
            .await;
        let message = assert_error(again, StatusCode::CONFLICT).await;
        assert!(
            message.to_lowercase().contains("email"),
            "{spelling}: {message}"
        );
        let logged_in = user_id_of(app.login(spelling, PASSWORD).await).await;
        assert_eq!(logged_in, id, "{spelling}");
    }
    // Shown as stored.
    let login: Value = app.login(&email, PASSWORD).await.json().await.unwrap();
    assert_eq!(login["data"]["user"]["email"], email.as_str());

    // Other addresses stay other accounts.
    for (n, other) in [
        format!("kasper.rosss.{t}@example.com"),
        format!("kasper.r\u{F6}ss.{t}@example.com"),
    ]
    .iter()
    .enumerate()
    {
        let created = app
            .register(&format!("other{n}_{t}"), other, PASSWORD)
            .await;
        assert_eq!(created.status(), StatusCode::CREATED, "{other}");
    }
}

#[actix_web::test]
async fn composed_and_decomposed_accents_are_one_account() {
    let app = spawn_app().await;
    let t = tag();
    let composed = format!("zo\u{EB}.{t}@example.com");
    let decomposed = format!("zoe\u{308}.{t}@example.com");
    let created = app.register(&format!("zoe_{t}"), &composed, PASSWORD).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let body: Value = created.json().await.unwrap();
    let id = body["data"]["user"]["_id"].as_str().unwrap().to_string();

    let again = app
        .register(&format!("zoe2_{t}"), &decomposed, PASSWORD)
        .await;
    assert_error(again, StatusCode::CONFLICT).await;
    assert_eq!(user_id_of(app.login(&decomposed, PASSWORD).await).await, id);
    let plain = app
        .register(
            &format!("zoe3_{t}"),
            &format!("zoe.{t}@example.com"),
            PASSWORD,
        )
        .await;
    assert_eq!(plain.status(), StatusCode::CREATED);
}

#[actix_web::test]
async fn an_email_change_to_another_spelling_of_a_taken_address_is_409() {
    let app = spawn_app().await;
    let t = tag();
    register_kasper(&app, &t).await;
    let other_email = format!("someone.{t}@example.com");
    let created = app
        .register(&format!("someone_{t}"), &other_email, PASSWORD)
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let login: Value = app
        .login(&other_email, PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let (access, id) = (
        login["data"]["access_token"].as_str().unwrap().to_string(),
        login["data"]["user"]["_id"].as_str().unwrap().to_string(),
    );

    let spelling = format!("kasper.ro\u{DF}.{t}@example.com");
    let changed = app
        .put_auth(&format!("/auth/{id}"), &access, &json!({"email": spelling}))
        .await;

    assert_error(changed, StatusCode::CONFLICT).await;
}

#[actix_web::test]
async fn wrong_guesses_spread_over_spellings_share_one_budget() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES", "3")]).await;
    let t = tag();
    register_kasper(&app, &t).await;
    let spellings = spellings_of_kasper(&t);

    for spelling in spellings.iter().take(3) {
        let guess = app.login(spelling, "wrong-password-1").await;
        assert_eq!(guess.status(), StatusCode::UNAUTHORIZED, "{spelling}");
    }

    let mut all = spellings.clone();
    all.push(format!("kasper.ross.{t}@example.com"));
    for spelling in &all {
        let right = app.login(spelling, PASSWORD).await;
        assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS, "{spelling}");
        assert!(right.headers().contains_key("retry-after"));
    }
}

#[actix_web::test]
async fn parallel_guesses_through_spellings_get_at_most_the_allowed_checks() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES", "3")]).await;
    for round in 0..4 {
        let t = format!("{}{round}", tag());
        register_kasper(&app, &t).await;
        let spellings = spellings_of_kasper(&t);

        let statuses = at_once(12, |n| {
            let body = json!({"email": spellings[n % spellings.len()], "password": "wrong-pass-1"});
            let request = app.client.post(app.url("/auth/login")).json(&body);
            async move { request.send().await.unwrap() }
        })
        .await;

        assert!(
            count(&statuses, StatusCode::UNAUTHORIZED) <= 3,
            "round {round}: {statuses:?}"
        );
        assert_eq!(
            count(&statuses, StatusCode::UNAUTHORIZED)
                + count(&statuses, StatusCode::TOO_MANY_REQUESTS),
            12,
            "round {round}: {statuses:?}"
        );
    }
}

/// The user's id, access token and email, signed in from the default client.
async fn signed_in(app: &TestApp) -> (String, String, String) {
    let (email, id) = app.create_user().await;
    let (access, _) = app.tokens_for(&email).await;
    (id, access, email)
}

#[actix_web::test]
async fn wrong_current_passwords_are_limited_like_logins() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES", "3")]).await;
    let (id, access, email) = signed_in(&app).await;
    let change =
        |current: &str| json!({"password": "brand-new-pass-1", "current_password": current});

    for _ in 0..3 {
        let wrong = app
            .put_auth(&format!("/auth/{id}"), &access, &change("wrong-password-1"))
            .await;
        assert_error(wrong, StatusCode::FORBIDDEN).await;
    }
    let right = app
        .put_auth(&format!("/auth/{id}"), &access, &change(PASSWORD))
        .await;

    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(right.headers().contains_key("retry-after"));
    // Nothing changed: the old password still logs in from another address.
    let elsewhere = client_from("127.0.0.3");
    let login = app.login_with(&elsewhere, &email, PASSWORD, None).await;
    assert_eq!(login.status(), StatusCode::OK);
    // And the checks are audited.
    let actions = app.audit_actions(&id).await;
    let checks = actions
        .iter()
        .filter(|a| *a == "user.password_check")
        .count();
    assert_eq!(checks, 4, "{actions:?}");
}

#[actix_web::test]
async fn parallel_wrong_current_passwords_get_at_most_the_allowed_checks() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES", "3")]).await;
    for round in 0..3 {
        let (id, access, _) = signed_in(&app).await;
        let path = format!("/auth/{id}");

        let statuses = at_once(10, |_| {
            let body = json!({"password": "brand-new-pass-1", "current_password": "wrong-pass-1"});
            let request = app
                .client
                .put(app.url(&path))
                .bearer_auth(&access)
                .json(&body);
            async move { request.send().await.unwrap() }
        })
        .await;

        assert!(
            count(&statuses, StatusCode::FORBIDDEN) <= 3,
            "round {round}: {statuses:?}"
        );
        assert_eq!(
            count(&statuses, StatusCode::FORBIDDEN)
                + count(&statuses, StatusCode::TOO_MANY_REQUESTS),
            10,
            "round {round}: {statuses:?}"
        );
        // The budget is spent: the right one is refused too.
        let body = json!({"password": "brand-new-pass-1", "current_password": PASSWORD});
        let right = app.put_auth(&path, &access, &body).await;
        assert_eq!(
            right.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "round {round}"
        );
    }
}

#[actix_web::test]
async fn guesses_from_one_ipv6_64_share_one_budget() {
    let app = spawn_app_with(&[
        ("LOGIN_MAX_FAILURES", "3"),
        ("TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    let (email, _) = app.create_user().await;
    let proxy = client_from("127.0.0.1");

    for n in 1..=3 {
        let from = format!("2001:db8:7:1::{n:x}");
        let guess = app
            .login_with(&proxy, &email, "wrong-password-1", Some(&from))
            .await;
        assert_eq!(guess.status(), StatusCode::UNAUTHORIZED, "{from}");
    }
    let same_64 = app
        .login_with(&proxy, &email, PASSWORD, Some("2001:db8:7:1:ffff::9"))
        .await;
    assert_eq!(same_64.status(), StatusCode::TOO_MANY_REQUESTS);
    let other_64 = app
        .login_with(&proxy, &email, PASSWORD, Some("2001:db8:7:2::1"))
        .await;
    assert_eq!(other_64.status(), StatusCode::OK);
}

#[actix_web::test]
async fn a_stored_user_agent_loses_bidirectional_overrides() {
    let app = spawn_app().await;
    let (email, _) = app.create_user().await;
    let client = reqwest::Client::builder()
        .user_agent("evil\u{202E}gnp.exe\u{2066}x\u{200F}")
        .build()
        .unwrap();
    let login = app.login_with(&client, &email, PASSWORD, None).await;
    let body: Value = login.json().await.unwrap();
    let access = body["data"]["access_token"].as_str().unwrap();

    let sessions: Value = app
        .get_auth("/auth/sessions", access)
        .await
        .json()
        .await
        .unwrap();

    let agent = sessions["data"]["sessions"][0]["user_agent"]
        .as_str()
        .unwrap();
    assert_eq!(agent, "evilgnp.exex");
}

/// A login from `client`, sending `device` back as its `device_token` when given.
async fn login_from(
    app: &TestApp,
    client: &reqwest::Client,
    email: &str,
    password: &str,
    device: Option<&str>,
) -> reqwest::Response {
    let mut body = json!({"email": email, "password": password});
    if let Some(token) = device {
        body["device_token"] = json!(token);
    }
    client
        .post(app.url("/auth/login"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The device token of a successful login.
async fn device_token_of(response: reqwest::Response) -> String {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["device_token"].as_str().unwrap().to_string()
}

#[actix_web::test]
async fn strangers_lock_out_unknown_clients_but_never_the_owners_device() {
    let app = Arc::new(spawn_app_with(&[("LOGIN_MAX_FAILURES_PER_ACCOUNT", "100")]).await);
    let (email, _) = app.create_user().await;
    let (other_email, _) = app.create_user().await;
    let owner = client_from("127.0.0.1");
    let device = device_token_of(login_from(&app, &owner, &email, PASSWORD, None).await).await;
    let others_device =
        device_token_of(login_from(&app, &owner, &other_email, PASSWORD, None).await).await;

    // 150 wrong guesses from 30 addresses, each address's five at once.
    let guesses = (2..32).map(|n| {
        let (app, email) = (Arc::clone(&app), email.clone());
        tokio::spawn(async move {
            let stranger = client_from(&format!("127.0.0.{n}"));
            let tries = (0..5).map(|_| login_from(&app, &stranger, &email, "wrong-pass-1", None));
            futures::future::join_all(tries).await;
        })
    });
    futures::future::join_all(guesses).await;

    let unknown = client_from("127.0.0.40");
    let refused = login_from(&app, &unknown, &email, PASSWORD, None).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let long = "x".repeat(5000);
    // One character of the signature changed.
    let at = device.len() - 10;
    let swapped = if &device[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{swapped}{}", &device[..at], &device[at + 1..]);
    for none in [
        others_device.as_str(),
        forged.as_str(),
        long.as_str(),
        "garbage",
    ] {
        let refused = login_from(&app, &unknown, &email, PASSWORD, Some(none)).await;
        assert_eq!(
            refused.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            &none[..none.len().min(20)]
        );
    }
    // The owner's device, from another address too.
    let again = login_from(&app, &unknown, &email, PASSWORD, Some(&device)).await;
    let renewed = device_token_of(again).await;
    let with_renewed = login_from(&app, &owner, &email, PASSWORD, Some(&renewed)).await;
    assert_eq!(with_renewed.status(), StatusCode::OK);
}

#[actix_web::test]
async fn a_device_past_its_own_failures_gets_429_and_strangers_do_not_pay_for_it() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES", "3")]).await;
    let (email, _) = app.create_user().await;
    let owner = client_from("127.0.0.1");
    let device = device_token_of(login_from(&app, &owner, &email, PASSWORD, None).await).await;

    for _ in 0..3 {
        let wrong = login_from(&app, &owner, &email, "wrong-pass-1", Some(&device)).await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let right = login_from(&app, &owner, &email, PASSWORD, Some(&device)).await;
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(right.headers().contains_key("retry-after"));

    // Its failures were its own: the same address without the token is not locked.
    let plain = login_from(&app, &owner, &email, PASSWORD, None).await;
    assert_eq!(plain.status(), StatusCode::OK);
}

#[actix_web::test]
async fn ending_all_of_a_users_sessions_ends_their_device_tokens() {
    let (app, admin) = crate::helpers::spawn_app_with_admin(&[("LOGIN_MAX_FAILURES", "2")]).await;
    let (email, id) = app.create_user().await;
    let owner = client_from("127.0.0.1");
    let device = device_token_of(login_from(&app, &owner, &email, PASSWORD, None).await).await;

    let ended = app
        .delete_auth(&format!("/users/{id}/sessions"), &admin)
        .await;
    assert_eq!(ended.status(), StatusCode::OK);

    // The token is none now: its failures are the address's, which then locks.
    for _ in 0..2 {
        let wrong = login_from(&app, &owner, &email, "wrong-pass-1", Some(&device)).await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let right = login_from(&app, &owner, &email, PASSWORD, Some(&device)).await;
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[actix_web::test]
async fn a_token_sent_as_a_bare_query_item_never_reaches_the_log() {
    let iso = crate::helpers::Isolation::new();
    let scratch = crate::helpers::ScratchDir::new("query-token");
    let log = scratch.join("service.log");
    let (service, app) =
        crate::cross_instance::start_instance_with(&iso, &[("RUST_LOG", "debug")], Some(&log))
            .await;
    let secret = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJxdWVyeS10b2tlbi10ZXN0In0.c2VjcmV0LXNpZ25hdHVyZQ";

    for query in [
        secret.to_string(),
        format!("x=1&{secret}"),
        format!("access_token={secret}"),
        format!("{secret}=1"),
    ] {
        let response = app
            .client
            .get(app.url(&format!("/auth/me?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    drop(service);

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("/auth/me"),
        "the requests were logged: {logged}"
    );
    assert!(!logged.contains("eyJ"), "a token reached the log: {logged}");
}

#[actix_web::test]
async fn a_look_up_by_email_key_reads_the_index_not_the_collection() {
    if !crate::helpers::needs_servers("it reads MongoDB's query plan") {
        return;
    }
    let app = spawn_app().await;
    for _ in 0..20 {
        app.create_user().await;
    }
    let plan = app
        .store
        .mongo()
        .run_command(mongodb::bson::doc! {
            "explain": {"find": "users", "filter": {"email_key": {"$in": ["a@x.io", "b@x.io"]}}},
            "verbosity": "executionStats",
        })
        .await
        .unwrap();

    let text = plan.to_string();
    assert!(text.contains("IXSCAN"), "{text}");
    assert!(!text.contains("COLLSCAN"), "{text}");
}

#[actix_web::test]
async fn a_login_racing_the_end_of_its_users_devices_keeps_no_ended_device() {
    let (app, admin) =
        crate::helpers::spawn_app_with_admin(&[("LOGIN_MAX_FAILURES_PER_ACCOUNT", "2")]).await;
    let owner = client_from("127.0.0.1");
    for round in 0..5 {
        let (email, id) = app.create_user().await;
        let device = device_token_of(login_from(&app, &owner, &email, PASSWORD, None).await).await;
        let did = crate::helpers::jwt_part(&device, 1)["did"].clone();

        // Released together: the owner's login with its device, the end of all its sessions.
        let path = format!("/users/{id}/sessions");
        let (racing, ended) = futures::join!(
            login_from(&app, &owner, &email, PASSWORD, Some(&device)),
            app.delete_auth(&path, &admin),
        );
        assert_eq!(ended.status(), StatusCode::OK, "round {round}");
        let renewed = match racing.status() {
            StatusCode::OK => Some(device_token_of(racing).await),
            _ => None,
        };
        // Strangers lock the account for unknown clients.
        for n in 2..4 {
            let stranger = client_from(&format!("127.0.0.{n}"));
            let wrong = login_from(&app, &stranger, &email, "wrong-pass-1", None).await;
            assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "round {round}");
        }

        // The device that was ended stays ended, whichever request came first: its old token,
        // and a token the racing login got for it, are an unknown client's. (A racing login
        // judged after the end signed in a new device, with a new id: that one is valid.)
        let mut ended_tokens = vec![device.clone()];
        ended_tokens.extend(renewed.filter(|t| crate::helpers::jwt_part(t, 1)["did"] == did));
        for token in ended_tokens {
            let login = login_from(&app, &owner, &email, PASSWORD, Some(&token)).await;
            assert_eq!(
                login.status(),
                StatusCode::TOO_MANY_REQUESTS,
                "round {round}"
            );
        }
    }
}

/// An administrator lifts a lockout: wrong guesses through two spellings from two addresses,
/// and through the owner's device, have locked the account every way; after
/// `DELETE /users/{id}/lockout` the owner signs in at once from a locked address, a new one
/// and the device. A user who is not an administrator gets 403, an unknown user 404.
#[actix_web::test]
async fn an_administrator_lifts_a_lockout_and_the_owner_signs_in_at_once() {
    let (app, admin) = crate::helpers::spawn_app_with_admin(&[
        ("LOGIN_MAX_FAILURES", "2"),
        ("LOGIN_MAX_FAILURES_PER_ACCOUNT", "4"),
    ])
    .await;
    let t = tag();
    let (email, id) = register_kasper(&app, &t).await;
    let spellings = spellings_of_kasper(&t);
    let owner = client_from("127.0.0.3");
    let device = device_token_of(login_from(&app, &owner, &email, PASSWORD, None).await).await;
    for (address, spelling) in [("127.0.0.1", &spellings[0]), ("127.0.0.2", &spellings[1])] {
        let stranger = client_from(address);
        for _ in 0..2 {
            let wrong = login_from(&app, &stranger, spelling, "wrong-pass-1", None).await;
            assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        }
    }
    for _ in 0..2 {
        let wrong = login_from(&app, &owner, &email, "wrong-pass-1", Some(&device)).await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let (locked, new_address) = (client_from("127.0.0.1"), client_from("127.0.0.4"));
    for (client, device) in [
        (&locked, None),
        (&new_address, None),
        (&owner, Some(&device)),
    ] {
        let refused = login_from(&app, client, &email, PASSWORD, device.map(String::as_str)).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let path = format!("/users/{id}/lockout");
    let (_, _, user, _) = app.signed_in_user().await;
    let not_admin = app.delete_auth(&path, &user).await;
    assert_error(not_admin, StatusCode::FORBIDDEN).await;
    let unknown = format!("/users/{}/lockout", ObjectId::new().to_hex());
    assert_error(
        app.delete_auth(&unknown, &admin).await,
        StatusCode::NOT_FOUND,
    )
    .await;

    let lifted = app.delete_auth(&path, &admin).await;

    let status = lifted.status();
    let body: Value = lifted.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    // The account's counter, the two addresses' and the device's.
    assert!(body["data"]["cleared"].as_u64() >= Some(4), "{body}");
    for (client, device) in [
        (&locked, None),
        (&new_address, None),
        (&owner, Some(&device)),
    ] {
        let signed_in =
            login_from(&app, client, &email, PASSWORD, device.map(String::as_str)).await;
        assert_eq!(signed_in.status(), StatusCode::OK);
    }
    assert!(app
        .audit_actions(&id)
        .await
        .contains(&"user.lockout.lifted".to_string()));
}

/// A lift racing wrong guesses, five rounds: guesses and lifts are released together; every
/// answer is 401, 429 (guesses) or 200 (lifts), never a 5xx, and after the round a last lift
/// lets the owner in at once.
#[actix_web::test]
async fn a_lift_racing_wrong_guesses_answers_each_and_a_last_lift_lets_the_owner_in() {
    let (app, admin) = crate::helpers::spawn_app_with_admin(&[("LOGIN_MAX_FAILURES", "2")]).await;
    let app = Arc::new(app);
    let (email, id) = register_kasper(&app, &tag()).await;
    let path = format!("/users/{id}/lockout");
    for _ in 0..5 {
        let statuses = at_once(12, |n| {
            let (app, email, path, admin) =
                (Arc::clone(&app), email.clone(), path.clone(), admin.clone());
            async move {
                if n % 4 == 0 {
                    app.delete_auth(&path, &admin).await
                } else {
                    app.login(&email, "wrong-pass-1").await
                }
            }
        })
        .await;
        for status in &statuses {
            assert!(
                [
                    StatusCode::OK,
                    StatusCode::UNAUTHORIZED,
                    StatusCode::TOO_MANY_REQUESTS
                ]
                .contains(status),
                "{statuses:?}"
            );
        }
        assert_eq!(
            app.delete_auth(&path, &admin).await.status(),
            StatusCode::OK
        );
        assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
    }
}
