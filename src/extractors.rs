//! The authenticated caller: a `Bearer` access token checked by the TokenActor.
use std::future::Future;
use std::pin::Pin;

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use actors::token::{Principal, ValidateAccess};

use crate::error::ApiError;
use crate::startup::AppState;

/// A request whose access token is valid and whose session is live.
pub struct Authenticated(pub Principal);

/// The bearer token of a request, or why there is none.
pub fn bearer_token(req: &HttpRequest) -> Result<String, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("Missing bearer token".into()))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("Malformed Authorization header".into()))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized(
            "Authorization scheme must be Bearer".into(),
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::Unauthorized("Missing bearer token".into()));
    }
    Ok(token.to_string())
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer_token(req);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let token = token?;
            let state =
                state.ok_or_else(|| ApiError::Internal("application state missing".into()))?;
            let principal = state.tokens.call(ValidateAccess(token)).await?;
            Ok(Authenticated(principal))
        })
    }
}

/// The client's address, for the audit trail: the peer's, since forwarding headers can be
/// forged by anyone.
pub fn client_ip(req: &HttpRequest) -> Option<String> {
    req.peer_addr().map(|a| a.ip().to_string())
}
