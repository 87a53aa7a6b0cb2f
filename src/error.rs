//! The one HTTP error type. Every error body is
//! `{"success": false, "error": "<message>", "error_code": "<code>"}`: the message for people
//! (the seed's shape), the code for programs ([`ErrorCode`]).
use crate::flood::flood_gate;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use actors::domain::EndReason;
use actors::error::{chain, BoxError, DuplicateField, Refusal, TokenRejection};
use actors::ActorError;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

/// Every error: `{"success": false, "error": "<clear message>", "error_code": "<code>"}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    /// For people: what went wrong and, where it helps, what to do.
    pub error: String,
    /// For programs: the reason, stable across versions (the message may change).
    pub error_code: ErrorCode,
}

/// The reason of an error answer, stable across versions and messages: what a client matches
/// on (`error_code` in every error body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: a field failed validation (the message names it).
    ValidationFailed,
    /// 400: the request itself is malformed (not JSON, a bad path or query, a bad header).
    MalformedRequest,
    /// 401: no bearer token, or an `Authorization` header that is not `Bearer <token>`.
    MissingToken,
    /// 401: the token is not one this service signed, or is malformed.
    InvalidToken,
    /// 401: the token's lifetime is over.
    TokenExpired,
    /// 401: a refresh token where an access token belongs, or the other way round.
    WrongTokenType,
    /// 401: this refresh token was already exchanged (a newer one replaces it).
    TokenSuperseded,
    /// 401: a refresh token was used twice; its whole session is revoked.
    RefreshTokenReused,
    /// 401: the session was ended by logout.
    SessionLoggedOut,
    /// 401: the session was ended by a newer sign-in (the session limit).
    SessionEvicted,
    /// 401: the session ended after inactivity.
    SessionExpired,
    /// 401: the session was revoked (by an administrator, or by ending every session).
    SessionRevoked,
    /// 401: the session was ended by a password change.
    PasswordChanged,
    /// 401: the session ended because its account was suspended.
    AccountSuspended,
    /// 401: the session ended because its account was deleted.
    AccountDeleted,
    /// 401: unknown email or wrong password.
    InvalidCredentials,
    /// 401: an introspection without the credentials of a client of `INTROSPECTION_CLIENTS`.
    ClientUnauthorized,
    /// 403: the right password for an account that is not active.
    AccountNotActive,
    /// 403: the action is an administrator's.
    AdminRequired,
    /// 403: a user may act on their own account only.
    NotYourAccount,
    /// 403: the `current_password` of a password change is wrong.
    WrongCurrentPassword,
    /// 404.
    NotFound,
    /// 405 (`Allow` names the methods).
    MethodNotAllowed,
    /// 408: the request head did not arrive in time.
    RequestTimeout,
    /// 409: the email (or another spelling of it) is registered.
    EmailTaken,
    /// 409: the username is taken.
    UsernameTaken,
    /// 409: the email or the username is in use (which is not known).
    EmailOrUsernameTaken,
    /// 409: the live-session limit is reached under `SESSION_LIMIT_POLICY=reject`.
    SessionLimitReached,
    /// 409: the change would leave no active administrator.
    LastAdmin,
    /// 409: the account changed while the request was applied; retry.
    ConcurrentChange,
    /// 413.
    PayloadTooLarge,
    /// 415: a body not sent as `application/json`.
    UnsupportedMediaType,
    /// 429: too many failed logins for this account (`Retry-After`).
    AccountLocked,
    /// 429: too many requests from this address (`Retry-After`).
    RateLimited,
    /// 431: the request head is over the server's limits.
    HeaderFieldsTooLarge,
    /// 500.
    InternalError,
    /// 503: more work than can be done in time (`Retry-After`).
    Overloaded,
    /// 503: a database or the token store is unreachable (`Retry-After`).
    DependencyUnavailable,
    /// Any other status an answer is made with outside the handlers.
    HttpError,
}

