//! Logging: `RUST_LOG` filters (default `info`), `LOG_FORMAT=json` for JSON lines.
use tracing_subscriber::{fmt, EnvFilter};

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
        use actix_web::HttpMessage;
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
            request_id = %request
                .extensions()
                .get::<tracing_actix_web::RequestId>()
                .map(|id| id.to_string())
                .unwrap_or_default(),
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    }

    fn on_request_end<B: actix_web::body::MessageBody>(
        span: tracing::Span,
        outcome: &Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>,
    ) {
        tracing_actix_web::DefaultRootSpanBuilder::on_request_end(span, outcome);
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
