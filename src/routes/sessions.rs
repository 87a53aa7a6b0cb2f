//! The sessions API: a signed-in user lists and ends their own sessions; an administrator ends
//! every session of a user. An ended session's access and refresh tokens are refused at once, on
//! every instance sharing the token store.
use actix_web::{web, HttpResponse};
use actors::account::{
    EndMyOtherSessions, EndMySession, EndUserSessions, LiftUserLockout, ListMySessions,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::extractors::{Accounts, Bearer, ClientAddr, TargetUser};
use crate::routes::responses::{AdminOnly, InvalidId, MessageResponse, NoSuchUser, SignedIn};
use crate::routes::users::UserPath;

/// One live session.
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    /// 32 hexadecimal characters.
    pub session_id: String,
    pub created_at: DateTime<Utc>,
    /// The last time one of its tokens was used (access check or refresh).
    pub last_seen_at: DateTime<Utc>,
    /// The client address of the login that opened it.
    pub ip: String,
    /// The `User-Agent` of that login (at most 256 characters; empty when none was sent).
    pub user_agent: String,
    /// True for the session of the token this request presented.
    pub current: bool,
}

#[derive(Serialize, ToSchema)]
pub struct SessionList {
    /// Newest first.
    pub sessions: Vec<SessionView>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionsResponse {
    pub success: bool,
    pub data: SessionList,
}

#[derive(Serialize, ToSchema)]
pub struct EndedCount {
    /// How many sessions ended.
    pub ended: usize,
}

#[derive(Serialize, ToSchema)]
pub struct SessionsEndedResponse {
    pub success: bool,
    pub message: String,
    pub data: EndedCount,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SessionPath {
    /// As listed by `GET /auth/sessions`.
    #[param(example = "6f1c2a0e9b7d4c3a8e5f0a1b2c3d4e5f")]
    session_id: String,
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn ended(message: &str, ended: usize) -> HttpResponse {
    HttpResponse::Ok().json(SessionsEndedResponse {
        success: true,
        message: message.into(),
        data: EndedCount { ended },
    })
}

/// The caller's live sessions, newest first, the caller's own marked `current`.
#[utoipa::path(get, path = "/auth/sessions", operation_id = "listSessions", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "Live sessions", body = SessionsResponse),
        SignedIn,
    ))]
#[tracing::instrument(skip_all)]
pub async fn list(accounts: Accounts, Bearer(token): Bearer) -> Result<HttpResponse, ApiError> {
    let mine = accounts.call(ListMySessions { token }).await?;
    let current = mine.current.as_str();
    let sessions = mine
        .sessions
        .into_iter()
        .map(|s| SessionView {
            current: s.sid == current,
            session_id: s.sid,
            created_at: at(s.created_ms),
            last_seen_at: at(s.seen_ms),
            ip: s.ip,
            user_agent: s.user_agent,
        })
        .collect();
    Ok(HttpResponse::Ok().json(SessionsResponse {
        success: true,
        data: SessionList { sessions },
    }))
}

/// End one of the caller's sessions (the current one too, like a logout).
#[utoipa::path(delete, path = "/auth/sessions/{session_id}", operation_id = "endSession", tag = "auth", params(SessionPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Ended", body = MessageResponse),
        (status = 404, description = "No live session of the caller with this id", body = ErrorBody),
        SignedIn,
    ))]
#[tracing::instrument(skip_all)]
pub async fn end_one(
    accounts: Accounts,
    ClientAddr(ip): ClientAddr,
    Bearer(token): Bearer,
    path: web::Path<SessionPath>,
) -> Result<HttpResponse, ApiError> {
    let session_id = path.into_inner().session_id;
    accounts
        .call(EndMySession {
            token,
            session_id,
            ip,
        })
        .await?;
    Ok(HttpResponse::Ok().json(MessageResponse::new("Session ended")))
}

/// End every session of the caller except the current one.
#[utoipa::path(delete, path = "/auth/sessions", operation_id = "endOtherSessions", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The other sessions ended", body = SessionsEndedResponse),
        SignedIn,
    ))]
#[tracing::instrument(skip_all)]
pub async fn end_others(
    accounts: Accounts,
    ClientAddr(ip): ClientAddr,
    Bearer(token): Bearer,
) -> Result<HttpResponse, ApiError> {
    let n = accounts.call(EndMyOtherSessions { token, ip }).await?;
    Ok(ended("Other sessions ended", n))
}

/// End every session of a user, as an administrator (the account stays as it is).
#[utoipa::path(delete, path = "/users/{user_id}/sessions", operation_id = "endUserSessions", tag = "users", params(UserPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user's sessions ended", body = SessionsEndedResponse),
        SignedIn, InvalidId, AdminOnly, NoSuchUser,
    ))]
#[tracing::instrument(skip_all)]
pub async fn end_users(
    accounts: Accounts,
    ClientAddr(ip): ClientAddr,
    Bearer(token): Bearer,
    TargetUser(target): TargetUser,
) -> Result<HttpResponse, ApiError> {
    let n = accounts.call(EndUserSessions { token, target, ip }).await?;
    Ok(ended("The user's sessions ended", n))
}

/// `{"cleared": n}`: how many failure counters a lift removed.
#[derive(Serialize, ToSchema)]
pub struct LockoutLifted {
    pub cleared: u64,
}

#[derive(Serialize, ToSchema)]
pub struct LockoutLiftedResponse {
    pub success: bool,
    pub message: String,
    pub data: LockoutLifted,
}

/// Lift a user's lockout, as an administrator: every failure counter of the user's email (every
/// spelling, every client address and device) is cleared, so the owner signs in at once.
/// Audited as `user.lockout.lifted`.
#[utoipa::path(delete, path = "/users/{user_id}/lockout", operation_id = "liftLockout", tag = "users", params(UserPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The lockout is lifted", body = LockoutLiftedResponse),
        SignedIn, InvalidId, AdminOnly, NoSuchUser,
    ))]
#[tracing::instrument(skip_all)]
pub async fn lift_lockout(
    accounts: Accounts,
    ClientAddr(ip): ClientAddr,
    Bearer(token): Bearer,
    TargetUser(target): TargetUser,
) -> Result<HttpResponse, ApiError> {
    let cleared = accounts.call(LiftUserLockout { token, target, ip }).await?;
    Ok(HttpResponse::Ok().json(LockoutLiftedResponse {
        success: true,
        message: "The user's lockout is lifted".into(),
        data: LockoutLifted { cleared },
    }))
}
