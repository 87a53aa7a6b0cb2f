//! User administration: who may read, change and delete which account.
use mongodb::bson::{doc, oid::ObjectId};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, assert_unauthorized, spawn_app_with, spawn_app_with_admin, ADMIN_EMAIL, PASSWORD,
};

#[actix_web::test]
async fn the_bootstrap_admin_exists_once_with_a_wallet() {
    let (app, admin) = spawn_app_with_admin(&[]).await;

    let me: Value = app.me(&admin).await.json().await.unwrap();

    assert_eq!(me["data"]["user"]["role"], "admin");
    assert_eq!(me["data"]["user"]["email"], ADMIN_EMAIL);
    assert_eq!(me["data"]["wallet"]["currency"], "credits");
    assert_eq!(app.count("users", doc! {"email": ADMIN_EMAIL}).await, 1);
}

#[actix_web::test]
async fn several_instances_starting_together_create_one_bootstrap_admin() {
    let iso = crate::helpers::Isolation::new();
    let env = iso.env(&[
        ("BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL),
        ("BOOTSTRAP_ADMIN_USERNAME", "root_admin"),
        ("BOOTSTRAP_ADMIN_PASSWORD", PASSWORD),
    ]);
    let starts = (0..3).map(|_| {
        let settings =
            cs_user_management::configuration::Settings::load_from(&env).expect("settings");
        cs_user_management::startup::Application::build(settings)
    });

    let apps = futures::future::join_all(starts).await;

    assert!(apps.iter().all(|a| a.is_ok()));
    let app = crate::helpers::TestApp::connect(String::new(), &iso).await;
    assert_eq!(app.count("users", doc! {"role": "admin"}).await, 1);
    assert_eq!(app.count("wallets", doc! {}).await, 1);
}

#[actix_web::test]
async fn an_admin_creates_a_user_with_a_wallet_in_the_seed_shape() {
    let (app, admin) = spawn_app_with_admin(&[]).await;

    let response = app
        .post_auth(
            "/users",
            &admin,
            &json!({"email": "New@Example.com", "username": "new_user", "password": PASSWORD,
                    "role": "admin", "status": "inactive"}),
        )
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "User created successfully");
    assert_eq!(body["status"], "created");
    assert_eq!(body["user"]["email"], "new@example.com");
    assert_eq!(body["user"]["role"], "admin");
    assert_eq!(body["user"]["status"], "inactive");
    let id = body["user"]["_id"].as_str().unwrap();
    assert_eq!(app.count("wallets", doc! {"user_id": id}).await, 1);
}

#[actix_web::test]
async fn a_user_cannot_create_users() {
    let (app, _) = spawn_app_with_admin(&[]).await;
    let (_, _, access, _) = app.signed_in_user().await;

    let response = app
        .post_auth(
            "/users",
            &access,
            &json!({"email": "x@example.com", "username": "xuser", "password": PASSWORD}),
        )
        .await;

    assert_error(response, StatusCode::FORBIDDEN).await;
    assert_eq!(app.count("users", doc! {"email": "x@example.com"}).await, 0);
}

#[actix_web::test]
async fn a_user_reads_themself_but_not_another_user() {
    let (app, admin) = spawn_app_with_admin(&[]).await;
    let (_, a_id, a_token, _) = app.signed_in_user().await;
    let (_, b_id, _, _) = app.signed_in_user().await;

    let own = app.get_auth(&format!("/users/{a_id}"), &a_token).await;
    let other = app.get_auth(&format!("/users/{b_id}"), &a_token).await;
    let by_admin = app.get_auth(&format!("/users/{b_id}"), &admin).await;

    assert_eq!(own.status(), StatusCode::OK);
    let own: Value = own.json().await.unwrap();
    assert_eq!(own["_id"], a_id.as_str());
    assert!(own.get("password_hash").is_none());
    assert_error(other, StatusCode::FORBIDDEN).await;
    assert_eq!(by_admin.status(), StatusCode::OK);
}

