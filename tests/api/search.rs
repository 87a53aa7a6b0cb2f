//! An administrator's user search runs as slices, each one turn in the database queue (issue
//! "Group commit…": no operation holds the queue). What must hold: the answers are the same
//! whatever the slice size, and a login sent while a search scans a large collection is served
//! between slices instead of waiting for the whole scan.
use std::time::{Duration, Instant};

use mongodb::bson::{doc, oid::ObjectId, DateTime as BsonDateTime, Document};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{needs_servers, spawn_app_in, Isolation, TestApp, ADMIN_EMAIL, PASSWORD};

async fn admin_app(iso: &Isolation, extra: &[(&str, &str)]) -> (TestApp, String) {
    let mut settings = vec![
        ("BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL),
        ("BOOTSTRAP_ADMIN_USERNAME", "root_admin"),
        ("BOOTSTRAP_ADMIN_PASSWORD", PASSWORD),
        ("MAX_CONCURRENT_SESSIONS", "5"),
    ];
    settings.extend_from_slice(extra);
    let app = spawn_app_in(iso, &settings).await;
    let (admin, _) = app.tokens_for(ADMIN_EMAIL).await;
    (app, admin)
}

async fn search(app: &TestApp, admin: &str, query: &Value) -> Value {
    let response = app.post_auth("/users/search", admin, query).await;
    assert_eq!(response.status(), StatusCode::OK, "{query}");
    response.json().await.unwrap()
}

#[actix_web::test]
async fn a_search_in_slices_of_two_answers_as_one_in_a_single_slice() {
    let iso = Isolation::new();
    let (whole, admin) = admin_app(&iso, &[]).await;
    let (sliced, sliced_admin) = admin_app(&iso, &[("APP__ACTORS__SEARCH_SLICE", "2")]).await;
    for i in 0..9 {
        let name = if i % 3 == 0 {
            format!("Slice_Mix_{i}")
        } else {
            format!("other_{i}")
        };
        whole
            .register(&name, &format!("{name}@example.com"), PASSWORD)
            .await;
    }
    for query in [
        json!({}),
        json!({"username": "mix"}),
        json!({"email": "OTHER"}),
        json!({"status": "active", "limit": 3, "skip": 2}),
        json!({"limit": 4, "skip": 8}),
        json!({"skip": 50}),
        json!({"username": "nobody"}),
    ] {
        let expected = search(&whole, &admin, &query).await;
        let got = search(&sliced, &sliced_admin, &query).await;
        assert_eq!(got, expected, "{query}");
    }
    let all = search(&whole, &admin, &json!({})).await;
    assert_eq!(all["total"], 10, "nine users and the administrator");
}

/// How many users the head-of-line test searches (the benchmark uses 50,000: inserting them
/// into SecantusDB takes longer than a CI test should).
const USERS: usize = 10_000;

/// `n` users written straight into the users collection, as the service stores them.
async fn insert_users(app: &TestApp, n: usize) {
    let users = app.store.mongo().collection::<Document>("users");
    let now = BsonDateTime::now();
    let mut batch = Vec::new();
    for i in 0..n {
        let name = format!("bulk_{i}");
        batch.push(doc! {
            "_id": ObjectId::new(),
            "email": format!("{name}@example.com"),
            "username": &name,
            "username_lower": &name,
            "password_hash": "$2b$04$invalidinvalidinvalidinvalidinvalidinvalidinvalidinva",
            "status": "active",
            "role": "user",
            "created_at": now,
            "updated_at": now,
            "login_count": 0,
        });
        if batch.len() == 5000 || i + 1 == n {
            users
                .insert_many(std::mem::take(&mut batch))
                .await
                .expect("bulk users inserted");
        }
    }
}

#[actix_web::test]
async fn a_login_sent_during_a_search_of_10000_users_is_served_between_its_slices() {
    if !needs_servers("it measures MongoDB's queue behind a collection scan") {
        return;
    }
    let iso = Isolation::new();
    let (app, admin) = admin_app(&iso, &[("APP__ACTORS__SEARCH_SLICE", "250")]).await;
    let (email, _) = app.create_user().await;
    let started = Instant::now();
    insert_users(&app, USERS).await;
    eprintln!("inserted {USERS} users in {:?}", started.elapsed());

    // A substring no one has: the search reads every user.
    let searching = Instant::now();
    let nobody = json!({"username": "zz-nobody"});
    let search = app.post_auth("/users/search", &admin, &nobody);
    let login = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let sent = Instant::now();
        let response = app.login(&email, PASSWORD).await;
        (response.status(), sent.elapsed(), searching.elapsed())
    };
    let (searched, (status, login_took, login_done_at)) = futures::join!(search, login);
    let search_took = searching.elapsed();
    eprintln!("search of {USERS} users: {search_took:?}; login during it: {login_took:?}");

    assert_eq!(searched.status(), StatusCode::OK);
    let body: Value = searched.json().await.unwrap();
    assert_eq!(body["total"], 0);
    assert_eq!(status, StatusCode::OK);
    assert!(
        login_done_at < search_took,
        "the login was answered while the search was still running \
         (login done at {login_done_at:?}, search took {search_took:?})"
    );
    // One slice, not the scan. (SecantusDB materialises a query's whole result at its first
    // batch, so the first slice costs a scan of the collection there; on mongod a slice is one
    // batch. Beside the parallel suite this bound leaves room for that.)
    assert!(
        login_took < Duration::from_secs(2),
        "a login behind a search waits for one slice, not the scan: {login_took:?}"
    );
}