impl ErrorCode {
    /// The code of an error answer made without one (actix-web's own answers, and those the
    /// connection rewrites, see `crate::wire`), from its status.
    pub fn of_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => ErrorCode::MalformedRequest,
            401 => ErrorCode::MissingToken,
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            408 => ErrorCode::RequestTimeout,
            413 => ErrorCode::PayloadTooLarge,
            415 => ErrorCode::UnsupportedMediaType,
            431 => ErrorCode::HeaderFieldsTooLarge,
            503 => ErrorCode::DependencyUnavailable,
            500..=599 => ErrorCode::InternalError,
            _ => ErrorCode::HttpError,
        }
    }

    /// The error body of this code with `message`.
    pub fn body(self, message: &str) -> serde_json::Value {
        json!({"success": false, "error": message, "error_code": self})
    }
}

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_UNAVAILABLE: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: failed validation, a bad id.
    #[error("{0}")]
    BadRequest(String),
    /// 400: not JSON, wrong types, a path or query that does not parse.
    #[error("{0}")]
    Malformed(String),
    /// 401, with `WWW-Authenticate: Bearer`: missing, invalid, expired or revoked token, or bad
    /// credentials.
    #[error("{1}")]
    Unauthorized(ErrorCode, String),
    /// 401 with `WWW-Authenticate: Basic`: no or wrong client credentials (introspection).
    #[error("Client credentials required (HTTP Basic, a client of INTROSPECTION_CLIENTS)")]
    ClientUnauthorized,
    /// 403: authenticated but not allowed (or the account is not active).
    #[error("{1}")]
    Forbidden(ErrorCode, String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405: the resource exists but not with this method (`Allow` is set by the caller).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: duplicate email/username, or the session limit under `reject`.
    #[error("{1}")]
    Conflict(ErrorCode, String),
    /// 413: body over the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: a body that is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429 with `Retry-After`.
    #[error("{message}")]
    TooManyRequests {
        code: ErrorCode,
        message: String,
        retry_after: u64,
    },
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
            ApiError::BadRequest(_) | ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(..) | ApiError::ClientUnauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(..) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(..) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = self.code();
        let message = match self {
            ApiError::Internal(cause) => {
                let cause = chain(cause.as_ref());
                if let Some(held_back) = flood_gate(&format!("internal error: {cause}")) {
                    tracing::error!(%cause, held_back, "internal error");
                }
                "Internal server error".to_string()
            }
            ApiError::Unavailable(cause) => {
                let cause = chain(cause.as_ref());
                if let Some(held_back) = flood_gate(&format!("service unavailable: {cause}")) {
                    tracing::warn!(%cause, held_back, "service unavailable");
                }
                "Service temporarily unavailable, please retry".to_string()
            }
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized(..) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::ClientUnauthorized => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    "Basic realm=\"introspection\", charset=\"UTF-8\"",
                ));
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
        response.json(code.body(&message))
    }
}

impl ApiError {
    /// The code of this error's body.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest(_) => ErrorCode::ValidationFailed,
            ApiError::Malformed(_) => ErrorCode::MalformedRequest,
            ApiError::ClientUnauthorized => ErrorCode::ClientUnauthorized,
            ApiError::Unauthorized(code, _)
            | ApiError::Forbidden(code, _)
            | ApiError::Conflict(code, _)
            | ApiError::TooManyRequests { code, .. } => *code,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::Unavailable(cause) => match cause.downcast_ref::<ActorError>() {
                Some(ActorError::Unavailable { .. }) => ErrorCode::DependencyUnavailable,
                _ => ErrorCode::Overloaded,
            },
            ApiError::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// 401 for a request without a usable bearer token.
    pub fn missing_token(message: &str) -> Self {
        ApiError::Unauthorized(ErrorCode::MissingToken, message.into())
    }
}

