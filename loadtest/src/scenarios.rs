//! The `run` subcommand: scenarios against a live deployment over HTTP.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Scenario {
    /// POST /auth/register with fresh users.
    Register,
    /// POST /auth/login cycling over pre-seeded users.
    Login,
    /// GET /auth/me with live access tokens.
    Me,
    /// POST /auth/refresh, each worker rotating its own session's token.
    Refresh,
    /// 80 % me, 10 % login, 10 % register.
    Mixed,
    /// GET of `--path` (e.g. /health, or a baseline server).
    Get,
}

#[derive(Args)]
pub struct RunArgs {
    /// Base URL of the deployment.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base_url: String,
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Concurrent workers (each keeps one request in flight).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Pre-seeded users for login/me/refresh/mixed (at least `concurrency` for refresh).
    #[arg(long, default_value_t = 64)]
    users: usize,
    /// Name prefix of the seeded users (re-runs reuse them).
    #[arg(long, default_value = "lt")]
    user_prefix: String,
    #[arg(long, default_value = "load-test-password-1")]
    password: String,
    /// Path for the `get` scenario.
    #[arg(long, default_value = "/health")]
    path: String,
    /// Pace each worker so the total is about this many requests/s (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// After a 503 with `Retry-After`, the worker waits that long (within the window) before
    /// its next request, as a well-behaved client does.
    #[arg(long)]
    honor_retry_after: bool,
    /// The least share of answers that must succeed (2xx), in percent: below it the run says
    /// why and exits with status 3 (a storm meant to be refused passes 0).
    #[arg(long, default_value_t = 95.0)]
    min_success: f64,
    /// Also report the CPU seconds this process (e.g. the service, its database) spent during
    /// the measured window; repeatable. The load tool's own CPU is always reported.
    #[arg(long = "cpu-pid")]
    cpu_pids: Vec<u32>,
}

/// CPU seconds (user + system, all threads) a process has used so far, from /proc.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_string(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks / per_second as f64)
}

/// CPU seconds used by each watched process (None = this one) over one window.
struct CpuWindow(Vec<(Option<u32>, Option<f64>)>);

impl CpuWindow {
    fn start(pids: &[u32]) -> Self {
        let watched = std::iter::once(None).chain(pids.iter().copied().map(Some));
        Self(watched.map(|p| (p, cpu_seconds(p))).collect())
    }

    /// `{"loadtest": s, "<pid>": s, …}` for the time since `start`.
    fn finish(&self) -> serde_json::Map<String, Value> {
        self.0
            .iter()
            .filter_map(|(pid, before)| {
                let used = cpu_seconds(*pid)? - (*before)?;
                let name = pid.map_or_else(|| "loadtest".to_string(), |p| p.to_string());
                Some((name, json!((used * 1000.0).round() / 1000.0)))
            })
            .collect()
    }
}

struct Shared {
    client: reqwest::Client,
    base: String,
    password: String,
    path: String,
    /// Access tokens for `me`; refresh tokens per worker for `refresh`.
    access: Vec<String>,
    refresh: Vec<tokio::sync::Mutex<String>>,
    /// Emails to log in with.
    emails: Vec<String>,
    counter: AtomicUsize,
    errors: AtomicU64,
    /// Answers inside the window, and the successful (2xx) among them: the progress line.
    answered: AtomicU64,
    succeeded: AtomicU64,
}

