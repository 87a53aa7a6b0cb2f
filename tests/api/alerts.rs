//! The alert rules and the dashboard of `deploy/`, checked the way an operator would use them:
//! `promtool` checks the rules and runs their unit tests, and a real Prometheus scrapes the real
//! service binary every second with those rules loaded, while a registration burst fills the
//! hashing pool and a Redis the test started is killed. What must hold: the mailbox alert goes
//! pending or firing for the hashing actor, the dependency alert fires for Redis, every rule
//! evaluates without error, and every query of the dashboard parses and returns series.
//!
//! `prometheus` and `promtool` come from Debian's `prometheus` package (`scripts/test.sh`
//! installs it); `TEST_PROMETHEUS` / `TEST_PROMTOOL` name other binaries.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    free_port, needs_servers, poll_for, start_redis, start_service, wait_until_up, Isolation,
    ScratchDir, Server, PASSWORD,
};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn binary(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.into())
}

/// Runs `promtool` with `args`; its output when it fails.
fn promtool(args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new(binary("TEST_PROMTOOL", "promtool"))
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .unwrap_or_else(|e| panic!("promtool runs (Debian's `prometheus` package): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

#[test]
fn the_rules_and_the_compose_prometheus_config_pass_promtool_and_the_rules_unit_tests() {
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["check", "config", "prometheus.yml"],
        &["test", "rules", "alerts.test.yml"],
    ] {
        if let Err(output) = promtool(args) {
            panic!("promtool {} failed:\n{output}", args.join(" "));
        }
    }
}

/// Every PromQL expression of the dashboard, with its panel's title.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy("grafana/cs-user-management.json"))
        .expect("the dashboard is readable");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"]
        .as_array()
        .expect("the dashboard has panels")
    {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target has an expr");
            let title = panel["title"].as_str().unwrap_or_default();
            queries.push((title.to_string(), expr.to_string()));
        }
    }
    queries
}

/// The alert rules' names and the recording rules they and the dashboard read.
fn rule_names() -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let mut alerts = Vec::new();
    let mut records = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            alerts.push(name.to_string());
        } else if let Some(name) = line.strip_prefix("- record: ") {
            records.push(name.to_string());
        }
    }
    (alerts, records)
}

#[test]
fn the_dashboard_draws_every_recorded_series_and_names_every_alert() {
    let queries = dashboard_queries();
    let (alerts, records) = rule_names();
    assert!(
        alerts.len() >= 7 && records.len() >= 5,
        "{alerts:?} {records:?}"
    );
    let text = std::fs::read_to_string(deploy("grafana/cs-user-management.json")).unwrap();
    for record in &records {
        assert!(
            queries.iter().any(|(_, q)| q == record),
            "no dashboard panel draws the recorded series {record}"
        );
    }
    for alert in alerts.iter().filter(|a| *a != "CsUmServiceDown") {
        assert!(
            text.contains(alert.as_str()),
            "no panel description names {alert}"
        );
    }
}

