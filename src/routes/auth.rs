//! `/auth`: registration, login, logout, refresh and the signed-in user.
use actix_web::{web, HttpResponse};
use actors::account::{Login, Logout, Me, Refresh, Register};
use actors::domain::{Email, Password, Registered, Username};
use actors::token::TokenPair;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::extractors::{Accounts, Bearer, ClientAddr, UserAgent};
use crate::routes::responses::{
    InUse, InvalidInput, JsonBody, LoginData, LoginResponse, MeReply, MeResponse, MessageResponse,
    RefreshResponse, RegisterResponse, SignedIn, TokenData, TooManyRequests, Unavailable,
    UserAndWallet, UserAndWalletRef,
};

/// Fields a caller could send but may not set (`role`, `status`, `_id`, …) are not read: serde
/// ignores them, so they are never applied.
#[derive(Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// 3 to 30 of `[A-Za-z0-9_]`, unique case-insensitively.
    #[schema(example = "ada_lovelace", pattern = "^[A-Za-z0-9_]{3,30}$")]
    username: String,
    /// RFC-valid, at most 254 characters; stored trimmed and lower-cased.
    #[schema(example = "ada@example.com", format = "email", max_length = 254)]
    email: String,
    /// At least 8 characters, at most 72 bytes.
    #[schema(example = "correct-horse-9", min_length = 8, max_length = 72)]
    password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    #[schema(example = "ada@example.com", format = "email", max_length = 254)]
    email: String,
    /// At most 72 bytes.
    #[schema(example = "correct-horse-9", min_length = 1, max_length = 72)]
    password: String,
    /// The `device_token` an earlier login from this device returned: the login is then judged
    /// by this device's own failures, not refused by a lockout strangers caused. An invalid,
    /// expired or another account's token counts as none.
    #[serde(default)]
    device_token: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct RefreshRequest {
    #[schema(min_length = 1)]
    refresh_token: String,
}

fn bad(e: String) -> ApiError {
    ApiError::BadRequest(e)
}

/// Create an account and its wallet.
#[utoipa::path(post, path = "/auth/register", operation_id = "registerUser", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = RegisterResponse),
        Unavailable, JsonBody, InvalidInput, TooManyRequests, InUse,
    ))]
#[tracing::instrument(skip_all)]
pub async fn register(
    accounts: Accounts,
    ClientAddr(ip): ClientAddr,
    body: web::Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let message = Register {
        username: Username::parse(&body.username).map_err(bad)?,
        email: Email::parse(&body.email).map_err(bad)?,
        password: Password::parse(&body.password).map_err(bad)?,
        ip,
    };
    let Registered { user, wallet } = accounts.call(message).await?;
    Ok(HttpResponse::Created().json(RegisterResponse {
        success: true,
        message: "User registered successfully".into(),
        data: UserAndWallet {
            user,
            wallet: Some(wallet),
        },
    }))
}

/// Sign in: opens a session and returns an access and a refresh token.
#[utoipa::path(post, path = "/auth/login", operation_id = "signIn", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = LoginResponse),
        (status = 401, description = "Invalid email or password", body = ErrorBody),
        (status = 403, description = "Account not active", body = ErrorBody),
        (status = 409, description = "Session limit reached (policy `reject`)", body = ErrorBody),
        (status = 429, description = "Too many failed attempts, or too many requests from this address (Retry-After)", body = ErrorBody),
        Unavailable, JsonBody, InvalidInput,
    ))]
#[tracing::instrument(skip_all)]
pub async fn login(
    accounts: Accounts,
    ClientAddr(ip): ClientAddr,
    UserAgent(user_agent): UserAgent,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let started = std::time::Instant::now();
    let attempt = async {
        let message = Login {
            email: Email::parse(&body.email).map_err(bad)?,
            password: Password::parse_for_login(&body.password).map_err(bad)?,
            ip,
            user_agent,
            device_token: body.device_token.filter(|t| !t.is_empty()),
        };
        Ok::<_, ApiError>(accounts.call(message).await?)
    };
    let signed_in = attempt.await;
    crate::metrics::count_login(&signed_in, started);
    let signed_in = signed_in?;
    let tokens = signed_in.tokens;
    Ok(HttpResponse::Ok().json(LoginResponse {
        success: true,
        message: "Login successful".into(),
        data: LoginData {
            user: signed_in.user,
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            token_type: "Bearer".into(),
            expires_in: tokens.expires_in,
            device_token: signed_in.device_token,
        },
    }))
}

/// End the caller's session: its access and refresh tokens stop working at once.
#[utoipa::path(post, path = "/auth/logout", operation_id = "signOut", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "Logged out", body = MessageResponse),
        SignedIn,
    ))]
#[tracing::instrument(skip_all)]
pub async fn logout(
    accounts: Accounts,
    ClientAddr(ip): ClientAddr,
    Bearer(token): Bearer,
) -> Result<HttpResponse, ApiError> {
    accounts.call(Logout { token, ip }).await?;
    Ok(HttpResponse::Ok().json(MessageResponse::new("Logged out successfully")))
}

/// Exchange a refresh token for a new pair (rotation; reuse revokes the session).
#[utoipa::path(post, path = "/auth/refresh", operation_id = "refreshTokens", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair", body = RefreshResponse),
        (status = 401, description = "Invalid, expired, revoked or reused refresh token", body = ErrorBody),
        Unavailable, JsonBody, InvalidInput, TooManyRequests,
    ))]
#[tracing::instrument(skip_all)]
pub async fn refresh(
    accounts: Accounts,
    ClientAddr(ip): ClientAddr,
    body: web::Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let refresh_token = body.into_inner().refresh_token;
    if refresh_token.trim().is_empty() {
        return Err(bad("refresh_token is required".into()));
    }
    let tokens: TokenPair = accounts.call(Refresh { refresh_token, ip }).await?;
    Ok(HttpResponse::Ok().json(RefreshResponse {
        success: true,
        data: TokenData {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            token_type: "Bearer".into(),
            expires_in: tokens.expires_in,
        },
    }))
}

/// The signed-in user and their wallet.
#[utoipa::path(get, path = "/auth/me", operation_id = "getCurrentUser", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = MeResponse),
        SignedIn,
    ))]
#[tracing::instrument(skip_all)]
pub async fn me(accounts: Accounts, Bearer(token): Bearer) -> Result<HttpResponse, ApiError> {
    let found = accounts.call(Me { token }).await?;
    let (user, wallet) = &*found;
    Ok(HttpResponse::Ok().json(MeReply {
        success: true,
        data: UserAndWalletRef { user, wallet },
    }))
}
