//! Administrator endpoints: the audit trail and the diagnostic `/auth/test`.
use actix_web::{web, HttpResponse};
use actors::account::{ReadAudit, RequireAdmin};
use actors::db_queue::ListAudit;
use actors::domain::UserId;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ErrorBody};
use crate::extractors::{Accounts, Bearer};
use crate::routes::health::Probe;
use crate::routes::responses::{
    AdminOnly, AuditResponse, DatabaseQueue, PublicSettings, SignedIn, TestBackends, TestData,
    TestResponse,
};
use crate::routes::users::page;
use crate::state::AppState;

#[derive(Deserialize, IntoParams)]
pub struct AuditQuery {
    /// The subject: 24 hexadecimal characters.
    #[param(pattern = "^[0-9a-fA-F]{24}$")]
    user_id: Option<String>,
    /// E.g. `auth.login.failure`.
    #[param(max_length = 100)]
    action: Option<String>,
    /// 1 or more; more than 100 is served as 100.
    #[param(minimum = 1)]
    limit: Option<i64>,
    #[param(minimum = 0)]
    skip: Option<i64>,
}

/// The audit trail, newest first (administrators).
#[utoipa::path(get, path = "/audit", operation_id = "listAuditEntries", tag = "admin", params(AuditQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of entries", body = AuditResponse),
        (status = 400, description = "Invalid query", body = ErrorBody),
        SignedIn, AdminOnly,
    ))]
#[tracing::instrument(skip_all)]
pub async fn audit(
    accounts: Accounts,
    Bearer(token): Bearer,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let user_id = q
        .user_id
        .map(|u| UserId::parse(&u).map(|id| id.to_hex()))
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let action = q.action.filter(|a| !a.is_empty());
    if action.as_ref().is_some_and(|a| a.len() > 100) {
        return Err(ApiError::BadRequest(
            "action must be at most 100 characters".into(),
        ));
    }
    let (limit, skip) = page(q.limit, q.skip)?;
    let query = ListAudit {
        user_id,
        action,
        limit,
        skip,
    };
    let found = accounts.call(ReadAudit { token, query }).await?;
    Ok(HttpResponse::Ok().json(AuditResponse {
        entries: found.items,
        total: found.total,
        limit,
        skip,
    }))
}

/// Backends, connection state, queue status and the non-secret settings. No secret, password,
/// key or connection string (it may embed credentials) appears here.
#[utoipa::path(get, path = "/auth/test", operation_id = "checkAdminAccess", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Diagnostics", body = TestResponse),
        SignedIn, AdminOnly,
    ))]
#[tracing::instrument(skip_all)]
pub async fn test(
    state: web::Data<AppState>,
    accounts: Accounts,
    Bearer(token): Bearer,
) -> Result<HttpResponse, ApiError> {
    accounts.call(RequireAdmin { token }).await?;
    let probe = Probe::run(&state).await;
    let s = &state.settings;
    Ok(HttpResponse::Ok().json(TestResponse {
        success: true,
        data: TestData {
            service: "cs-user-management",
            version: env!("CARGO_PKG_VERSION"),
            backends: TestBackends {
                storage: s.storage_backend(),
                tokens: s.tokens_backend(),
            },
            connections: probe.checks(),
            database: state.database_name.clone(),
            database_queue: DatabaseQueue::from_snapshot(probe.actors.get("db_queue")),
            settings: PublicSettings::from(s.as_ref()),
            actors: probe.actors,
        },
    }))
}
