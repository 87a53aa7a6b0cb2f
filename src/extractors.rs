//! The authenticated caller: a `Bearer` access token checked by the TokenActor.
use std::future::Future;
use std::pin::Pin;

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use actors::db_queue::FindUserById;
use actors::domain::{EndReason, Role, User, UserId, UserStatus};
use actors::error::TokenRejection;
use actors::token::{Principal, RevokeSession, ValidateAccess};

use crate::error::{token_message, ApiError};
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

impl Authenticated {
    /// The caller's account as stored now. A deleted or non-active account ends the session
    /// presenting it: 401 saying why. Roles are read from here, never trusted from the token,
    /// so a demotion takes effect at once.
    pub async fn account(&self, state: &AppState) -> Result<User, ApiError> {
        let user = state.db.call(FindUserById(self.0.user_id)).await?;
        usable_account(state, &self.0, user).await
    }

    /// The caller's account, which must be an administrator's (403 otherwise).
    pub async fn admin(&self, state: &AppState) -> Result<User, ApiError> {
        let user = self.account(state).await?;
        if user.role != Role::Admin {
            return Err(ApiError::Forbidden("Administrator role required".into()));
        }
        Ok(user)
    }

    /// The caller's account, which must be `target`'s own or an administrator's (403 otherwise).
    pub async fn self_or_admin(&self, state: &AppState, target: &UserId) -> Result<User, ApiError> {
        let user = self.account(state).await?;
        if user.id != *target && user.role != Role::Admin {
            return Err(ApiError::Forbidden(
                "You may only access your own account".into(),
            ));
        }
        Ok(user)
    }
}

/// `user` if it exists and is active; otherwise the session ends and the caller gets 401.
pub async fn usable_account(
    state: &AppState,
    principal: &Principal,
    user: Option<User>,
) -> Result<User, ApiError> {
    let reason = match user {
        Some(user) if user.status == UserStatus::Active => return Ok(user),
        Some(_) => EndReason::Suspended,
        None => EndReason::Deleted,
    };
    state
        .tokens
        .call(RevokeSession {
            user_id: principal.user_id,
            session_id: principal.session_id.clone(),
            reason,
        })
        .await?;
    Err(ApiError::Unauthorized(token_message(
        &TokenRejection::Ended(reason),
    )))
}
