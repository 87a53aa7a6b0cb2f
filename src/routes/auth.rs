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
use serde_json::json;

use crate::error::ApiError;
use crate::extractors::{client_ip, usable_account, Authenticated};
use crate::startup::AppState;

const INVALID_CREDENTIALS: &str = "Invalid email or password";

/// Fields a caller could send but may not set (`role`, `status`, `_id`, …) are not read: serde
/// ignores them, so they are never applied.
#[derive(Deserialize)]
pub struct RegisterRequest {
    username: String,
    email: String,
    password: String,
}

#[derive(Deserialize)]
pub struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Deserialize)]
pub struct RefreshRequest {
    refresh_token: String,
}

fn bad(e: String) -> ApiError {
    ApiError::BadRequest(e)
}

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
    Ok(HttpResponse::Created().json(json!({
        "success": true,
        "message": "User registered successfully",
        "data": {"user": user, "wallet": wallet},
    })))
}

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

    if let Err(e) = state.sessions.call(CheckLoginAllowed(email.clone())).await {
        if matches!(e, ActorError::LockedOut(_)) {
            let entry = AuditEntry::new("auth.login.failure", "locked_out")
                .email(email.as_str())
                .ip(ip.clone());
            state.db.call(WriteAudit(entry)).await?;
        }
        return Err(e.into());
    }

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

    state
        .sessions
        .call(ClearLoginFailures(email.clone()))
        .await?;
    let opened = state
        .sessions
        .call(OpenSession {
            user_id: user.id,
            role: user.role,
            email: email.as_str().to_string(),
            ip: ip.clone(),
        })
        .await?;
    let tokens = state
        .tokens
        .call(IssueTokens {
            user_id: user.id,
            role: user.role,
            session_id: opened.session_id.clone(),
        })
        .await?;
    let now = Utc::now();
    let entry = AuditEntry::new("auth.login.success", "success")
        .user(user.id)
        .actor(user.id)
        .email(email.as_str())
        .ip(ip)
        .detail("session_id", opened.session_id.as_str())
        .detail("evicted_sessions", opened.evicted.len() as i64);
    state
        .db
        .call(RecordLogin {
            user_id: user.id,
            at: now,
            audit: entry,
        })
        .await?;
    let user = User {
        last_login_at: Some(now),
        login_count: user.login_count + 1,
        ..user
    };
    Ok(HttpResponse::Ok().json(json!({
        "success": true,
        "message": "Login successful",
        "data": {
            "user": user,
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
            "token_type": "Bearer",
            "expires_in": tokens.expires_in,
        },
    })))
}

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
    Ok(HttpResponse::Ok().json(json!({"success": true, "message": "Logged out successfully"})))
}

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
    Ok(HttpResponse::Ok().json(json!({
        "success": true,
        "data": {
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
            "token_type": "Bearer",
            "expires_in": tokens.expires_in,
        },
    })))
}

#[tracing::instrument(skip_all)]
pub async fn me(
    state: web::Data<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let found = state.db.call(FindUserWithWallet(principal.user_id)).await?;
    let (user, wallet) = found.unzip();
    let user = usable_account(&state, &principal, user).await?;
    let wallet = wallet.flatten();
    Ok(HttpResponse::Ok().json(json!({
        "success": true,
        "data": {"user": user, "wallet": wallet},
    })))
}
