//! Following a request as an operator does (SPEC 12): its spans over OTLP to a real receiver,
//! under the client's trace; `/metrics` by Prometheus's conventions; a log that stays readable
//! while a dependency fails.
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::compat::python;
use crate::cross_instance::start_instance_with;
use crate::helpers::{spawn_app, Isolation, PASSWORD};

/// `tests/otlp/receiver.py`: decodes what arrives at `/v1/traces` with the `opentelemetry-proto`
/// package and writes each span as a JSON line; killed when dropped.
struct Receiver {
    child: Child,
    port: u16,
    spans: PathBuf,
}

impl Receiver {
    fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("the receiver's directory");
        let spans = dir.join("spans.jsonl");
        let mut child = Command::new(python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/otlp/receiver.py"
            ))
            .arg(&spans)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("TEST_PYTHON runs the receiver");
        let mut first = String::new();
        let stdout = child.stdout.take().expect("the receiver's stdout");
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("the receiver prints its port");
        let port = first.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the receiver did not start (opentelemetry-proto installed?): {first:?}")
        });
        Self { child, port, spans }
    }

    /// The spans received so far of `trace_id`.
    fn spans_of(&self, trace_id: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.spans)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|s| s["trace_id"] == trace_id)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A login sent with a W3C `traceparent` reaches a real OTLP/HTTP receiver as one trace: the