/// The 401 code and message for each way a token is refused: they say why.
pub fn token_refusal(rejection: &TokenRejection) -> (ErrorCode, &'static str) {
    match rejection {
        TokenRejection::Invalid => (ErrorCode::InvalidToken, "Invalid token"),
        TokenRejection::Expired => (ErrorCode::TokenExpired, "Token has expired"),
        TokenRejection::WrongType("access") => (
            ErrorCode::WrongTokenType,
            "Wrong token type: a refresh token cannot be used as an access token",
        ),
        TokenRejection::WrongType(_) => (
            ErrorCode::WrongTokenType,
            "Wrong token type: an access token cannot be used as a refresh token",
        ),
        TokenRejection::ReuseDetected { .. } => {
            token_refusal(&TokenRejection::Ended(EndReason::RefreshReuse))
        }
        TokenRejection::Superseded => (
            ErrorCode::TokenSuperseded,
            "Token has been superseded by a refresh",
        ),
        TokenRejection::Ended(reason) => match reason {
            EndReason::Logout => (
                ErrorCode::SessionLoggedOut,
                "Token has been revoked by logout",
            ),
            EndReason::Evicted => (
                ErrorCode::SessionEvicted,
                "Session ended by a newer sign-in (session limit reached)",
            ),
            EndReason::RefreshReuse => (
                ErrorCode::RefreshTokenReused,
                "Session revoked: refresh token reuse detected",
            ),
            EndReason::Expired => (
                ErrorCode::SessionExpired,
                "Session expired after inactivity",
            ),
            EndReason::Suspended => (ErrorCode::AccountSuspended, "Account suspended"),
            EndReason::Deleted => (ErrorCode::AccountDeleted, "Account deleted"),
            EndReason::PasswordChanged => (
                ErrorCode::PasswordChanged,
                "Session ended by a password change",
            ),
            EndReason::Revoked => (ErrorCode::SessionRevoked, "Session has been revoked"),
        },
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
            ActorError::Duplicate(field) => {
                let (code, message) = match field {
                    DuplicateField::Email => (ErrorCode::EmailTaken, "Email already registered"),
                    DuplicateField::Username => {
                        (ErrorCode::UsernameTaken, "Username already taken")
                    }
                    DuplicateField::Unknown => (
                        ErrorCode::EmailOrUsernameTaken,
                        "Email or username already in use",
                    ),
                };
                ApiError::Conflict(code, message.into())
            }
            ActorError::SessionLimit => ApiError::Conflict(
                ErrorCode::SessionLimitReached,
                "Maximum number of concurrent sessions reached; log out elsewhere first".into(),
            ),
            ActorError::LastAdmin => ApiError::Conflict(
                ErrorCode::LastAdmin,
                "The last active administrator cannot be demoted, suspended or deleted".into(),
            ),
            ActorError::Conflict => ApiError::Conflict(
                ErrorCode::ConcurrentChange,
                "The account changed while the request was applied; retry".into(),
            ),
            ActorError::Token(rejection) => {
                let (code, message) = token_refusal(&rejection);
                ApiError::Unauthorized(code, message.into())
            }
            ActorError::InvalidCredentials => ApiError::Unauthorized(
                ErrorCode::InvalidCredentials,
                "Invalid email or password".into(),
            ),
            ActorError::AccountNotActive(status) => ApiError::Forbidden(
                ErrorCode::AccountNotActive,
                format!("Account is {}", status.as_str()),
            ),
            ActorError::LockedOut(retry_after) => ApiError::TooManyRequests {
                code: ErrorCode::AccountLocked,
                message: "Too many failed login attempts; try again later".into(),
                retry_after,
            },
            ActorError::RateLimited(retry_after) => ApiError::TooManyRequests {
                code: ErrorCode::RateLimited,
                message: "Too many requests from this address; slow down".into(),
                retry_after,
            },
            ActorError::Invalid(message) => ApiError::BadRequest(message),
            ActorError::Forbidden(refusal) => {
                let code = match refusal {
                    Refusal::AdminRequired | Refusal::AdminChangesStatusAndRole => {
                        ErrorCode::AdminRequired
                    }
                    Refusal::OwnAccountOnly => ErrorCode::NotYourAccount,
                    Refusal::WrongCurrentPassword => ErrorCode::WrongCurrentPassword,
                };
                ApiError::Forbidden(code, refusal.message().into())
            }
            ActorError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
        }
    }
}
