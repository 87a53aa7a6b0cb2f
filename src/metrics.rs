//! Prometheus metrics (the `metrics` facade with its Prometheus exporter): HTTP requests per
//! route and per status class, logins by outcome, every actor's mailbox, handling time and queue
//! wait, dependency state, the build, and the process (`process_*`, by `metrics-process`). The
//! service's own families are named `csum_…` and every family has its `# HELP` ([`FAMILIES`]).
//! Served at `GET /metrics`; `deploy/prometheus/alerts.yml` alerts on them.
//!
//! Memory stays bounded whoever scrapes: every label comes from a fixed set (a method outside
//! the standard ones is `other`, a path no route matches is `unmatched`), and the recorder's
//! upkeep (which drains recorded histogram samples into their fixed buckets) runs on its own
//! thread every [`UPKEEP_INTERVAL`], not only when `/metrics` is read.
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// Latency buckets in seconds: sub-millisecond token checks up to multi-second bcrypt queues.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Operations per round trip of the DbQueueActor's batches.
const PER_TRIP_BUCKETS: &[f64] = &[1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// How often recorded histogram samples are drained into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// `csum_http_responses_total` by status class (1xx to 5xx), exported at 0 from start-up so the
/// 5xx-ratio alert's `rate()` sees the first server error.
static RESPONSE_CLASSES: OnceLock<[metrics::Counter; 5]> = OnceLock::new();

fn response_classes() -> &'static [metrics::Counter; 5] {
    RESPONSE_CLASSES.get_or_init(|| {
        ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| {
            let counter = metrics::counter!("csum_http_responses_total", "class" => class);
            counter.increment(0);
            counter
        })
    })
}

/// Every family the service exports, its kind and its `# HELP` text: the one list (the actors
/// crate records some of them; the names are its too).
const FAMILIES: &[(Kind, &str, &str)] = &[
    (Kind::Counter, "csum_http_requests_total", "HTTP requests answered, by method, route template and status."),
    (Kind::Counter, "csum_http_responses_total", "HTTP answers by status class (1xx to 5xx), every class exported from start-up."),
    (Kind::Histogram, "csum_http_request_duration_seconds", "Time from a request's arrival to its answer, by method and route template."),
    (Kind::Counter, "csum_logins_total", "Login attempts by outcome: success, bad_password (unknown email or wrong password), inactive, session_limit, locked_out, rate_limited, overloaded, unavailable, invalid_request, error."),
    (Kind::Histogram, "csum_login_duration_seconds", "Time of the login attempts that did password work (success, bad_password, inactive, session_limit); refusals before any bcrypt are not in it."),
    (Kind::Gauge, "csum_build_info", "Always 1: the running build's version and commit as labels."),
    (Kind::Gauge, "csum_actor_mailbox_len", "Messages queued in an actor's mailbox, not yet started."),
    (Kind::Gauge, "csum_actor_mailbox_capacity", "The mailbox size past which an actor answers 503 at once."),
    (Kind::Gauge, "csum_actor_in_flight", "Messages an actor has started and not yet answered."),
    (Kind::Gauge, "csum_actor_alive", "1 while the actor runs, 0 while its supervisor restarts it."),
    (Kind::Counter, "csum_actor_messages_total", "Messages an actor handled, by outcome (processed, failed)."),
    (Kind::Counter, "csum_actor_rejected_total", "Messages refused at once (mailbox full, or expected wait over its target): each a 503."),
    (Kind::Counter, "csum_actor_restarts_total", "Restarts of an actor after a handler panicked."),
    (Kind::Histogram, "csum_actor_handling_seconds", "Time an actor spent on a message, from start to answer."),
    (Kind::Histogram, "csum_actor_queue_wait_seconds", "Time a message waited in an actor's mailbox before it started."),
    (Kind::Histogram, "csum_db_queue_ops_per_round_trip", "Database operations carried per round trip by the DbQueueActor's group commit."),
    (Kind::Histogram, "csum_hasher_passwords_per_batch", "Passwords hashed or verified per bcrypt batch."),
    (Kind::Histogram, "csum_hasher_fill_wait_seconds", "Time a bcrypt batch waited for more passwords before it ran."),
    (Kind::Gauge, "csum_dependency_up", "1 when the dependency (mongodb, redis) answered its last check, 0 when not."),
    (Kind::Counter, "csum_redis_unreplicated_ends_total", "Session ends answered before REDIS_WAIT_REPLICAS replicas acknowledged them."),
    (Kind::Counter, "csum_search_memory_searches_total", "Searches while the search memory (MongoDB) served, by who answered: memory, or the indexes because mark_late (the search's mark not in the stream within 250 ms), events_behind, mark_failed or set_aside."),
];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

