//! Tokens other services check (SPEC 11): the public keys as a JWK Set, and introspection
//! (RFC 7662) for those that must also know whether a token was revoked.
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::account::{IntrospectToken, Introspection};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extractors::Accounts;
use crate::introspection::IntrospectionClients;
use crate::routes::responses::Unavailable;
use crate::state::AppState;

/// The JWK Set of the keys that sign and verify this service's tokens (current, next and
/// previous), for other services to check tokens without a secret. Empty under HS256: a shared
/// secret is never published.
#[utoipa::path(get, path = "/.well-known/jwks.json", operation_id = "getJwks", tag = "tokens",
    responses(
        (status = 200, description = "RFC 7517 JWK Set (`kty`, `crv`, `x`/`y`, `kid`, `alg`, `use`)",
            body = Object, content_type = "application/json"),
    ))]
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((
            header::CACHE_CONTROL,
            format!("public, max-age={}", state.settings.jwt.jwks_max_age),
        ))
        .body(state.keys.jwks().to_string())
}

/// RFC 7662's request: the token, and a hint of its kind (read, not relied on).
#[derive(Deserialize, ToSchema)]
pub struct IntrospectionRequest {
    #[schema(min_length = 1)]
    token: String,
    /// `access_token` or `refresh_token`.
    #[serde(default)]
    #[allow(dead_code)]
    token_type_hint: Option<String>,
}

/// RFC 7662's answer: `active`, and for an active token its claims.
#[derive(Serialize, ToSchema)]
pub struct IntrospectionResponse {
    pub active: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub claims: Option<ActiveClaims>,
}

#[derive(Serialize, ToSchema)]
pub struct ActiveClaims {
    /// The user id.
    pub sub: String,
    /// `Bearer` for an access token (RFC 6749's type); absent for a refresh token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// `access` or `refresh` (extension).
    pub typ: String,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    /// Absent for tokens of earlier versions, which carry none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    pub jti: String,
    /// The session (extension).
    pub sid: String,
    /// The user's role now (extension): the token's own `role` claim is the role at sign-in.
    pub role: String,
    /// The introspecting client.
    pub client_id: String,
}

/// Whether a token of this service is live now: `active` with its claims for an access or
/// refresh token whose session goes on, `{"active": false}` for anything else (logged out,
/// ended, password changed, expired, forged, another issuer's). For other services, which
/// authenticate with HTTP Basic as a client of `INTROSPECTION_CLIENTS`; a form
/// (`application/x-www-form-urlencoded`, as RFC 7662 sends it) or JSON.
#[utoipa::path(post, path = "/auth/introspect", operation_id = "introspectToken", tag = "tokens",
    request_body(content = IntrospectionRequest, content_type = "application/x-www-form-urlencoded"),
    security(("introspection_client" = [])),
    responses(
        (status = 200, description = "The token's state (RFC 7662)", body = IntrospectionResponse),
        (status = 400, description = "No token in the request", body = ErrorBody),
        (status = 401, description = "No or wrong client credentials", body = ErrorBody),
        (status = 415, description = "Neither a form nor JSON", body = ErrorBody),
        (status = 429, description = "Over the client's rate (Retry-After)", body = ErrorBody),
        Unavailable,
    ))]
pub async fn introspect(
    state: web::Data<AppState>,
    accounts: Accounts,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let credentials = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let clients: &Arc<IntrospectionClients> = &state.introspection;
    let Some(client) = clients.authenticate(credentials) else {
        return Err(ApiError::ClientUnauthorized);
    };
    clients
        .take(client)
        .map_err(|retry_after| ApiError::TooManyRequests {
            code: ErrorCode::RateLimited,
            message: "Too many introspections from this client; slow down".into(),
            retry_after,
        })?;
    let form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let parsed: IntrospectionRequest = if form.starts_with("application/x-www-form-urlencoded") {
        serde_urlencoded::from_bytes(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?
    } else if form.starts_with("application/json") {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?
    } else {
        return Err(ApiError::UnsupportedMediaType(
            "send the token as a form (application/x-www-form-urlencoded) or JSON".into(),
        ));
    };
    if parsed.token.is_empty() {
        return Err(ApiError::BadRequest("token must not be empty".into()));
    }
    let found = accounts.call(IntrospectToken(parsed.token)).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(IntrospectionResponse {
            active: found.is_some(),
            claims: found.map(|Introspection { claims: c, role }| ActiveClaims {
                token_type: (c.typ == "access").then(|| "Bearer".to_string()),
                typ: c.typ,
                sub: c.sub,
                exp: c.exp,
                iat: c.iat,
                iss: c.iss,
                aud: c.aud,
                jti: c.jti,
                sid: c.sid,
                role: role.as_str().to_string(),
                client_id: client.to_string(),
            }),
        }))
}