/// Runs the scenario and prints its report; `Ok(false)` when fewer answers than
/// `--min-success` succeeded (the report says why).
pub fn run(args: RunArgs) -> Result<bool, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> Result<bool, String> {
    if !(args.base_url.starts_with("http://") || args.base_url.starts_with("https://")) {
        return Err(format!(
            "--base-url {:?} has no scheme: write http://{}",
            args.base_url, args.base_url
        ));
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let base = args.base_url.trim_end_matches('/').to_string();
    let users = match args.scenario {
        Scenario::Refresh => args.users.max(args.concurrency),
        Scenario::Register | Scenario::Get => 0,
        _ => args.users,
    };
    let emails = seed_users(&client, &base, &args.user_prefix, users, &args.password).await?;
    let (access, refresh) = match args.scenario {
        Scenario::Me | Scenario::Refresh | Scenario::Mixed => {
            // Mixed logs in with the second half and reads with the first, so logins do not
            // evict the sessions being read.
            let readers = if args.scenario == Scenario::Mixed {
                &emails[..emails.len() / 2]
            } else {
                &emails[..]
            };
            sign_in_all(&client, &base, readers, &args.password).await?
        }
        _ => (Vec::new(), Vec::new()),
    };
    let login_emails = if args.scenario == Scenario::Mixed {
        emails[emails.len() / 2..].to_vec()
    } else {
        emails
    };
    let shared = Arc::new(Shared {
        client,
        base,
        password: args.password.clone(),
        path: args.path.clone(),
        access,
        refresh: refresh.into_iter().map(tokio::sync::Mutex::new).collect(),
        emails: login_emails,
        counter: AtomicUsize::new(0),
        errors: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        succeeded: AtomicU64::new(0),
    });

    open_connections(&shared.client, &shared.base, args.concurrency).await;
    let duration = Duration::from_secs_f64(args.duration);
    let pace =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate));
    let started = Instant::now();
    let cpu = CpuWindow::start(&args.cpu_pids);
    let cpu_used = {
        let window = tokio::time::sleep_until((started + duration).into());
        tokio::spawn(async move {
            window.await;
            cpu.finish()
        })
    };
    let progress = tokio::spawn(progress_lines(Arc::clone(&shared), started, duration));
    let honor = args.honor_retry_after;
    let workers: Vec<_> = (0..args.concurrency)
        .map(|worker| {
            let shared = Arc::clone(&shared);
            let scenario = args.scenario;
            tokio::spawn(async move {
                worker_loop(shared, scenario, worker, started, duration, pace, honor).await
            })
        })
        .collect();
    let mut by_answer: BTreeMap<Answer, Histogram<u64>> = BTreeMap::new();
    for w in futures::future::join_all(workers).await {
        for (answer, h) in w.map_err(|e| e.to_string())? {
            match by_answer.get_mut(&answer) {
                Some(all) => all.add(&h).map_err(|e| e.to_string())?,
                None => {
                    by_answer.insert(answer, h);
                }
            }
        }
    }
    progress.abort();
    let elapsed = duration.as_secs_f64();
    let cpu_used = cpu_used.await.map_err(|e| e.to_string())?;
    Ok(report(
        &args,
        &by_answer,
        shared.errors.load(Ordering::Relaxed),
        elapsed,
        &cpu_used,
    ))
}

/// Opens one connection per client before the measured window, as wrk does: a request of
/// each at once to `/health/live`, left idle in the pool. Otherwise the window's first
/// latencies are this machine setting up `concurrency` connections at once, the load tool's
/// CPU and the service's, not the answers measured.
async fn open_connections(client: &reqwest::Client, base: &str, concurrency: usize) {
    let url = format!("{base}/health/live");
    let opened = (0..concurrency).map(|_| async {
        if let Ok(response) = client.get(&url).send().await {
            let _ = response.bytes().await;
        }
    });
    futures::future::join_all(opened).await;
}

/// One line a second on standard error while the run lasts (the report comes at the end):
/// seconds so far, successes and their rate, all answers, connection errors.
async fn progress_lines(shared: Arc<Shared>, started: Instant, duration: Duration) {
    let mut tick = tokio::time::interval_at(
        (started + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    while started.elapsed() < duration {
        tick.tick().await;
        let seconds = started.elapsed().as_secs_f64().min(duration.as_secs_f64());
        let ok = shared.succeeded.load(Ordering::Relaxed);
        eprintln!(
            "[{seconds:4.0}s] ok {ok} ({:.1}/s), answers {}, connection errors {}",
            ok as f64 / seconds.max(1e-9),
            shared.answered.load(Ordering::Relaxed),
            shared.errors.load(Ordering::Relaxed)
        );
    }
}

/// What one answer was: the request's kind (`mixed` sends three) and its status.
type Answer = (&'static str, u16);

/// A histogram with [`new_histogram`]'s bounds, which are constant and valid.
fn empty_histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)] // constant, valid bounds
    new_histogram().expect("valid histogram bounds")
}

fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 120_000_000, 3).map_err(|e| e.to_string())
}

async fn worker_loop(
    shared: Arc<Shared>,
    scenario: Scenario,
    worker: usize,
    started: Instant,
    duration: Duration,
    pace: Option<Duration>,
    honor_retry_after: bool,
) -> BTreeMap<Answer, Histogram<u64>> {
    let mut by_answer: BTreeMap<Answer, Histogram<u64>> = BTreeMap::new();
    let mut next = Instant::now();
    while started.elapsed() < duration {
        if let Some(pace) = pace {
            tokio::time::sleep_until(next.into()).await;
            next += pace;
        }
        let sent = Instant::now();
        match one_request(&shared, scenario, worker).await {
            // A closed loop ends with every worker finishing its last request after the window;
            // counting those would stretch the window by one latency (3 % of a 15 s login run),
            // so only requests completed inside it count.
            Ok(_) if started.elapsed() > duration => {}
            Ok((kind, status, retry_after)) => {
                shared.answered.fetch_add(1, Ordering::Relaxed);
                if (200..300).contains(&status) {
                    shared.succeeded.fetch_add(1, Ordering::Relaxed);
                }
                let histogram = by_answer
                    .entry((kind, status))
                    .or_insert_with(empty_histogram);
                let _ = histogram.record(sent.elapsed().as_micros().max(1) as u64);
                if let (true, Some(seconds)) = (honor_retry_after, retry_after) {
                    let until =
                        (Instant::now() + Duration::from_secs(seconds)).min(started + duration);
                    tokio::time::sleep_until(until.into()).await;
                }
            }
            Err(_) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    by_answer
}

/// The name a kind of request is reported under.
fn kind_name(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::Register => "register",
        Scenario::Login => "login",
        Scenario::Me => "me",
        Scenario::Refresh => "refresh",
        Scenario::Mixed => "mixed",
        Scenario::Get => "get",
    }
}

async fn one_request(
    shared: &Shared,
    scenario: Scenario,
    worker: usize,
) -> Result<(&'static str, u16, Option<u64>), reqwest::Error> {
    let n = shared.counter.fetch_add(1, Ordering::Relaxed);
    let scenario = match scenario {
        Scenario::Mixed => match n % 10 {
            0 => Scenario::Login,
            1 => Scenario::Register,
            _ => Scenario::Me,
        },
        other => other,
    };
    let c = &shared.client;
    let response = match scenario {
        Scenario::Register => {
            let tag = uuid::Uuid::new_v4().simple().to_string();
            c.post(format!("{}/auth/register", shared.base))
                .json(&json!({"username": format!("r{}", &tag[..20]),
                              "email": format!("r-{tag}@load.test"), "password": shared.password}))
                .send()
                .await?
        }
        Scenario::Login => {
            let email = &shared.emails[n % shared.emails.len().max(1)];
            c.post(format!("{}/auth/login", shared.base))
                .json(&json!({"email": email, "password": shared.password}))
                .send()
                .await?
        }
        Scenario::Me => {
            let token = &shared.access[n % shared.access.len().max(1)];
            c.get(format!("{}/auth/me", shared.base))
                .bearer_auth(token)
                .send()
                .await?
        }
        Scenario::Refresh => {
            let mut token = shared.refresh[worker % shared.refresh.len()].lock().await;
            let response = c
                .post(format!("{}/auth/refresh", shared.base))
                .json(&json!({"refresh_token": *token}))
                .send()
                .await?;
            let status = response.status().as_u16();
            if let Ok(body) = response.json::<Value>().await {
                if let Some(t) = body["data"]["refresh_token"].as_str() {
                    *token = t.to_string();
                }
            }
            return Ok((kind_name(scenario), status, None));
        }
        Scenario::Get | Scenario::Mixed => {
            c.get(format!("{}{}", shared.base, shared.path))
                .send()
                .await?
        }
    };
    let status = response.status().as_u16();
    let retry_after = (status == 503)
        .then(|| {
            response
                .headers()
                .get("retry-after")?
                .to_str()
                .ok()?
                .parse()
                .ok()
        })
        .flatten();
    // Read the body so the connection is reused.
    let _ = response.bytes().await;
    Ok((kind_name(scenario), status, retry_after))
}

/// Registers `count` users (409 means they exist from an earlier run); returns their emails.
async fn seed_users(
    client: &reqwest::Client,
    base: &str,
    prefix: &str,
    count: usize,
    password: &str,
) -> Result<Vec<String>, String> {
    let emails: Vec<String> = (0..count)
        .map(|i| format!("{prefix}-{i}@load.test"))
        .collect();
    let register = |i: usize, email: &String| {
        let email = email.clone();
        async move {
            // A busy service refuses with 503, a rate-limited one with 429, both with
            // Retry-After: seeding waits and tries again.
            for _ in 0..30 {
                let response = client
                    .post(format!("{base}/auth/register"))
                    .json(&json!({"username": format!("{prefix}_{i}"), "email": email,
                                  "password": password}))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                match response.status().as_u16() {
                    201 | 409 => return Ok(()),
                    429 | 503 => {
                        let wait = (response.headers().get("retry-after"))
                            .and_then(|v| v.to_str().ok()?.parse().ok())
                            .unwrap_or(1);
                        tokio::time::sleep(Duration::from_secs(wait)).await;
                    }
                    other => return Err(format!("seeding {email}: HTTP {other}")),
                }
            }
            Err(format!(
                "seeding {email}: still refused (503) after 30 tries"
            ))
        }
    };
    for (n, chunk) in emails.chunks(16).enumerate() {
        let batch = chunk
            .iter()
            .enumerate()
            .map(|(i, e)| register(n * 16 + i, e));
        for r in futures::future::join_all(batch).await {
            r?;
        }
    }
    Ok(emails)
}

/// Logs every user in once; returns their access and refresh tokens.
async fn sign_in_all(
    client: &reqwest::Client,
    base: &str,
    emails: &[String],
    password: &str,
) -> Result<(Vec<String>, Vec<String>), String> {
    let (mut access, mut refresh) = (Vec::new(), Vec::new());
    for chunk in emails.chunks(16) {
        let logins = chunk.iter().map(|email| async move {
            let response = client
                .post(format!("{base}/auth/login"))
                .json(&json!({"email": email, "password": password}))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let body: Value = response.json().await.map_err(|e| e.to_string())?;
            let token = |k: &str| body["data"][k].as_str().map(str::to_string);
            match (token("access_token"), token("refresh_token")) {
                (Some(a), Some(r)) => Ok((a, r)),
                _ => Err(format!("login of {email} failed: {body}")),
            }
        });
        for r in futures::future::join_all(logins).await {
            let (a, r) = r?;
            access.push(a);
            refresh.push(r);
        }
    }
    Ok((access, refresh))
}

/// The quantiles every latency set is reported at, with their JSON names.
const QUANTILES: [(&str, f64); 5] = [
    ("p50_ms", 0.50),
    ("p90_ms", 0.90),
    ("p95_ms", 0.95),
    ("p99_ms", 0.99),
    ("p999_ms", 0.999),
];

/// A latency set in milliseconds: each of [`QUANTILES`] and the maximum.
fn latencies(h: &Histogram<u64>) -> serde_json::Map<String, Value> {
    let mut at: serde_json::Map<String, Value> = QUANTILES
        .iter()
        .map(|(name, q)| {
            (
                name.to_string(),
                json!(h.value_at_quantile(*q) as f64 / 1000.0),
            )
        })
        .collect();
    at.insert("max_ms".into(), json!(h.max() as f64 / 1000.0));
    at
}

/// Why most answers were not successes, from the most common failing status.
fn why_failed(statuses: &BTreeMap<u16, u64>, answers: u64) -> String {
    let Some((status, n)) = statuses
        .iter()
        .filter(|(s, _)| !(200..300).contains(*s))
        .max_by_key(|(_, n)| **n)
    else {
        return "no answers: the service could not be reached".into();
    };
    let share = 100.0 * *n as f64 / answers.max(1) as f64;
    let cause = match status {
        429 => "the service's AUTH_RATE_LIMIT (or the lockout) is on",
        503 => {
            "the service refused work it could not do in time (overloaded, or a dependency down)"
        }
        401 | 403 => "the credentials or tokens were refused",
        409 => "the users or sessions conflict (e.g. MAX_CONCURRENT_SESSIONS with reject)",
        _ => "see the statuses above",
    };
    format!("{share:.0} % {status}: {cause}")
}

/// Merges the histograms of the answers `keep` selects, keyed by `key`.
fn merged<K: Ord>(
    by_answer: &BTreeMap<Answer, Histogram<u64>>,
    key: impl Fn(&Answer) -> K,
) -> BTreeMap<K, Histogram<u64>> {
    let mut out: BTreeMap<K, Histogram<u64>> = BTreeMap::new();
    for (answer, h) in by_answer {
        match out.entry(key(answer)) {
            std::collections::btree_map::Entry::Occupied(mut all) => {
                let _ = all.get_mut().add(h);
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(h.clone());
            }
        }
    }
    out
}

/// Upper bounds (ms) of the latency histogram's buckets; the last bucket is everything above.
const BUCKETS_MS: [f64; 12] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];

