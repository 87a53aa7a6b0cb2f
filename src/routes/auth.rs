//! `/auth`: registration, login, logout, refresh and the signed-in user.
use actix_web::{web, HttpRequest, HttpResponse};
use actors::db_queue::{
    FindUserByEmail, FindUserById, FindUserWithWallet, RecordLogin, RegisterUser, WriteAudit,
};
use actors::domain::{
    AuditEntry, Email, EndReason, NewUser, Password, Role, User, UserStatus, Username,
};
use actors::error::TokenRejection;
use actors::hasher::{HashPassword, VerifyPassword};
use actors::session::{CheckLoginAllowed, ClearLoginFailures, OpenSession, RecordLoginFailure};
use actors::token::{IssueTokens, RevokeSession, RotateRefresh};
use actors::ActorError;
use chrono::Utc;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extractors::{client_ip, usable_account, Authenticated};
use crate::routes::responses::{
    ErrorBody, LoginData, LoginResponse, MeResponse, MessageResponse, RefreshResponse,
    RegisterResponse, TokenData, UserAndWallet,
};
use crate::startup::AppState;

const INVALID_CREDENTIALS: &str = "Invalid email or password";

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
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = RegisterResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 409, description = "Email or username in use", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 503, description = "Overloaded or a dependency is down", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(email = tracing::field::Empty))]
pub async fn register(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let username = Username::parse(&body.username).map_err(bad)?;
    let email = Email::parse(&body.email).map_err(bad)?;
    let password = Password::parse(&body.password).map_err(bad)?;
    tracing::Span::current().record("email", email.as_str());

    let password_hash = state.hasher.call(HashPassword(password)).await?;
    let audit = AuditEntry::new("user.register", "success")
        .email(email.as_str())
        .ip(client_ip(&req))
        .detail("username", username.as_str());
    let (user, wallet) = state
        .db
        .call(RegisterUser {
            user: NewUser {
                email,
                username,
                password_hash,
                role: Role::User,
                status: UserStatus::Active,
            },
            initial_balance: state.settings.wallet.initial_balance,
            audit,
        })
        .await?;
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
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = LoginResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Invalid email or password", body = ErrorBody),
        (status = 403, description = "Account not active", body = ErrorBody),
        (status = 409, description = "Session limit reached (policy `reject`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Too many failed attempts", body = ErrorBody),
        (status = 503, description = "Overloaded or a dependency is down", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(email = tracing::field::Empty))]
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let email = Email::parse(&body.email).map_err(bad)?;
    let password = Password::parse_for_login(&body.password).map_err(bad)?;
    tracing::Span::current().record("email", email.as_str());
    let ip = client_ip(&req);

    let earlier_failures = match state.sessions.call(CheckLoginAllowed(email.clone())).await {
        Ok(count) => count,
        Err(e) => {
            if matches!(e, ActorError::LockedOut(_)) {
                let entry = AuditEntry::new("auth.login.failure", "locked_out")
                    .email(email.as_str())
                    .ip(ip.clone());
                state.db.call(WriteAudit(entry)).await?;
            }
            return Err(e.into());
        }
    };

    let user = state.db.call(FindUserByEmail(email.clone())).await?;
    // Unknown email and wrong password cost the same bcrypt verify, so timing tells nothing.
    let hash = user
        .as_ref()
        .map_or_else(|| state.dummy_hash.clone(), |u| u.password_hash.clone());
    let verified = state.hasher.call(VerifyPassword { password, hash }).await?;
    let user = match user {
        Some(user) if verified => user,
        user => {
            let failures = state
                .sessions
                .call(RecordLoginFailure(email.clone()))
                .await?;
            let mut entry = AuditEntry::new("auth.login.failure", "failure")
                .email(email.as_str())
                .ip(ip)
                .detail(
                    "reason",
                    if user.is_some() {
                        "bad_password"
                    } else {
                        "unknown_email"
                    },
                )
                .detail("failures_in_window", failures as i64);
            if let Some(user) = &user {
                entry = entry.user(user.id);
            }
            state.db.call(WriteAudit(entry)).await?;
            return Err(ApiError::Unauthorized(INVALID_CREDENTIALS.into()));
        }
    };

    if user.status != UserStatus::Active {
        let entry = AuditEntry::new("auth.login.failure", "forbidden")
            .user(user.id)
            .email(email.as_str())
            .ip(ip)
            .detail("reason", user.status.as_str());
        state.db.call(WriteAudit(entry)).await?;
        return Err(ApiError::Forbidden(format!(
            "Account is {}",
            user.status.as_str()
        )));
    }

    if earlier_failures > 0 {
        state
            .sessions
            .call(ClearLoginFailures(email.clone()))
            .await?;
    }
    let issued = state
        .tokens
        .call(IssueTokens {
            user_id: user.id,
            role: user.role,
        })
        .await?;
    let opened = state
        .sessions
        .call(OpenSession {
            user_id: user.id,
            role: user.role,
            email: email.as_str().to_string(),
            ip: ip.clone(),
            session_id: issued.session_id.clone(),
            access_jti: issued.access_jti,
            refresh_jti: issued.refresh_jti,
        })
        .await?;
    let tokens = issued.pair;
    let now = Utc::now();
    let mut audit = opened.audit;
    audit.push(
        AuditEntry::new("auth.login.success", "success")
            .user(user.id)
            .actor(user.id)
            .email(email.as_str())
            .ip(ip)
            .detail("session_id", opened.session_id.as_str())
            .detail("evicted_sessions", opened.evicted.len() as i64),
    );
    state
        .db
        .call(RecordLogin {
            user_id: user.id,
            at: now,
            audit,
        })
        .await?;
    let user = User {
        last_login_at: Some(now),
        login_count: user.login_count + 1,
        ..user
    };
    Ok(HttpResponse::Ok().json(LoginResponse {
        success: true,
        message: "Login successful".into(),
        data: LoginData {
            user,
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            token_type: "Bearer".into(),
            expires_in: tokens.expires_in,
        },
    }))
}

