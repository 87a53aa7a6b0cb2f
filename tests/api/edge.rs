//! The edge (SPEC 7): JSON bodies only, security headers, logs without secrets, bounded metric
//! labels, the per-address rate limit, bounded memory while nobody scrapes.
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::Barrier;

use crate::cross_instance::start_instance_with;
use crate::helpers::{
    assert_error, client_from, spawn_app, spawn_app_in, spawn_app_with, Backdoor, Isolation,
    TestApp, PASSWORD,
};

#[actix_web::test]
async fn a_body_not_sent_as_json_is_415_and_changes_nothing() {
    let app = spawn_app().await;
    let (email, _) = app.create_user().await;
    let body =
        json!({"username": "plain_text", "email": "plain@example.com", "password": PASSWORD})
            .to_string();
    for path in ["/auth/register", "/auth/login"] {
        let response = app
            .client
            .post(app.url(path))
            .header("content-type", "text/plain")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    }
    let users = app
        .count("users", mongodb::bson::doc! {"email": "plain@example.com"})
        .await;
    assert_eq!(users, 0);

    // JSON with a charset parameter is JSON; a bodiless POST is unaffected.
    let login = app
        .client
        .post(app.url("/auth/login"))
        .header("content-type", "application/json; charset=utf-8")
        .body(json!({"email": email, "password": PASSWORD}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let body: serde_json::Value = login.json().await.unwrap();
    let access = body["data"]["access_token"].as_str().unwrap();
    assert_eq!(app.logout(access).await.status(), StatusCode::OK);
}

fn header<'r>(response: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[actix_web::test]
async fn responses_carry_the_security_headers() {
    let app = spawn_app().await;
    let (email, _) = app.create_user().await;
    let login = app.login(&email, PASSWORD).await;
    let missing = app.client.get(app.url("/nowhere")).send().await.unwrap();
    for response in [&login, &missing] {
        assert_eq!(header(response, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(response, "cache-control"), Some("no-store"));
    }
    for path in ["/ops", "/ops.js", "/ops.css"] {
        let page = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "{path}");
        assert_eq!(
            header(&page, "content-security-policy"),
            Some("default-src 'self'")
        );
        assert_eq!(header(&page, "x-frame-options"), Some("DENY"));
        assert_eq!(header(&page, "x-content-type-options"), Some("nosniff"));
    }
}

#[actix_web::test]
async fn no_token_and_no_forged_address_reaches_the_log() {
    let iso = Isolation::new();
    let log = iso.data_dir.with_extension("log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let (mut process, app) = start_instance_with(&iso, &[("RUST_LOG", "info")], Some(&log)).await;

    let response = app
        .client
        .get(app.url("/auth/me?access_token=SECRET-IN-QUERY&limit=3"))
        .header("authorization", "Bearer SECRET-IN-HEADER")
        .header("x-forwarded-for", "6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = process.child.kill();
    let _ = process.child.wait();

    let written = std::fs::read_to_string(&log).unwrap();
    assert!(
        written.contains("/auth/me"),
        "the request is logged: {written}"
    );
    for secret in ["SECRET-IN-QUERY", "SECRET-IN-HEADER", "6.6.6.6"] {
        assert!(!written.contains(secret), "{secret} in the log: {written}");
    }
    assert!(
        written.contains("127.0.0.1"),
        "the peer is the client: {written}"
    );
}

#[actix_web::test]
async fn made_up_methods_add_no_metric_series() {
    let app = spawn_app().await;
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("XQWERT{i}").as_bytes()).unwrap();
        let response = app
            .client
            .request(method, app.url("/health/live"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert!(!metrics.contains("XQWERT"));
    let other = metrics
        .lines()
        .filter(|l| l.starts_with("csum_http_requests_total") && l.contains("method=\"other\""))
        .count();
    assert!(other <= 3, "one series per route and status: {other}");
}

/// `count` right-password logins for `email` from `ip`, released at once against `apps` in
/// turn; their statuses and `Retry-After`s.
async fn logins_at_once(
    apps: &[&TestApp],
    ip: &str,
    email: &str,
    password: &str,
    count: usize,
) -> Vec<(StatusCode, Option<String>)> {
    let client = client_from(ip);
    let barrier = Arc::new(Barrier::new(count));
    let tasks = (0..count).map(|i| {
        let request = client
            .post(apps[i % apps.len()].url("/auth/login"))
            .json(&json!({"email": email, "password": password}));
        let barrier = barrier.clone();
        actix_web::rt::spawn(async move {
            barrier.wait().await;
            let response = request.send().await.unwrap();
            let retry = header(&response, "retry-after").map(str::to_string);
            (response.status(), retry)
        })
    });
    join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

#[actix_web::test]
async fn one_address_beyond_its_rate_gets_429_and_others_are_served() {
    let app = spawn_app_with(&[
        ("AUTH_RATE_LIMIT", "1"),
        ("AUTH_RATE_BURST", "10"),
        ("MAX_CONCURRENT_SESSIONS", "40"),
    ])
    .await;
    let (email, _) = app.create_user().await;

    let answers = logins_at_once(&[&app], "127.0.0.5", &email, PASSWORD, 40).await;

    let limited: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(limited.len() >= 20, "{answers:?}");
    assert!(limited.iter().all(|(_, retry)| retry
        .as_deref()
        .and_then(|r| r.parse::<u64>().ok())
        .is_some_and(|r| r >= 1)));
    let other = app
        .login_with(&client_from("127.0.0.6"), &email, PASSWORD, None)
        .await;
    assert_eq!(other.status(), StatusCode::OK);
}

#[actix_web::test]
async fn rate_limited_guesses_count_toward_no_lockout() {
    let app = spawn_app_with(&[
        ("AUTH_RATE_LIMIT", "1"),
        ("AUTH_RATE_BURST", "2"),
        ("LOGIN_MAX_FAILURES_PER_ACCOUNT", "10"),
    ])
    .await;
    let (email, _) = app.create_user().await;

    let answers = logins_at_once(&[&app], "127.0.0.7", &email, "wrong-password-1", 40).await;

    let limited = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(limited >= 30, "{answers:?}");
    // Had the refused guesses counted, the account would be locked everywhere (10 failures).
    let owner = app
        .login_with(&client_from("127.0.0.8"), &email, PASSWORD, None)
        .await;
    assert_eq!(owner.status(), StatusCode::OK);
}

#[actix_web::test]
async fn two_instances_share_one_rate_budget() {
    let iso = Isolation::new();
    let limits = [
        ("AUTH_RATE_LIMIT", "1"),
        ("AUTH_RATE_BURST", "10"),
        ("MAX_CONCURRENT_SESSIONS", "40"),
    ];
    let first = spawn_app_in(&iso, &limits).await;
    let second = spawn_app_in(&iso, &limits).await;
    let (email, _) = first.create_user().await;

    let answers = logins_at_once(&[&first, &second], "127.0.0.9", &email, PASSWORD, 40).await;

    let served = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert!(
        served <= 15,
        "one budget of 10 (+ what refills meanwhile): {answers:?}"
    );
}

/// The resident set of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// `total` GET /auth/me with `concurrency` connections.
async fn me_load(app: &TestApp, token: &str, total: usize, concurrency: usize) {
    let per_task = total / concurrency;
    let tasks = (0..concurrency).map(|_| {
        let (client, url, token) = (app.client.clone(), app.url("/auth/me"), token.to_string());
        actix_web::rt::spawn(async move {
            for _ in 0..per_task {
                let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
            }
        })
    });
    for task in join_all(tasks).await {
        task.unwrap();
    }
}

#[actix_web::test]
async fn memory_stays_bounded_while_nobody_reads_the_metrics() {
    let iso = Isolation::new();
    let (process, app) = start_instance_with(&iso, &[], None).await;
    let (_, _, access, _) = app.signed_in_user().await;
    let pid = process.child.id();

    me_load(&app, &access, 20_000, 32).await;
    let warmed = rss(pid);
    me_load(&app, &access, 120_000, 32).await;
    let after = rss(pid);

    eprintln!(
        "RSS after warm-up {} KiB, after 120k more /auth/me {} KiB",
        warmed / 1024,
        after / 1024
    );
    assert!(
        after <= warmed + 16 * 1024 * 1024,
        "RSS grew from {warmed} to {after} bytes"
    );
}

/// An audit entry written `days_ago`, straight into the store.
async fn old_audit_entry(app: &TestApp, action: &str, days_ago: i64) {
    let at = chrono::Utc::now() - chrono::Duration::days(days_ago);
    match &app.store {
        Backdoor::Mongo(db) => {
            db.collection::<mongodb::bson::Document>("audit_log")
                .insert_one(mongodb::bson::doc! {
                    "at": mongodb::bson::DateTime::from_chrono(at), "action": action,
                    "outcome": "success", "details": {},
                })
                .await
                .unwrap();
        }
        Backdoor::Sqlite(path) => {
            let (path, action) = (path.clone(), action.to_string());
            tokio::task::spawn_blocking(move || {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.busy_timeout(Duration::from_secs(10)).unwrap();
                conn.execute(
                    "INSERT INTO audit_log (id, at, action, outcome, details) \
                     VALUES (?, ?, ?, 'success', '{}')",
                    rusqlite::params![
                        mongodb::bson::oid::ObjectId::new().to_hex(),
                        at.timestamp_millis(),
                        action
                    ],
                )
                .unwrap();
            })
            .await
            .unwrap();
        }
    }
}

#[actix_web::test]
async fn audit_entries_older_than_the_retention_are_removed_and_younger_ones_stay() {
    let iso = Isolation::new();
    let settings = [
        ("AUDIT_RETENTION_DAYS", "30"),
        ("SESSION_CHECK_INTERVAL", "1"),
    ];
    let app = spawn_app_in(&iso, &settings).await;
    old_audit_entry(&app, "test.old", 40).await;
    old_audit_entry(&app, "test.young", 10).await;

    let mut left = u64::MAX;
    for _ in 0..50 {
        left = app
            .count("audit_log", mongodb::bson::doc! {"action": "test.old"})
            .await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_eq!(left, 0, "the old entry is removed by the sweep");
    let young = app
        .count("audit_log", mongodb::bson::doc! {"action": "test.young"})
        .await;
    assert_eq!(young, 1);
    if let Backdoor::Mongo(db) = &app.store {
        let db = db.clone();
        // The TTL index says the same, so a MongoDB that expires documents does it by itself.
        let indexes = db
            .collection::<mongodb::bson::Document>("audit_log")
            .list_indexes()
            .await
            .unwrap();
        use futures::TryStreamExt;
        let indexes: Vec<mongodb::IndexModel> = indexes.try_collect().await.unwrap();
        let at = indexes
            .iter()
            .find(|i| i.options.as_ref().and_then(|o| o.name.as_deref()) == Some("at"))
            .and_then(|i| i.options.as_ref()?.expire_after);
        assert_eq!(at, Some(Duration::from_secs(30 * 86_400)));
        // A changed retention changes that index (collMod), never a second one.
        let _again = spawn_app_in(&iso, &[("AUDIT_RETENTION_DAYS", "7")]).await;
        let indexes: Vec<mongodb::IndexModel> = db
            .collection::<mongodb::bson::Document>("audit_log")
            .list_indexes()
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let on_at: Vec<_> = indexes
            .iter()
            .filter(|i| i.keys.contains_key("at") && i.keys.len() == 1)
            .collect();
        assert_eq!(on_at.len(), 1);
        assert_eq!(
            on_at[0].options.as_ref().and_then(|o| o.expire_after),
            Some(Duration::from_secs(7 * 86_400))
        );
    }
}

/// Sends `request` as raw bytes on a new connection and reads the whole answer (the service
/// closes the connection after these errors): (status, content type, body).
pub(crate) async fn raw_answer(app: &TestApp, request: Vec<u8>) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.address.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    // The service may answer and close before it has read everything sent.
    let _ = stream.write_all(&request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (status, content_type.trim().to_string(), body.to_string())
}

/// The answers actix-http gives before any handler runs (a head too large, a malformed one, one
/// too slow to arrive) have the JSON error shape too (SPEC 10).
#[actix_web::test]
async fn answers_given_before_any_handler_have_the_json_error_shape() {
    let app = spawn_app().await;
    let many_headers: String = (0..120).map(|i| format!("x-h{i}: {i}\r\n")).collect();
    let huge_header = format!("x-big: {}\r\n", "a".repeat(140 * 1024));
    let cases = [
        (
            431,
            format!("GET /health HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n"),
        ),
        (
            431,
            format!("GET /health HTTP/1.1\r\nhost: x\r\n{huge_header}\r\n"),
        ),
        (
            400,
            "GET /health HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n".to_string(),
        ),
        // Never finished: the head timer (5 s) ends it.
        (408, "GET /health HTTP/1.1\r\nhost: x\r\n".to_string()),
    ];
    let answers = join_all(
        cases
            .iter()
            .map(|(_, request)| raw_answer(&app, request.clone().into_bytes())),
    )
    .await;

    for ((want, _), (status, content_type, body)) in cases.iter().zip(answers) {
        assert_eq!(status, *want, "{body}");
        assert_eq!(content_type, "application/json", "{status}: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
        assert_eq!(body["success"], false, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    // The connection wrapping changes nothing else: an ordinary request still answers.
    let ok = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

/// Every request has an id: a usable `X-Request-Id` is kept, anything else replaced; the id
/// comes back on the answer, and the request's access line (JSON, parsed) holds it with the
/// route template and the status. Neither a query value nor a header value is on the line.
#[actix_web::test]
async fn a_request_id_comes_back_and_the_access_line_holds_it_with_route_and_status() {
    let iso = Isolation::new();
    let log = iso.data_dir.with_extension("log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let env = [("RUST_LOG", "info,actors=debug"), ("LOG_FORMAT", "json")];
    let (mut process, app) = start_instance_with(&iso, &env, Some(&log)).await;
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let email = format!("rid_{tag}@example.com");
    let body = json!({"username": format!("rid_{tag}"), "email": email, "password": PASSWORD});

    let registered = app
        .client
        .post(app.url("/auth/register"))
        .header("x-request-id", format!("client-{tag}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let login = json!({"email": email, "password": PASSWORD});
    let unusable = "not usable ".repeat(10);
    let signed_in = app
        .client
        .post(app.url("/auth/login?secret=QUERY-VALUE"))
        .header("x-request-id", unusable.trim())
        .json(&login)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = process.child.kill();
    let _ = process.child.wait();

    assert_eq!(registered.status(), StatusCode::CREATED);
    assert_eq!(
        header(&registered, "x-request-id"),
        Some(format!("client-{tag}").as_str())
    );
    assert_eq!(signed_in.status(), StatusCode::OK);
    let generated = header(&signed_in, "x-request-id")
        .unwrap_or_default()
        .to_string();
    assert!(
        !generated.is_empty() && !generated.contains(' '),
        "{generated}"
    );
    let written = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = written
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // Flat lines: the event's fields and those of every span it happened in, at the top level.
    let access = |id: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "request" && l["request_id"].as_str() == Some(id))
    };
    let line = access(&format!("client-{tag}")).unwrap_or_else(|| panic!("{written}"));
    assert_eq!(line["http.route"], "/auth/register", "{line}");
    assert_eq!(line["status"], 201, "{line}");
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");
    assert!(
        line.get("span").is_none() && line.get("spans").is_none(),
        "{line}"
    );
    let line = access(&generated).unwrap_or_else(|| panic!("{written}"));
    assert_eq!(line["status"], 200, "{line}");
    // The actors' lines for a request carry its id: the AccountActor's, run on another task.
    let by_actor = |message: &str, id: &str| {
        lines.iter().any(|l| {
            l["message"] == message
                && l["request_id"].as_str() == Some(id)
                && l["target"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("actors::account"))
        })
    };
    assert!(
        by_actor("registered", &format!("client-{tag}")),
        "{written}"
    );
    assert!(by_actor("signed in", &generated), "{written}");
    assert!(
        !written.contains("QUERY-VALUE") && !written.contains("not usable"),
        "{written}"
    );
}