/// request's span (a server span, child of the client's) and a child per actor message with
/// its mailbox wait, the AccountActor's `Login` among them; the access line carries the trace id.
#[actix_web::test]
async fn a_login_s_spans_reach_an_otlp_receiver_under_the_client_s_trace() {
    let iso = Isolation::new();
    let receiver = Receiver::start(&iso.data_dir.with_extension("otlp"));
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let log = iso.data_dir.with_extension("log");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ];
    let (mut process, app) = start_instance_with(&iso, &env, Some(&log)).await;
    let (email, _) = app.create_user().await;
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let client_span = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();

    let signed_in = app
        .client
        .post(app.url("/auth/login"))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::OK);
    let request_id = (signed_in.headers().get("x-request-id"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();

    let is_step = |s: &Value| s["attributes"]["actor.name"].is_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = receiver.spans_of(&trace_id);
        let login_step = spans.iter().any(|s| {
            s["attributes"]["actor.name"] == "AccountActor"
                && s["attributes"]["actor.message"] == "Login"
        });
        if login_step && spans.iter().any(|s| s["name"] == "POST /auth/login") {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "no login trace received within 20 s: {spans:#?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = process.child.kill();
    let _ = process.child.wait();

    let request = (spans.iter())
        .find(|s| s["name"] == "POST /auth/login")
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(request["parent_span_id"], client_span.as_str(), "{request}");
    assert_eq!(request["kind"], 2, "a server span: {request}");
    assert_eq!(request["service"], "cs-user-management", "{request}");
    assert_eq!(
        request["attributes"]["http.route"], "/auth/login",
        "{request}"
    );
    assert_eq!(
        request["attributes"]["request_id"],
        request_id.as_str(),
        "{request}"
    );
    // Every actor message is a step under the request (directly, or under the step that sent it).
    let ids: BTreeSet<&str> = spans.iter().filter_map(|s| s["span_id"].as_str()).collect();
    let steps: Vec<&Value> = spans.iter().filter(|s| is_step(s)).collect();
    for step in &steps {
        assert!(
            ids.contains(step["parent_span_id"].as_str().unwrap_or_default()),
            "a step outside the request: {step}"
        );
        assert!(
            step["attributes"]["actor.mailbox_wait_ms"]
                .as_f64()
                .is_some(),
            "{step}"
        );
        assert!(
            step["end_ns"].as_u64() >= step["start_ns"].as_u64(),
            "{step}"
        );
    }
    let login = (steps.iter())
        .find(|s| s["attributes"]["actor.message"] == "Login")
        .unwrap_or_else(|| panic!("{steps:#?}"));
    // Under the request: through the handler's span, which sent the message.
    let parent_of = |id: &str| {
        (spans.iter())
            .find(|s| s["span_id"] == id)
            .and_then(|s| s["parent_span_id"].as_str())
    };
    let mut ancestor = login["parent_span_id"].as_str();
    while let Some(id) = ancestor.filter(|id| request["span_id"] != *id) {
        ancestor = parent_of(id);
    }
    assert!(
        ancestor.is_some(),
        "the Login step is not under the request: {spans:#?}"
    );
    let actors: BTreeSet<&str> = (steps.iter())
        .filter_map(|s| s["attributes"]["actor.name"].as_str())
        .collect();
    assert!(
        actors.len() >= 2,
        "the login's work crosses actors: {actors:?}"
    );

    let written = std::fs::read_to_string(&log).unwrap_or_default();
    let access = (written.lines())
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "request" && l["request_id"] == request_id.as_str())
        .unwrap_or_else(|| panic!("no access line for {request_id}: {written}"));
    assert_eq!(access["trace_id"], trace_id.as_str(), "{access}");
}

/// `/metrics` as Prometheus's conventions ask: every family has `# HELP` and `# TYPE`, the
/// service's own are prefixed `csum_`, the process's and the build's are there, and logins are
/// counted by outcome, the password-work histogram beside them.
#[actix_web::test]
async fn metrics_follow_the_conventions_and_count_logins_by_outcome() {
    let app = spawn_app().await;
    let (email, _) = app.create_user().await;
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
    let wrong = app.login(&email, "Wrong-passw0rd!").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let text = (app.client.get(app.url("/metrics")).send().await.unwrap())
        .text()
        .await
        .unwrap();
    let declared = |kind: &str| -> BTreeSet<String> {
        (text.lines())
            .filter_map(|l| l.strip_prefix(&format!("# {kind} ")))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    };
    let (helped, typed) = (declared("HELP"), declared("TYPE"));
    let samples: BTreeSet<&str> = (text.lines())
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for sample in &samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| sample.strip_suffix(suffix).filter(|f| typed.contains(*f)))
            .unwrap_or(sample);
        assert!(helped.contains(family), "{family} has no # HELP");
        assert!(typed.contains(family), "{family} has no # TYPE");
        assert!(
            family.starts_with("csum_") || family.starts_with("process_"),
            "{family} is neither the service's (csum_) nor the process's"
        );
    }
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "csum_build_info",
        "csum_login_duration_seconds",
    ] {
        assert!(typed.contains(family), "{family} missing:\n{text}");
    }
    let build = (text.lines())
        .find(|l| l.starts_with("csum_build_info{"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        build.contains("version=\"") && build.contains("commit=\"") && build.ends_with(" 1"),
        "{build}"
    );
    for outcome in ["success", "bad_password"] {
        let line = format!("csum_logins_total{{outcome=\"{outcome}\"}}");
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
    assert!(
        !samples.contains("csum_actor_restarts"),
        "the gauge beside the counter is gone"
    );
}

/// With the token store down, 600 failing requests spread over two seconds write about one line
/// each (their access lines): the 503s' cause is logged once a second with a count of those held
/// back. A log written to a file has no colour codes.
#[actix_web::test]
async fn a_flood_of_failures_writes_about_a_line_each_and_no_colour_codes() {
    let iso = Isolation::new();
    let log = iso.data_dir.with_extension("log");
    let env = [
        ("TOKENS_BACKEND", "redis"),
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", "1"),
        ("REDIS_CLUSTER_NODES", ""),
        ("RUST_LOG", "info"),
    ];
    let (mut process, app) = start_instance_with(&iso, &env, Some(&log)).await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let before = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();

    for _ in 0..6 {
        let round = (0..100).map(|_| app.login("nobody@example.com", PASSWORD));
        for answer in futures::future::join_all(round).await {
            assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        actix_web::rt::time::sleep(Duration::from_millis(400)).await;
    }
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let _ = process.child.kill();
    let _ = process.child.wait();

    let written = std::fs::read_to_string(&log).unwrap_or_default();
    let added: Vec<&str> = written.lines().skip(before).collect();
    assert!(
        added.len() <= 600 + 20,
        "{} lines for 600 requests:\n{}",
        added.len(),
        added.join("\n")
    );
    let causes: Vec<&&str> = (added.iter())
        .filter(|l| l.contains("service unavailable"))
        .collect();
    assert!(
        (1..=8).contains(&causes.len()),
        "the cause once a second: {causes:#?}"
    );
    assert!(
        causes.iter().any(|l| !l.contains("held_back=0")),
        "a count of the lines held back: {causes:#?}"
    );
    assert!(
        !written.contains("\x1b["),
        "colour codes in a file:\n{written}"
    );
}
