//! Logging and traces. `RUST_LOG` filters the log (default `info`); `LOG_FORMAT=json` writes
//! one flat JSON object per line (the event's fields and those of every span it happened in, at
//! the top level); text has colours only on a terminal. Every request gets an id (its
//! `X-Request-Id` when usable, else a new one), echoed in the answer and on the request's log
//! lines, and one access line at INFO (target `access`) when it ends. With
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans go out over OTLP/HTTP: one per request, continuing
//! the client's W3C `traceparent`, and a child per actor message (see `actors::traced!`).
use std::io::IsTerminal;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

/// The header a request's id comes in and goes back in.
pub const REQUEST_ID: &str = "x-request-id";

/// This request's id (see the module's comment), in its extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// When the request's span began, in its extensions (the access line's duration).
#[derive(Debug, Clone, Copy)]
struct Began(Instant);

/// An incoming id is used when it is 1 to 64 characters of `A-Z a-z 0-9 . _ -`; anything else
/// (spaces, control characters, a novel) is replaced, so the log cannot be forged through it.
fn usable_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The id of `request`: its `X-Request-Id` when usable, else the one the tracing middleware
/// generated (a UUID).
fn request_id_of(request: &ServiceRequest) -> String {
    request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| usable_id(id))
        .map(str::to_string)
        .or_else(|| {
            request
                .extensions()
                .get::<tracing_actix_web::RequestId>()
                .map(|id| id.to_string())
        })
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Puts the request's id on its answer (`X-Request-Id`), whatever the answer is.
pub async fn echo_request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req.extensions().get::<RequestId>().cloned();
    let mut response = next.call(req).await?;
    if let Some(value) = id.and_then(|id| HeaderValue::from_str(&id.0).ok()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), value);
    }
    Ok(response)
}

/// The service's name in traces (`OTEL_SERVICE_NAME` overrides it).
const SERVICE_NAME: &str = "cs-user-management";

/// What [`init`] started that must end with the process: the span exporter, whose last spans
/// are sent when this is dropped.
#[must_use = "dropping it stops the span exporter"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("the span exporter did not stop cleanly: {e}");
            }
        }
    }
}

/// Installs the log (and, with `OTEL_EXPORTER_OTLP_ENDPOINT`, the span exporter) for the
/// process; a second call (tests start several apps) keeps the first.
pub fn init() -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json");
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
    if json {
        let mut layer = json_subscriber::JsonLayer::stdout();
        layer
            .with_timer("timestamp", fmt::time::SystemTime)
            .with_level("level")
            .with_target("target")
            .with_flattened_event()
            .with_top_level_flattened_span_list();
        layers.push(layer.with_filter(filter).boxed());
    } else {
        let layer = fmt::layer()
            .with_target(false)
            .with_ansi(std::io::stdout().is_terminal());
        layers.push(layer.with_filter(filter).boxed());
    }
    let traces = exporting_spans();
    EXPORTING.store(traces.is_some(), std::sync::atomic::Ordering::Relaxed);
    actors::mailbox::trace_steps(traces.is_some());
    if let Some(provider) = &traces {
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(SERVICE_NAME));
        layers.push(layer.with_filter(LevelFilter::INFO).boxed());
    }
    let installed = tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .is_ok();
    Telemetry {
        traces: traces.filter(|_| installed),
    }
}

/// Whether spans are exported (the request's span then records its trace id).
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The OTLP/HTTP span exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is
/// set: spans are batched on the SDK's own thread, so a slow collector never holds a request;
/// the W3C trace context becomes the propagator `traceparent` is read with.
fn exporting_spans() -> Option<SdkTracerProvider> {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return None;
    }
    // The exporter's blocking HTTP client must not be built on an async runtime's thread.
    let built = std::thread::spawn(|| {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
    })
    .join();
    let exporter = match built {
        Ok(Ok(exporter)) => exporter,
        Ok(Err(e)) => {
            eprintln!("OTEL_EXPORTER_OTLP_ENDPOINT is set but no span exporter was built: {e}");
            return None;
        }
        Err(_) => {
            eprintln!("OTEL_EXPORTER_OTLP_ENDPOINT is set but building the span exporter failed");
            return None;
        }
    };
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| SERVICE_NAME.to_string());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(name)
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    // Every request is sampled: a client's `traceparent` cannot turn its own trace off (the
    // default sampler follows the parent's `sampled` flag).
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
            .build(),
    )
}

