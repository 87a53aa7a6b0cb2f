//! Group commit (issue "Group commit…"): the database queue takes what is queued as one batch
//! and carries it in few round trips. What must hold whatever lands in one batch: every caller
//! gets its own outcome, a failing operation fails only itself, and no read is older than a
//! write acknowledged before it was sent. Each test releases its requests at once, for several
//! rounds, on whichever backend the suite runs against.
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::Barrier;

use crate::helpers::{spawn_app_with, TestApp, PASSWORD};

/// The login count a read returns, by the user's own `GET /users/{id}` or `GET /auth/me`.
async fn login_count(app: &TestApp, id: &str, token: &str, via_me: bool) -> i64 {
    let response = if via_me {
        app.me(token).await
    } else {
        app.get_auth(&format!("/users/{id}"), token).await
    };
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let user = if via_me { &body["data"]["user"] } else { &body };
    user["login_count"].as_i64().expect("a login count")
}

#[actix_web::test]
async fn no_read_is_older_than_a_login_stamp_acknowledged_before_it() {
    const CLIENTS: usize = 12;
    const ROUNDS: usize = 5;
    let app = Arc::new(spawn_app_with(&[("MAX_CONCURRENT_SESSIONS", "1000")]).await);
    let (email, id, token, _) = app.signed_in_user().await;
    // Logins of this user whose stamp has been acknowledged (the login answered 200).
    let acknowledged = Arc::new(AtomicI64::new(1));
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(CLIENTS));
        let tasks = (0..CLIENTS).map(|client| {
            let (app, barrier, acknowledged) = (
                Arc::clone(&app),
                Arc::clone(&barrier),
                Arc::clone(&acknowledged),
            );
            let (email, id, token) = (email.clone(), id.clone(), token.clone());
            actix_web::rt::spawn(async move {
                barrier.wait().await;
                // Half the clients log in then read; the others read then log in, so stamps
                // and reads of the same user meet in the queue's batches.
                for step in 0..4 {
                    if (client + step) % 2 == 0 {
                        let response = app.login(&email, PASSWORD).await;
                        assert_eq!(response.status(), StatusCode::OK, "round {round}");
                        acknowledged.fetch_add(1, Ordering::SeqCst);
                    } else {
                        let before = acknowledged.load(Ordering::SeqCst);
                        let seen = login_count(&app, &id, &token, step % 3 == 0).await;
                        assert!(
                            seen >= before,
                            "round {round}: read {seen} logins after {before} were acknowledged"
                        );
                    }
                }
            })
        });
        for task in join_all(tasks).await {
            task.unwrap();
        }
    }
    let total = acknowledged.load(Ordering::SeqCst);
    assert_eq!(
        login_count(&app, &id, &token, false).await,
        total,
        "every acknowledged login is counted once"
    );
}

#[actix_web::test]
async fn a_duplicate_in_a_batch_fails_alone_and_the_others_are_answered_normally() {
    const REGISTRATIONS: usize = 10;
    const ROUNDS: usize = 4;
    let app = Arc::new(spawn_app_with(&[]).await);
    for round in 0..ROUNDS {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let barrier = Arc::new(Barrier::new(REGISTRATIONS));
        let tasks = (0..REGISTRATIONS).map(|i| {
            let (app, barrier, tag) = (Arc::clone(&app), Arc::clone(&barrier), tag.clone());
            actix_web::rt::spawn(async move {
                // The first two share an email; every other registration is unique.
                let email = format!("dup_{tag}_{}@example.com", i.saturating_sub(1));
                barrier.wait().await;
                let response = app
                    .register(&format!("d_{tag}_{i}"), &email, PASSWORD)
                    .await;
                response.status()
            })
        });
        let statuses: Vec<StatusCode> = join_all(tasks)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let mut pair = [statuses[0], statuses[1]];
        pair.sort();
        assert_eq!(
            pair,
            [StatusCode::CREATED, StatusCode::CONFLICT],
            "round {round}: one of the two with one email is created: {statuses:?}"
        );
        assert!(
            statuses[2..].iter().all(|s| *s == StatusCode::CREATED),
            "round {round}: the others are created: {statuses:?}"
        );
        for i in 0..REGISTRATIONS - 1 {
            let email = format!("dup_{tag}_{i}@example.com");
            let stored = app
                .count("users", mongodb::bson::doc! {"email": &email})
                .await;
            assert_eq!(stored, 1, "round {round}: {email} is stored once");
            let response = app.login(&email, PASSWORD).await;
            assert_eq!(response.status(), StatusCode::OK, "round {round}: {email}");
        }
    }
}

