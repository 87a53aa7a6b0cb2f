//! The one HTTP error type. Every error body is `{"success": false, "error": "…"}`.
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use actors::domain::EndReason;
use actors::error::{chain, BoxError, DuplicateField, TokenRejection};
use actors::ActorError;
use serde_json::json;

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_UNAVAILABLE: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed JSON, wrong types, failed validation, bad id.
    #[error("{0}")]
    BadRequest(String),
    /// 401, with `WWW-Authenticate: Bearer`: missing, invalid, expired or revoked token, or bad
    /// credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated but not allowed (or the account is not active).
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405: the resource exists but not with this method (`Allow` is set by the caller).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: duplicate email/username, or the session limit under `reject`.
    #[error("{0}")]
    Conflict(String),
    /// 413: body over the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: a body that is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429 with `Retry-After`.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    /// 503 with `Retry-After`: overloaded, or a dependency is down. The cause is logged.
    #[error("service unavailable")]
    Unavailable(#[source] BoxError),
    /// 500: the cause is logged with its chain, the client gets a generic message.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            ApiError::Internal(cause) => {
                tracing::error!(cause = %chain(cause.as_ref()), "internal error");
                "Internal server error".to_string()
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(cause = %chain(cause.as_ref()), "service unavailable");
                "Service temporarily unavailable, please retry".to_string()
            }
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::TooManyRequests { retry_after, .. } => {
                response.insert_header((header::RETRY_AFTER, retry_after.to_string()));
            }
            ApiError::Unavailable(cause) => {
                let seconds = cause
                    .downcast_ref::<ActorError>()
                    .and_then(ActorError::retry_after)
                    .unwrap_or(RETRY_AFTER_UNAVAILABLE);
                response.insert_header((header::RETRY_AFTER, seconds.to_string()));
            }
            _ => {}
        }
        response.json(json!({"success": false, "error": message}))
    }
}

/// The 401 message for each way a token is refused: it says why.
pub fn token_message(rejection: &TokenRejection) -> String {
    match rejection {
        TokenRejection::Invalid => "Invalid token".into(),
        TokenRejection::Expired => "Token has expired".into(),
        TokenRejection::WrongType("access") => {
            "Wrong token type: a refresh token cannot be used as an access token".into()
        }
        TokenRejection::WrongType(_) => {
            "Wrong token type: an access token cannot be used as a refresh token".into()
        }
        TokenRejection::ReuseDetected { .. } => {
            token_message(&TokenRejection::Ended(EndReason::RefreshReuse))
        }
        TokenRejection::Superseded => "Token has been superseded by a refresh".into(),
        TokenRejection::Ended(reason) => match reason {
            EndReason::Logout => "Token has been revoked by logout",
            EndReason::Evicted => "Session ended by a newer sign-in (session limit reached)",
            EndReason::RefreshReuse => "Session revoked: refresh token reuse detected",
            EndReason::Expired => "Session expired after inactivity",
            EndReason::Suspended => "Account suspended",
            EndReason::Deleted => "Account deleted",
            EndReason::PasswordChanged => "Session ended by a password change",
            EndReason::Revoked => "Session has been revoked",
        }
        .into(),
    }
}

impl From<ActorError> for ApiError {
    fn from(e: ActorError) -> Self {
        match e {
            ActorError::Overloaded(_)
            | ActorError::Saturated { .. }
            | ActorError::Timeout(_)
            | ActorError::Unavailable { .. } => ApiError::Unavailable(e.into()),
            ActorError::Internal { .. } | ActorError::Incompatible(_) => {
                ApiError::Internal(e.into())
            }
            ActorError::Duplicate(DuplicateField::Email) => {
                ApiError::Conflict("Email already registered".into())
            }
            ActorError::Duplicate(DuplicateField::Username) => {
                ApiError::Conflict("Username already taken".into())
            }
            ActorError::Duplicate(DuplicateField::Unknown) => {
                ApiError::Conflict("Email or username already in use".into())
            }
            ActorError::SessionLimit => ApiError::Conflict(
                "Maximum number of concurrent sessions reached; log out elsewhere first".into(),
            ),
            ActorError::LastAdmin => ApiError::Conflict(
                "The last active administrator cannot be demoted, suspended or deleted".into(),
            ),
            ActorError::Conflict => ApiError::Conflict(
                "The account changed while the request was applied; retry".into(),
            ),
            ActorError::Token(rejection) => ApiError::Unauthorized(token_message(&rejection)),
            ActorError::InvalidCredentials => {
                ApiError::Unauthorized("Invalid email or password".into())
            }
            ActorError::AccountNotActive(status) => {
                ApiError::Forbidden(format!("Account is {}", status.as_str()))
            }
            ActorError::LockedOut(retry_after) => ApiError::TooManyRequests {
                message: "Too many failed login attempts; try again later".into(),
                retry_after,
            },
            ActorError::RateLimited(retry_after) => ApiError::TooManyRequests {
                message: "Too many requests from this address; slow down".into(),
                retry_after,
            },
            ActorError::Invalid(message) => ApiError::BadRequest(message),
            ActorError::Forbidden(message) => ApiError::Forbidden(message.into()),
            ActorError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
        }
    }
}