/// A Prometheus of this test: scrapes `target` every second and evaluates the rules of
/// `deploy/prometheus/alerts.yml` every second.
async fn start_prometheus(target: &str, scratch: &ScratchDir) -> (Server, String) {
    let port = free_port();
    let config = scratch.join("prometheus.yml");
    let rules = deploy("prometheus/alerts.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: cs-user-management\n    \
             static_configs: [{{targets: [\"{target}\"]}}]\n",
            rules.display()
        ),
    )
    .unwrap();
    let args = [
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", scratch.join("tsdb").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--log.level=warn".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let program = binary("TEST_PROMETHEUS", "prometheus");
    let mut server = Server::spawn(
        "prometheus",
        Path::new(&program),
        &args,
        std::iter::empty(),
        scratch.join("prometheus.log"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let ready = wait_until_up(&mut server, || async {
        client
            .get(format!("{base}/-/ready"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    assert!(ready, "Prometheus did not get ready\n{}", server.log_tail());
    (server, base)
}

/// The `data` of a Prometheus API answer.
async fn api(client: &reqwest::Client, url: String) -> Value {
    let body: Value = client
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("Prometheus answers")
        .json()
        .await
        .expect("Prometheus answers JSON");
    assert_eq!(body["status"], "success", "{body}");
    body["data"].clone()
}

/// The instant-query result of `expr`.
async fn query(client: &reqwest::Client, prometheus: &str, expr: &str) -> Vec<Value> {
    let url =
        reqwest::Url::parse_with_params(&format!("{prometheus}/api/v1/query"), [("query", expr)])
            .unwrap();
    api(client, url.to_string()).await["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits (at most `within`) for `alert` with the label `label` = `value` in one of `states`.
async fn alert_in(
    client: &reqwest::Client,
    prometheus: &str,
    (alert, label, value): (&str, &str, &str),
    states: &[&str],
    within: Duration,
) -> Option<Value> {
    poll_for(within, || async {
        let data = api(client, format!("{prometheus}/api/v1/alerts")).await;
        data["alerts"].as_array()?.iter().find_map(|a| {
            let matches = a["labels"]["alertname"] == alert
                && a["labels"][label] == value
                && states.iter().any(|s| a["state"] == *s);
            matches.then(|| a.clone())
        })
    })
    .await
}

#[actix_web::test]
async fn a_real_prometheus_with_the_rules_sees_a_full_hashing_pool_and_a_redis_outage_and_answers_every_dashboard_query(
) {
    if !needs_servers("it kills a Redis of its own") {
        return;
    }
    // Arrange: a private Redis, the service binary on it with a small hashing mailbox at cost
    // 10, and a Prometheus scraping it every second with the rules.
    let scratch = ScratchDir::new("prometheus");
    let redis_port = free_port();
    let redis_port_arg = redis_port.to_string();
    let mut redis = start_redis(redis_port, &scratch).await;
    let iso = Isolation::new();
    let (_service, app) = start_service(
        &iso,
        &[
            ("REDIS_HOST", "127.0.0.1"),
            ("REDIS_PORT", redis_port_arg.as_str()),
            ("REDIS_TIMEOUT_MS", "500"),
            ("PROBE_INTERVAL_MS", "200"),
            ("BCRYPT_COST", "10"),
            ("APP__ACTORS__HASHER_CAPACITY", "4"),
        ],
        &scratch,
    )
    .await;
    let target = app.address.trim_start_matches("http://").to_string();
    let (_prometheus, prometheus) = start_prometheus(&target, &scratch).await;
    let client = reqwest::Client::new();
    let scraped = poll_for(Duration::from_secs(30), || async {
        let up = query(&client, &prometheus, r#"up{job="cs-user-management"} == 1"#).await;
        (!up.is_empty()).then_some(())
    })
    .await;
    assert!(scraped.is_some(), "Prometheus scrapes the service");
    // One login, so the login latency series exists.
    let (email, _) = app.create_user().await;
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);

    // Act 1: a registration burst, twice the hashing mailbox's capacity, until the alert shows.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut burst = Vec::new();
    for worker in 0..8 {
        let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
        let (client, url) = (app.client.clone(), app.url("/auth/register"));
        burst.push(actix_web::rt::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!(
                    "burst{worker}x{n}x{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..6]
                );
                let body = json!({"username": id, "email": format!("{id}@example.com"),
                    "password": PASSWORD});
                if client.post(&url).json(&body).send().await.is_ok() {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mailbox_alert = alert_in(
        &client,
        &prometheus,
        ("CsUmActorMailboxNearlyFull", "actor", "hasher"),
        &["pending", "firing"],
        Duration::from_secs(90),
    )
    .await;
    // Every dashboard query parses and has series (the hashing pool's queue wait included).
    let mut empty = Vec::new();
    for (title, expr) in dashboard_queries() {
        let found = poll_for(Duration::from_secs(30), || async {
            let result = query(&client, &prometheus, &expr).await;
            (!result.is_empty()).then_some(())
        })
        .await;
        if found.is_none() {
            empty.push(format!("{title}: {expr}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in burst {
        task.await.unwrap();
    }
    assert!(
        mailbox_alert.is_some(),
        "the mailbox alert for the hashing actor went pending or firing ({} registrations answered)",
        answered.load(Ordering::Relaxed)
    );
    assert!(
        empty.is_empty(),
        "dashboard queries without series: {empty:#?}"
    );
    let rules = api(&client, format!("{prometheus}/api/v1/rules")).await;
    let unhealthy: Vec<&Value> = rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter(|r| r["health"] != "ok")
        .collect();
    assert!(
        unhealthy.is_empty(),
        "rules that failed to evaluate: {unhealthy:#?}"
    );

    // Act 2: the Redis dies; the dependency alert fires (after its 30 s `for`).
    redis.kill().await;
    let redis_alert = alert_in(
        &client,
        &prometheus,
        ("CsUmDependencyDown", "dependency", "redis"),
        &["firing"],
        Duration::from_secs(90),
    )
    .await;
    let redis_alert = redis_alert.expect("the dependency alert fires for Redis");
    eprintln!(
        "CsUmDependencyDown from /api/v1/alerts:\n{}",
        serde_json::to_string_pretty(&redis_alert).unwrap()
    );
    let mongodb_down = query(
        &client,
        &prometheus,
        r#"csum_dependency_up{dependency="mongodb"} == 0"#,
    )
    .await;
    assert!(
        mongodb_down.is_empty(),
        "only Redis is down: {mongodb_down:?}"
    );
}