fn describe_families() {
    for &(kind, name, help) in FAMILIES {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

/// The process's CPU, memory, file descriptors and threads, read at each scrape.
fn process_collector() -> &'static Mutex<metrics_process::Collector> {
    static COLLECTOR: OnceLock<Mutex<metrics_process::Collector>> = OnceLock::new();
    COLLECTOR.get_or_init(|| {
        let collector = metrics_process::Collector::default();
        collector.describe();
        Mutex::new(collector)
    })
}

/// The commit the binary was built from (`build.rs`: `CSUM_COMMIT`, else git, else `unknown`).
const COMMIT: &str = env!("CSUM_COMMIT");

/// Installs the process-wide recorder once (later calls, e.g. a second app in tests, reuse it),
/// with its upkeep thread.
pub fn install() {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("csum_db_queue_ops_per_round_trip".into()),
                    PER_TRIP_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("csum_hasher_passwords_per_batch".into()),
                    PER_TRIP_BUCKETS,
                )
            })
            .map_err(|e| tracing::warn!(error = %e, "metrics buckets"))
            .ok()?;
        let handle = builder
            .install_recorder()
            .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
            .ok()?;
        let upkept = handle.clone();
        let started = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkept.run_upkeep();
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "metrics upkeep thread not started; /metrics drains");
        }
        Some(handle)
    });
    response_classes();
    describe_families();
    process_collector();
    metrics::gauge!("csum_build_info", "version" => env!("CARGO_PKG_VERSION"), "commit" => COMMIT)
        .set(1.0);
}

/// The method as a label: one of the standard methods, else `other`.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts and times every request by method, route pattern and status.
pub async fn http_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let response = next.call(req).await;
    let status = match &response {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    metrics::histogram!("csum_http_request_duration_seconds", "method" => method, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("csum_http_requests_total", "method" => method, "route" => route,
        "status" => status.to_string())
    .increment(1);
    let class = usize::from(status / 100).clamp(1, 5) - 1;
    response_classes()[class].increment(1);
    response
}

/// `GET /metrics`: Prometheus text, with the actors' gauges refreshed at scrape time.
#[utoipa::path(get, path = "/metrics", operation_id = "getMetrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String,
            content_type = "text/plain"),
        (status = 503, description = "The metrics recorder is unavailable",
            body = crate::error::ErrorBody),
    ))]
pub async fn serve(state: web::Data<AppState>) -> HttpResponse {
    process_collector()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .collect();
    for (name, a) in state.actor_snapshots() {
        metrics::gauge!("csum_actor_mailbox_len", "actor" => name).set(a.mailbox_len as f64);
        metrics::gauge!("csum_actor_mailbox_capacity", "actor" => name)
            .set(a.mailbox_capacity as f64);
        metrics::gauge!("csum_actor_in_flight", "actor" => name).set(a.in_flight as f64);
        metrics::gauge!("csum_actor_alive", "actor" => name).set(f64::from(u8::from(a.alive)));
    }
    match HANDLE.get().and_then(Option::as_ref) {
        Some(handle) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(handle.render()),
        None => HttpResponse::ServiceUnavailable()
            .json(crate::error::ErrorCode::InternalError.body("metrics recorder unavailable")),
    }
}

/// Counts a login attempt by its outcome (`csum_logins_total`) and, when it did password work,
/// times it (`csum_login_duration_seconds`): a 429 or 503 refused before any bcrypt would pull
/// the histogram down and hide a slow hashing pool.
pub fn count_login<T>(outcome: &Result<T, ApiError>, started: Instant) {
    let (outcome, hashed) = match outcome {
        Ok(_) => ("success", true),
        Err(e) => match e.code() {
            ErrorCode::InvalidCredentials => ("bad_password", true),
            ErrorCode::AccountNotActive => ("inactive", true),
            ErrorCode::SessionLimitReached => ("session_limit", true),
            ErrorCode::AccountLocked => ("locked_out", false),
            ErrorCode::RateLimited => ("rate_limited", false),
            ErrorCode::Overloaded => ("overloaded", false),
            ErrorCode::DependencyUnavailable => ("unavailable", false),
            ErrorCode::ValidationFailed | ErrorCode::MalformedRequest => ("invalid_request", false),
            _ => ("error", false),
        },
    };
    metrics::counter!("csum_logins_total", "outcome" => outcome).increment(1);
    if hashed {
        metrics::histogram!("csum_login_duration_seconds").record(started.elapsed().as_secs_f64());
    }
}