/// End the caller's session: its access and refresh tokens stop working at once.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "Logged out", body = MessageResponse),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 503, description = "Overloaded or a dependency is down", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<HttpResponse, ApiError> {
    state
        .tokens
        .call(RevokeSession {
            user_id: principal.user_id,
            session_id: principal.session_id.clone(),
            reason: EndReason::Logout,
        })
        .await?;
    let entry = AuditEntry::new("auth.logout", "success")
        .user(principal.user_id)
        .actor(principal.user_id)
        .ip(client_ip(&req))
        .detail("session_id", principal.session_id.as_str());
    state.db.call(WriteAudit(entry)).await?;
    Ok(HttpResponse::Ok().json(MessageResponse::new("Logged out successfully")))
}

/// Exchange a refresh token for a new pair (rotation; reuse revokes the session).
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair", body = RefreshResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Invalid, expired, revoked or reused refresh token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 503, description = "Overloaded or a dependency is down", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
pub async fn refresh(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let token = body.into_inner().refresh_token;
    if token.trim().is_empty() {
        return Err(bad("refresh_token is required".into()));
    }
    let ip = client_ip(&req);
    let (principal, tokens) = match state.tokens.call(RotateRefresh(token)).await {
        Ok(rotated) => rotated,
        Err(ActorError::Token(TokenRejection::ReuseDetected {
            user_id,
            session_id,
        })) => {
            let entry = AuditEntry::new("token.refresh.reuse", "failure")
                .user(&user_id)
                .ip(ip)
                .detail("session_id", session_id.as_str())
                .detail("effect", "session revoked");
            state.db.call(WriteAudit(entry)).await?;
            let rejection = TokenRejection::ReuseDetected {
                user_id,
                session_id,
            };
            return Err(ActorError::Token(rejection).into());
        }
        Err(e) => return Err(e.into()),
    };
    // The account may have gone since the session opened.
    let user = state.db.call(FindUserById(principal.user_id)).await?;
    usable_account(&state, &principal, user).await?;
    let entry = AuditEntry::new("token.refresh", "success")
        .user(principal.user_id)
        .actor(principal.user_id)
        .ip(ip)
        .detail("session_id", principal.session_id.as_str());
    state.db.call(WriteAudit(entry)).await?;
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
#[utoipa::path(get, path = "/auth/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = MeResponse),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 503, description = "Overloaded or a dependency is down", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
pub async fn me(
    state: web::Data<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<HttpResponse, ApiError> {
    // The cache answers most reads without the database (see `UserCache`).
    let found = match state.user_cache.get(&principal.user_id) {
        Some(hit) => Some(hit),
        None => state.db.call(FindUserWithWallet(principal.user_id)).await?,
    };
    let (user, wallet) = found.map(|f| (*f).clone()).unzip();
    let user = usable_account(&state, &principal, user).await?;
    let wallet = wallet.flatten();
    Ok(HttpResponse::Ok().json(MeResponse {
        success: true,
        data: UserAndWallet { user, wallet },
    }))
}