/// How many answers took at most each of [`BUCKETS_MS`] (and more than the one before), then
/// how many took longer than the last: `[[upper_ms or null, count], …]`.
fn histogram_ms(h: &Histogram<u64>) -> Vec<(Option<f64>, u64)> {
    let mut below = 0;
    let mut out = Vec::new();
    for upper in BUCKETS_MS {
        let at_most = h.count_between(0, (upper * 1000.0) as u64);
        out.push((Some(upper), at_most - below));
        below = at_most;
    }
    out.push((None, h.len() - below));
    out
}

/// Successes, statuses and latency of one set of answers (all, or one kind of `mixed`).
fn summary(
    by_status: &BTreeMap<u16, Histogram<u64>>,
    elapsed: f64,
) -> (u64, u64, serde_json::Map<String, Value>) {
    let requests: u64 = by_status.values().map(Histogram::len).sum();
    let ok: u64 = (by_status.iter())
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, h)| h.len())
        .sum();
    let mut all = empty_histogram();
    for h in by_status.values() {
        let _ = all.add(h);
    }
    let statuses: BTreeMap<u16, u64> = by_status.iter().map(|(k, h)| (*k, h.len())).collect();
    let mut fields = latencies(&all);
    fields.insert("requests".into(), json!(requests));
    fields.insert("ok".into(), json!(ok));
    // Throughput is of successes: refusals answered fast are not work done.
    fields.insert("rps".into(), json!(ok as f64 / elapsed));
    fields.insert("statuses".into(), json!(statuses));
    (requests, ok, fields)
}

