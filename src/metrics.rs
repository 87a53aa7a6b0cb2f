//! Prometheus metrics (the `metrics` facade with its Prometheus exporter): HTTP requests per
//! route and per status class, every actor's mailbox, handling time and queue wait, dependency
//! state. Served at `GET /metrics`; `deploy/prometheus/alerts.yml` alerts on them.
//!
//! Memory stays bounded whoever scrapes: every label comes from a fixed set (a method outside
//! the standard ones is `other`, a path no route matches is `unmatched`), and the recorder's
//! upkeep (which drains recorded histogram samples into their fixed buckets) runs on its own
//! thread every [`UPKEEP_INTERVAL`], not only when `/metrics` is read.
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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

/// `http_responses_total` by status class (1xx to 5xx), exported at 0 from start-up so the
/// 5xx-ratio alert's `rate()` sees the first server error.
static RESPONSE_CLASSES: OnceLock<[metrics::Counter; 5]> = OnceLock::new();

fn response_classes() -> &'static [metrics::Counter; 5] {
    RESPONSE_CLASSES.get_or_init(|| {
        ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| {
            let counter = metrics::counter!("http_responses_total", "class" => class);
            counter.increment(0);
            counter
        })
    })
}

/// Installs the process-wide recorder once (later calls, e.g. a second app in tests, reuse it),
/// with its upkeep thread.
pub fn install() {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("db_queue_ops_per_round_trip".into()),
                    PER_TRIP_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("hasher_passwords_per_batch".into()),
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
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("http_requests_total", "method" => method, "route" => route,
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
            body = crate::routes::responses::ErrorBody),
    ))]
pub async fn serve(state: web::Data<AppState>) -> HttpResponse {
    for (name, a) in state.actor_snapshots() {
        metrics::gauge!("actor_mailbox_len", "actor" => name).set(a.mailbox_len as f64);
        metrics::gauge!("actor_mailbox_capacity", "actor" => name).set(a.mailbox_capacity as f64);
        metrics::gauge!("actor_in_flight", "actor" => name).set(a.in_flight as f64);
        metrics::gauge!("actor_alive", "actor" => name).set(f64::from(u8::from(a.alive)));
        metrics::gauge!("actor_restarts", "actor" => name).set(a.restarts as f64);
    }
    match HANDLE.get().and_then(Option::as_ref) {
        Some(handle) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(handle.render()),
        None => HttpResponse::ServiceUnavailable()
            .json(crate::error::ErrorCode::InternalError.body("metrics recorder unavailable")),
    }
}
