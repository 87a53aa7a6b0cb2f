//! Logging: `RUST_LOG` filters (default `info`), `LOG_FORMAT=json` for JSON lines. Every
//! request gets an id (its `X-Request-Id` when usable, else a new one), echoed in the answer and
//! on the request's log lines, and one access line at INFO (target `access`) when it ends.
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use tracing_subscriber::{fmt, EnvFilter};

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

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = fmt().with_env_filter(filter).with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
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
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %request.match_pattern().unwrap_or_else(|| "unmatched".into()),
            http.target = %redacted_target(request.uri()),
            http.client_ip = %client(),
            http.status_code = tracing::field::Empty,
            request_id = %id,
        )
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