#[actix_web::test]
async fn bad_ids_are_400_and_unknown_ids_404() {
    let (app, admin) = spawn_app_with_admin(&[]).await;
    let unknown = ObjectId::new().to_hex();

    for bad in [
        "abc",
        "507f1f77bcf86cd7994390111",
        "zzzzzzzzzzzzzzzzzzzzzzzz",
    ] {
        assert_error(
            app.get_auth(&format!("/users/{bad}"), &admin).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_error(
            app.put_auth(
                &format!("/auth/{bad}"),
                &admin,
                &json!({"username": "zed_z"}),
            )
            .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_error(
            app.delete_auth(&format!("/auth/{bad}"), &admin).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    assert_error(
        app.get_auth(&format!("/users/{unknown}"), &admin).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_error(
        app.put_auth(
            &format!("/auth/{unknown}"),
            &admin,
            &json!({"username": "zed_z"}),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_error(
        app.delete_auth(&format!("/auth/{unknown}"), &admin).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[actix_web::test]
async fn a_user_cannot_change_or_delete_another_user() {
    let (app, _) = spawn_app_with_admin(&[]).await;
    let (_, _, a_token, _) = app.signed_in_user().await;
    let (b_email, b_id, b_token, _) = app.signed_in_user().await;

    let change = app
        .put_auth(
            &format!("/auth/{b_id}"),
            &a_token,
            &json!({"username": "stolen_name"}),
        )
        .await;
    let delete = app.delete_auth(&format!("/auth/{b_id}"), &a_token).await;

    assert_error(change, StatusCode::FORBIDDEN).await;
    assert_error(delete, StatusCode::FORBIDDEN).await;
    let b: Value = app.me(&b_token).await.json().await.unwrap();
    assert_eq!(b["data"]["user"]["email"], b_email.as_str());
    assert_ne!(b["data"]["user"]["username"], "stolen_name");
}

#[actix_web::test]
async fn a_user_cannot_raise_their_role_or_change_their_status() {
    let (app, _) = spawn_app_with_admin(&[]).await;
    let (_, id, token, _) = app.signed_in_user().await;

    for body in [
        json!({"role": "admin"}),
        json!({"status": "suspended"}),
        json!({"role": "admin", "username": "sneaky_one"}),
    ] {
        let response = app.put_auth(&format!("/auth/{id}"), &token, &body).await;
        assert_error(response, StatusCode::FORBIDDEN).await;
    }

    let me: Value = app.me(&token).await.json().await.unwrap();
    assert_eq!(me["data"]["user"]["role"], "user");
    assert_eq!(me["data"]["user"]["status"], "active");
    assert_ne!(me["data"]["user"]["username"], "sneaky_one");
}

#[actix_web::test]
async fn a_user_changes_their_own_username_and_email() {
    let (app, _) = spawn_app_with_admin(&[]).await;
    let (_, id, token, _) = app.signed_in_user().await;

    let response = app
        .put_auth(
            &format!("/auth/{id}"),
            &token,
            &json!({"username": "Renamed_1", "email": "Renamed@Example.com", "role": "user"}),
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], json!(true));
    assert_eq!(body["message"], "User updated successfully");
    assert_eq!(body["data"]["user"]["username"], "Renamed_1");
    assert_eq!(body["data"]["user"]["email"], "renamed@example.com");
    assert_eq!(
        app.login("renamed@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[actix_web::test]
async fn updates_validate_and_refuse_duplicates() {
    let (app, _) = spawn_app_with_admin(&[]).await;
    let (a_email, _, _, _) = app.signed_in_user().await;
    let (_, b_id, b_token, _) = app.signed_in_user().await;
    let path = format!("/auth/{b_id}");

    assert_error(
        app.put_auth(&path, &b_token, &json!({"email": a_email.to_uppercase()}))
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_error(
        app.put_auth(&path, &b_token, &json!({"username": "no"}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.put_auth(&path, &b_token, &json!({"email": "nope"}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.put_auth(&path, &b_token, &json!({"email": {"$ne": null}}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    // An empty update changes nothing and answers with the user as it is.
    assert_eq!(
        app.put_auth(&path, &b_token, &json!({})).await.status(),
        StatusCode::OK
    );
    assert_error(
        app.put_auth(&path, &b_token, &json!({"status": "frozen"}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[actix_web::test]
async fn a_password_change_needs_the_current_password_and_ends_other_sessions() {
    let (app, _) = spawn_app_with_admin(&[]).await;
    let (email, id, token, _) = app.signed_in_user().await;
    let (other_session, _) = app.tokens_for(&email).await;
    let path = format!("/auth/{id}");

    let missing = app
        .put_auth(&path, &token, &json!({"password": "brand-new-pass"}))
        .await;
    let wrong = app
        .put_auth(
            &path,
            &token,
            &json!({"password": "brand-new-pass", "current_password": "nope-nope-1"}),
        )
        .await;
    assert_error(missing, StatusCode::BAD_REQUEST).await;
    assert_error(wrong, StatusCode::FORBIDDEN).await;
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);

    let changed = app
        .put_auth(
            &path,
            &token,
            &json!({"password": "brand-new-pass", "current_password": PASSWORD}),
        )
        .await;

    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(app.me(&token).await.status(), StatusCode::OK);
    let message = assert_unauthorized(app.me(&other_session).await).await;
    assert!(message.contains("password"), "{message}");
    assert_unauthorized(app.login(&email, PASSWORD).await).await;
    assert_eq!(
        app.login(&email, "brand-new-pass").await.status(),
        StatusCode::OK
    );
}

#[actix_web::test]
async fn an_admin_suspends_a_user_whose_tokens_stop_at_once() {
    let (app, admin) = spawn_app_with_admin(&[]).await;
    let (email, id, token, refresh) = app.signed_in_user().await;

    let response = app
        .put_auth(
            &format!("/auth/{id}"),
            &admin,
            &json!({"status": "suspended", "role": "admin"}),
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["user"]["status"], "suspended");
    assert_eq!(body["data"]["user"]["role"], "admin");
    let message = assert_unauthorized(app.me(&token).await).await;
    assert!(message.contains("suspended"), "{message}");
    assert_unauthorized(app.refresh(&refresh).await).await;
    assert_error(app.login(&email, PASSWORD).await, StatusCode::FORBIDDEN).await;
}

#[actix_web::test]
async fn a_demoted_admin_loses_admin_rights_at_once() {
    let (app, root) = spawn_app_with_admin(&[]).await;
    let (email, id, _, _) = app.signed_in_user().await;
    app.put_auth(&format!("/auth/{id}"), &root, &json!({"role": "admin"}))
        .await;
    let (token, _) = app.tokens_for(&email).await;
    assert_eq!(
        app.post_auth("/users/search", &token, &json!({}))
            .await
            .status(),
        StatusCode::OK
    );

    app.put_auth(&format!("/auth/{id}"), &root, &json!({"role": "user"}))
        .await;

    // The token still says "admin"; the service believes the database.
    assert_error(
        app.post_auth("/users/search", &token, &json!({})).await,
        StatusCode::FORBIDDEN,
    )
    .await;
}

#[actix_web::test]
async fn deleting_a_user_revokes_their_tokens_and_closes_their_wallet() {
    let (app, _) = spawn_app_with_admin(&[]).await;
    let (_, id, token, refresh) = app.signed_in_user().await;

    let response = app.delete_auth(&format!("/auth/{id}"), &token).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"success": true, "message": "User deleted successfully"})
    );
    let message = assert_unauthorized(app.me(&token).await).await;
    assert!(message.contains("deleted"), "{message}");
    assert_unauthorized(app.refresh(&refresh).await).await;
    assert_eq!(
        app.count("users", doc! {"_id": ObjectId::parse_str(&id).unwrap()})
            .await,
        0
    );
    let wallet = app
        .store
        .find_one("wallets", doc! {"user_id": &id})
        .await
        .expect("the wallet is kept");
    assert_eq!(wallet.get_str("status").unwrap(), "closed");
}

#[actix_web::test]
async fn an_admin_deletes_another_user() {
    let (app, admin) = spawn_app_with_admin(&[]).await;
    let (_, id, token, _) = app.signed_in_user().await;

    let response = app.delete_auth(&format!("/auth/{id}"), &admin).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_unauthorized(app.me(&token).await).await;
}

#[actix_web::test]
async fn search_matches_literal_substrings_case_insensitively_newest_first() {
    let (app, admin) = spawn_app_with_admin(&[]).await;
    for name in ["john_smith", "JOHNNY_b", "jane_doe", "dot_star"] {
        app.register(name, &format!("{name}@example.com"), PASSWORD)
            .await;
    }

    let response = app
        .post_auth("/users/search", &admin, &json!({"username": "john"}))
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["total"], 2);
    assert_eq!(body["limit"], 20);
    assert_eq!(body["skip"], 0);
    let names: Vec<&str> = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["JOHNNY_b", "john_smith"]);
    assert!(body["users"][0].get("password_hash").is_none());

    for needle in [".*", "(", "[", "\\", "^j", "john$", "a|b"] {
        let response = app
            .post_auth(
                "/users/search",
                &admin,
                &json!({"username": needle, "email": needle}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{needle}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["total"], 0, "{needle} matched literally nothing");
    }
}

#[actix_web::test]
async fn search_filters_by_status_and_pages() {
    let (app, admin) = spawn_app_with_admin(&[]).await;
    for i in 0..5 {
        app.register(
            &format!("pager_{i}"),
            &format!("pager{i}@example.com"),
            PASSWORD,
        )
        .await;
    }

    let active = app
        .post_auth(
            "/users/search",
            &admin,
            &json!({"status": "active", "limit": 2, "skip": 1}),
        )
        .await;
    let huge = app
        .post_auth("/users/search", &admin, &json!({"limit": 1000}))
        .await;
    let suspended = app
        .post_auth("/users/search", &admin, &json!({"status": "suspended"}))
        .await;

    let active: Value = active.json().await.unwrap();
    assert_eq!(active["total"], 6);
    assert_eq!(active["users"].as_array().unwrap().len(), 2);
    assert_eq!(active["users"][0]["username"], "pager_3");
    let huge: Value = huge.json().await.unwrap();
    assert_eq!(huge["limit"], 100);
    let suspended: Value = suspended.json().await.unwrap();
    assert_eq!(suspended["total"], 0);
    for bad in [
        json!({"limit": 0}),
        json!({"skip": -1}),
        json!({"limit": "ten"}),
        json!({"status": "nope"}),
        json!([]),
    ] {
        assert_error(
            app.post_auth("/users/search", &admin, &bad).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
}

#[actix_web::test]
async fn admin_only_endpoints_refuse_users() {
    let (app, _) = spawn_app_with_admin(&[]).await;
    let (_, _, token, _) = app.signed_in_user().await;

    assert_error(
        app.post_auth("/users/search", &token, &json!({})).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_error(app.get_auth("/audit", &token).await, StatusCode::FORBIDDEN).await;
    assert_error(
        app.get_auth("/auth/test", &token).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_unauthorized(app.client.get(app.url("/auth/test")).send().await.unwrap()).await;
}

#[actix_web::test]
async fn the_test_endpoint_reports_backends_without_secrets() {
    let (app, admin) = spawn_app_with_admin(&[
        ("MONGODB_PASSWORD", "mongo-pw-secret"),
        ("REDIS_PASSWORD", ""),
    ])
    .await;

    let response = app.get_auth("/auth/test", &admin).await;

    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["success"], json!(true));
    let [database, token_store] = crate::helpers::dependency_names();
    let (storage, tokens) = if crate::helpers::embedded() {
        ("embedded", "embedded")
    } else {
        ("mongodb", "redis")
    };
    assert_eq!(body["data"]["backends"]["storage"], storage);
    assert_eq!(body["data"]["backends"]["tokens"], tokens);
    assert_eq!(body["data"]["connections"][database], "up");
    assert_eq!(body["data"]["connections"][token_store], "up");
    assert!(body["data"]["database_queue"]["worker_alive"]
        .as_bool()
        .unwrap());
    for secret in [crate::helpers::TEST_SECRET, "mongo-pw-secret", PASSWORD] {
        assert!(!text.contains(secret), "leaked {secret}");
    }
}

#[actix_web::test]
async fn the_audit_endpoint_shows_each_operation_with_its_actor() {
    let (app, admin) = spawn_app_with_admin(&[]).await;
    let admin_id = {
        let me: Value = app.me(&admin).await.json().await.unwrap();
        me["data"]["user"]["_id"].as_str().unwrap().to_string()
    };
    let (_, id, token, _) = app.signed_in_user().await;
    app.put_auth(
        &format!("/auth/{id}"),
        &token,
        &json!({"username": "audited_1"}),
    )
    .await;
    app.put_auth(
        &format!("/auth/{id}"),
        &admin,
        &json!({"status": "inactive"}),
    )
    .await;
    app.delete_auth(&format!("/auth/{id}"), &admin).await;

    let response = app.get_auth(&format!("/audit?user_id={id}"), &admin).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let entries = body["entries"].as_array().unwrap();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["actor_id"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        &actions[..3],
        &[
            ("user.delete", admin_id.as_str()),
            ("user.update", admin_id.as_str()),
            ("user.update", id.as_str())
        ]
    );
    assert!(actions.contains(&("user.register", "-")));
    assert!(actions.iter().any(|(a, _)| *a == "auth.login.success"));
    assert_eq!(body["total"].as_u64().unwrap() as usize, entries.len());
    assert!(entries[0]["at"].as_str().unwrap().ends_with('Z'));
    let text = serde_json::to_string(&body).unwrap();
    assert!(!text.contains("$2b$") && !text.contains(PASSWORD));

    let filtered: Value = app
        .get_auth("/audit?action=user.delete&limit=1", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(filtered["entries"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["limit"], 1);
    assert_error(
        app.get_auth("/audit?user_id=abc", &admin).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.get_auth("/audit?limit=x", &admin).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[actix_web::test]
async fn a_partial_bootstrap_configuration_stops_start_up() {
    let iso = crate::helpers::Isolation::new();
    let env = iso.env(&[("BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL)]);

    let err = cs_user_management::configuration::Settings::load_from(&env)
        .err()
        .map(|e| e.to_string());

    assert!(err.unwrap_or_default().contains("BOOTSTRAP_ADMIN_PASSWORD"));
}

#[actix_web::test]
async fn spawn_app_without_admin_has_no_admin() {
    let app = spawn_app_with(&[]).await;
    assert_eq!(app.count("users", doc! {"role": "admin"}).await, 0);
}