fn report(
    args: &RunArgs,
    by_answer: &BTreeMap<Answer, Histogram<u64>>,
    errors: u64,
    elapsed: f64,
    cpu_s: &serde_json::Map<String, Value>,
) -> bool {
    let by_status = merged(by_answer, |(_, status)| *status);
    let statuses: BTreeMap<u16, u64> = by_status.iter().map(|(k, h)| (*k, h.len())).collect();
    let mut h = empty_histogram();
    for each in by_status.values() {
        let _ = h.add(each);
    }
    // Latency of each status on its own (a storm's fast refusals and slow successes apart).
    let latency: BTreeMap<u16, Value> = by_status
        .iter()
        .map(|(k, h)| (*k, Value::Object(latencies(h))))
        .collect();
    let (requests, ok, overall) = summary(&by_status, elapsed);
    // Each kind of request on its own (`mixed` sends three).
    let by_kind: BTreeMap<&str, serde_json::Map<String, Value>> = merged(by_answer, |a| a.0)
        .into_keys()
        .map(|kind| {
            let of_kind = merged(
                &by_answer
                    .iter()
                    .filter(|((k, _), _)| *k == kind)
                    .map(|(a, h)| (*a, h.clone()))
                    .collect(),
                |(_, status)| *status,
            );
            (kind, summary(&of_kind, elapsed).2)
        })
        .collect();
    let success = 100.0 * ok as f64 / (requests + errors).max(1) as f64;
    let met = success >= args.min_success;
    let why = (!met).then(|| why_failed(&statuses, requests + errors));
    let rps = ok as f64 / elapsed;
    let histogram = histogram_ms(&h);
    if args.json {
        let mut report = json!({
            "scenario": format!("{:?}", args.scenario).to_lowercase(),
            "concurrency": args.concurrency,
            "duration_s": elapsed,
            "answers_per_s": requests as f64 / elapsed,
            "success_pct": success,
            "latency_by_status": latency,
            "by_kind": by_kind,
            "histogram_ms": histogram,
            "errors": errors,
            "cpu_s": cpu_s,
            "below_min_success": why,
        });
        if let Value::Object(fields) = &mut report {
            fields.extend(overall);
        }
        println!("{report}");
    } else {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "scenario={:?} concurrency={} duration={elapsed:.1}s",
            args.scenario, args.concurrency
        );
        println!(
            "successes: {ok} ({rps:.1}/s, {success:.1} % of {} answers and connection errors)",
            requests + errors
        );
        println!(
            "answers: {requests} ({:.1}/s), connection errors: {errors}",
            requests as f64 / elapsed
        );
        println!(
            "latency ms: p50 {:.2}  p90 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            ms(0.50),
            ms(0.90),
            ms(0.95),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0
        );
        let s: Vec<String> = statuses.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("statuses: {}", s.join(" "));
        let at = |l: &serde_json::Map<String, Value>, k: &str| l[k].as_f64().unwrap_or(0.0);
        for (k, l) in &latency {
            let Value::Object(l) = l else { continue };
            println!(
                "  {k}: p50 {:.2}  p99 {:.2}  max {:.2} ms",
                at(l, "p50_ms"),
                at(l, "p99_ms"),
                at(l, "max_ms")
            );
        }
        if by_kind.len() > 1 {
            for (kind, k) in &by_kind {
                println!(
                    "{kind}: {} ok ({:.1}/s) of {}, statuses {}, p50 {:.2}  p99 {:.2}  max {:.2} ms",
                    k["ok"],
                    at(k, "rps"),
                    k["requests"],
                    k["statuses"],
                    at(k, "p50_ms"),
                    at(k, "p99_ms"),
                    at(k, "max_ms")
                );
            }
        }
        println!("latency histogram:");
        let widest = histogram.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
        let mut lower = 0.0;
        for (upper, n) in &histogram {
            let bar = "#".repeat((40 * n).div_ceil(widest) as usize);
            match upper {
                Some(upper) => println!("  {lower:>6} – {upper:<6} ms {n:>8} {bar}"),
                None => println!("  {lower:>6} ms and more {n:>6} {bar}"),
            }
            lower = upper.unwrap_or(lower);
        }
        let c: Vec<String> = cpu_s.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("CPU seconds in the window: {}", c.join(" "));
    }
    if let Some(why) = why {
        eprintln!(
            "loadtest: only {success:.1} % of answers succeeded (below --min-success {}): {why}",
            args.min_success
        );
    }
    met
}