#[actix_web::test]
async fn health_and_metrics_show_operations_per_round_trip() {
    let app = Arc::new(spawn_app_with(&[("MAX_CONCURRENT_SESSIONS", "1000")]).await);
    let (_, id, token, _) = app.signed_in_user().await;
    // Many reads at once: they queue behind each other and leave in batches.
    let mut best = 0.0_f64;
    for _ in 0..5 {
        let barrier = Arc::new(Barrier::new(48));
        let tasks = (0..48).map(|_| {
            let (app, barrier, id, token) = (
                Arc::clone(&app),
                Arc::clone(&barrier),
                id.clone(),
                token.clone(),
            );
            actix_web::rt::spawn(async move {
                barrier.wait().await;
                login_count(&app, &id, &token, false).await
            })
        });
        for task in join_all(tasks).await {
            task.unwrap();
        }
        let health = app.get_json("/health").await;
        let per_trip = &health["details"]["actors"]["db_queue"]["ops_per_round_trip"];
        let p50 = per_trip["p50"].as_f64().expect("a p50");
        let p99 = per_trip["p99"].as_f64().expect("a p99");
        assert!(p50 >= 1.0 && p99 >= p50, "{per_trip}");
        best = best.max(p99);
        if best > 1.0 {
            break;
        }
    }
    assert!(
        best > 1.0,
        "some round trip carried more than one operation: {best}"
    );
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("csum_db_queue_ops_per_round_trip_bucket"),
        "the histogram is exported"
    );
}

/// The hashing pool verifies (and hashes) a vector's worth of queued passwords as one batch:
/// whichever requests share a batch, each gets its own verdict. One hashing thread at a cost
/// where a hash takes milliseconds, so a burst queues up: right and wrong passwords of several
/// users, and registrations, released at once, for several rounds.
#[actix_web::test]
async fn logins_and_registrations_sharing_a_bcrypt_batch_each_get_their_own_verdict() {
    const USERS: usize = 8;
    const ROUNDS: usize = 3;
    let app = Arc::new(
        spawn_app_with(&[
            ("HASHER_THREADS", "1"),
            ("BCRYPT_COST", "8"),
            ("MAX_CONCURRENT_SESSIONS", "1000"),
        ])
        .await,
    );
    for round in 0..ROUNDS {
        let tag = format!(
            "{round}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let registered = join_all((0..USERS).map(|n| {
            let app = Arc::clone(&app);
            let tag = tag.clone();
            async move {
                let (name, email) = (format!("b{n}_{tag}"), format!("b{n}_{tag}@example.com"));
                let password = format!("{PASSWORD}-{n}");
                let status = app.register(&name, &email, &password).await.status();
                assert_eq!(status, StatusCode::CREATED, "round {round}");
                (email, password)
            }
        }))
        .await;
        let barrier = Arc::new(Barrier::new(USERS * 3));
        let mut tasks = Vec::new();
        for (n, (email, password)) in registered.iter().enumerate() {
            // Each user's own password, another user's, and a new registration.
            let other = &registered[(n + 1) % USERS].1;
            let attempts = [
                (email.clone(), password.clone(), StatusCode::OK),
                (email.clone(), other.clone(), StatusCode::UNAUTHORIZED),
                (
                    String::new(),
                    format!("{PASSWORD}-new{n}"),
                    StatusCode::CREATED,
                ),
            ];
            for (email, password, expected) in attempts {
                let (app, barrier, tag) = (Arc::clone(&app), Arc::clone(&barrier), tag.clone());
                tasks.push(actix_web::rt::spawn(async move {
                    barrier.wait().await;
                    let (status, email) = if email.is_empty() {
                        let email = format!("n{n}_{tag}@example.com");
                        let name = format!("n{n}_{tag}");
                        (app.register(&name, &email, &password).await.status(), email)
                    } else {
                        (app.login(&email, &password).await.status(), email)
                    };
                    assert_eq!(status, expected, "round {round}: {email}");
                    if expected == StatusCode::CREATED {
                        // The hash made in the batch is this user's.
                        let status = app.login(&email, &password).await.status();
                        assert_eq!(status, StatusCode::OK, "round {round}: {email}");
                    }
                }));
            }
        }
        for task in join_all(tasks).await {
            task.unwrap();
        }
    }
    // Batches did form (the histogram is process-wide: some batch, here or in a test beside
    // this one, carried more than one password).
    if bcrypt::detected_backend().lanes() > 1 {
        let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
        let metrics = metrics.text().await.unwrap();
        let value = |name: &str| -> f64 {
            (metrics.lines())
                .find_map(|line| line.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in /metrics"))
        };
        let alone = value("csum_hasher_passwords_per_batch_bucket{le=\"1\"}");
        let all = value("csum_hasher_passwords_per_batch_count");
        assert!(all > alone, "no batch carried more than one password");
    }
}
