//! Routes, one module per resource. `configure` is used by `main` and by the tests alike.
pub mod admin;
pub mod auth;
pub mod health;
pub mod openapi;
pub mod responses;
pub mod sessions;
pub mod users;
pub mod verify;

use actix_web::dev::ServiceResponse;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(post("/auth/register").to(auth::register))
        .service(post("/auth/login").to(auth::login))
        .service(post("/auth/logout").to(auth::logout))
        .service(post("/auth/refresh").to(auth::refresh))
        .service(get("/auth/me").to(auth::me))
        .service(post("/auth/introspect").to(verify::introspect))
        .service(get("/.well-known/jwks.json").to(verify::jwks))
        .service(get("/auth/test").to(admin::test))
        // Before `/auth/{user_id}`, which would take `sessions` for a user id.
        .service(
            web::resource("/auth/sessions")
                .route(web::get().to(sessions::list))
                .route(web::delete().to(sessions::end_others))
                .default_service(method_not_allowed("GET, DELETE")),
        )
        .service(delete("/auth/sessions/{session_id}").to(sessions::end_one))
        .service(
            web::resource("/auth/{user_id}")
                .route(web::put().to(users::update))
                .route(web::delete().to(users::delete))
                .default_service(method_not_allowed("PUT, DELETE")),
        )
        .service(post("/users").to(users::create))
        .service(post("/users/search").to(users::search))
        .service(get("/users/{user_id}").to(users::get))
        .service(delete("/users/{user_id}/sessions").to(sessions::end_users))
        .service(delete("/users/{user_id}/lockout").to(sessions::lift_lockout))
        .service(get("/audit").to(admin::audit))
        .service(get("/health").to(health::health))
        .service(get("/health/live").to(health::live))
        .service(get("/health/ready").to(health::ready))
        .service(get("/openapi.json").to(openapi::serve))
        .service(get("/ops").to(health::ops_page))
        .service(get("/ops.js").to(health::ops_script))
        .service(get("/ops.css").to(health::ops_style))
        .service(get("/metrics").to(crate::metrics::serve))
        .default_service(web::to(not_found));
}

/// A resource served by one method; any other method gets 405 with `Allow`.
struct OneMethod {
    path: &'static str,
    method: &'static str,
    route: actix_web::Route,
}

fn post(path: &'static str) -> OneMethod {
    OneMethod {
        path,
        method: "POST",
        route: web::post(),
    }
}

fn get(path: &'static str) -> OneMethod {
    OneMethod {
        path,
        method: "GET",
        route: web::get(),
    }
}

fn delete(path: &'static str) -> OneMethod {
    OneMethod {
        path,
        method: "DELETE",
        route: web::delete(),
    }
}

impl OneMethod {
    fn to<F, Args>(self, handler: F) -> actix_web::Resource
    where
        F: actix_web::Handler<Args>,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        web::resource(self.path)
            .route(self.route.to(handler))
            .default_service(method_not_allowed(self.method))
    }
}

fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    web::route().to(move |req: HttpRequest| async move {
        use actix_web::ResponseError;
        let mut response = ApiError::MethodNotAllowed(format!(
            "{} is not allowed on {}; use {allow}",
            req.method(),
            req.path()
        ))
        .error_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        response
    })
}

/// JSON bodies: size-limited, sent as `application/json` (parameters such as `charset` allowed,
/// `+json` types too; anything else is 415, which also stops cross-site "simple" form posts), and
/// every failure as our error shape. A request without a body is a 400, not a 415.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .content_type_required(true)
        .content_type(|m| {
            use actix_web::mime;
            m.type_() == mime::APPLICATION
                && (m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON))
        })
        .error_handler(move |err, req| {
            match err {
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => {
                    ApiError::PayloadTooLarge(format!("Request body is larger than {limit} bytes"))
                }
                JsonPayloadError::Deserialize(e) if e.is_eof() => {
                    ApiError::Malformed("Request body must be a JSON object".into())
                }
                JsonPayloadError::Deserialize(e) => {
                    ApiError::Malformed(format!("Invalid JSON body: {e}"))
                }
                JsonPayloadError::ContentType if has_body(req) => ApiError::UnsupportedMediaType(
                    "Request body must be sent as application/json".into(),
                ),
                JsonPayloadError::ContentType => {
                    ApiError::Malformed("Request body must be a JSON object".into())
                }
                other => ApiError::Malformed(format!("Invalid request body: {other}")),
            }
            .into()
        })
}

/// Whether a request carries a body (a non-zero `Content-Length`, or a chunked one).
fn has_body(req: &HttpRequest) -> bool {
    let headers = req.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err: PathError, _| {
        ApiError::Malformed(format!("Invalid path: {err}")).into()
    })
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err: QueryPayloadError, _| {
        ApiError::Malformed(format!("Invalid query string: {err}")).into()
    })
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    ApiError::NotFound(format!("No route for {} {}", req.method(), req.path())).error_response()
}

/// Gives every error response the contract's JSON shape, including the ones actix-web makes by
/// itself (405 for a wrong method, 400 for a malformed request line or header).
pub fn json_error_body<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .response()
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let message = status.canonical_reason().unwrap_or("Request failed");
    let body = crate::error::ErrorCode::of_status(status)
        .body(message)
        .to_string();
    let (req, mut res) = res.into_parts();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let res = ServiceResponse::new(req, res.set_body(body))
        .map_into_boxed_body()
        .map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}