/// Continues the client's trace: the W3C `traceparent` (and `tracestate`) of `request`, read by
/// the propagator [`init`] installed, and records the trace's id on the span (so every log line
/// of the request names it). Nothing is done unless spans are exported.
fn continue_trace(request: &ServiceRequest, span: &tracing::Span) {
    use opentelemetry::trace::TraceContextExt;
    if !EXPORTING.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    struct Headers<'a>(&'a actix_web::http::header::HeaderMap);
    impl opentelemetry::propagation::Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(HeaderName::as_str).collect()
        }
    }
    if request.headers().contains_key("traceparent") {
        let context = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&Headers(request.headers()))
        });
        let _ = span.set_parent(context);
    }
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    span.record("otel.name", format!("{} {route}", request.method()));
    span.record("otel.kind", "server");
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
}

/// The request log's root span: method, route, the path with every query value redacted (a
/// client may put a token in `?access_token=`), the client's address by the service's own rule
/// (the peer, or a trusted proxy's `X-Forwarded-For` entry), the request id. No header is
/// recorded, so an `Authorization` header never reaches the log.
pub struct RequestSpan;

impl tracing_actix_web::RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &actix_web::dev::ServiceRequest) -> tracing::Span {
        let id = request_id_of(request);
        request.extensions_mut().insert(RequestId(id.clone()));
        request.extensions_mut().insert(Began(Instant::now()));
        // The fields are worked out only when the span is recorded (`RUST_LOG` at info).
        let client = || {
            crate::extractors::client_ip(request.request())
                .map_or_else(|| "unknown".to_string(), |ip| ip.to_string())
        };
        let route = || {
            request
                .match_pattern()
                .unwrap_or_else(|| "unmatched".into())
        };
        let span = tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %route(),
            http.target = %redacted_target(request.uri()),
            http.client_ip = %client(),
            http.status_code = tracing::field::Empty,
            request_id = %id,
            trace_id = tracing::field::Empty,
            otel.name = tracing::field::Empty,
            otel.kind = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        continue_trace(request, &span);
        span
    }

    /// Records the status and writes the access line: the span's fields (method, route, the
    /// redacted target, the client, the id) with the status and the duration. Never a body,
    /// a header value or a query value.
    fn on_request_end<B: actix_web::body::MessageBody>(
        span: tracing::Span,
        outcome: &Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>,
    ) {
        let (status, began) = match outcome {
            Ok(response) => (
                response.status().as_u16(),
                response.request().extensions().get::<Began>().copied(),
            ),
            Err(error) => (error.as_response_error().status_code().as_u16(), None),
        };
        span.record("http.status_code", status);
        if status >= 500 {
            span.record("otel.status_code", "ERROR");
        }
        let duration_ms = began.map_or(0.0, |b| b.0.elapsed().as_secs_f64() * 1000.0);
        tracing::info!(
            target: "access",
            parent: &span,
            status,
            duration_ms = (duration_ms * 1000.0).round() / 1000.0,
            "request"
        );
    }
}

/// The path, and the query's names with their values replaced: `/audit?user_id=…&limit=…`.
pub fn redacted_target(uri: &actix_web::http::Uri) -> String {
    let Some(query) = uri.query().filter(|q| !q.is_empty()) else {
        return uri.path().to_string();
    };
    // Only a parameter's name is kept, and only when it looks like a name: a bare item
    // (`?eyJ…`) or a name that is not one is a value, and may be a token (SPEC 10).
    let items: Vec<String> = query
        .split('&')
        .map(|item| match item.split_once('=') {
            Some((name, _)) if is_parameter_name(name) => format!("{name}=…"),
            _ => "…".to_string(),
        })
        .collect();
    format!("{}?{}", uri.path(), items.join("&"))
}

/// A query parameter's name as a client writes one: short, of letters, digits and `_.-`.
fn is_parameter_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::redacted_target;

    #[test]
    fn query_values_never_reach_the_log() {
        let uri: actix_web::http::Uri = "/auth/me?access_token=SECRET&x=1"
            .parse()
            .unwrap_or_default();
        let target = redacted_target(&uri);
        assert_eq!(target, "/auth/me?access_token=…&x=…");
        assert!(!target.contains("SECRET"));
    }

    #[test]
    fn a_bare_query_item_is_a_value() {
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU";
        for uri in [
            format!("/auth/me?{token}"),
            format!("/auth/me?x=1&{token}"),
            format!("/auth/me?{token}=1"),
        ] {
            let uri: actix_web::http::Uri = uri.parse().unwrap_or_default();
            let target = redacted_target(&uri);
            assert!(!target.contains("eyJ"), "{target}");
            assert!(target.starts_with("/auth/me?"), "{target}");
        }
    }
}
