//! User administration: create (admin), read, update and delete (self or admin), search (admin).
use actix_web::{web, HttpRequest, HttpResponse};
use actors::db_queue::{DeleteUser, FindUserById, RegisterUser, SearchUsers, UpdateUser};
use actors::domain::{
    AuditEntry, Email, EndReason, NewUser, Password, Role, User, UserChanges, UserId, UserStatus,
    Username,
};
use actors::hasher::{HashPassword, VerifyPassword};
use actors::token::RevokeUserSessions;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::extractors::{client_ip, Authenticated};
use crate::routes::responses::{
    CreateUserResponse, ErrorBody, MessageResponse, SearchResponse, UpdateUserResponse, UserData,
};
use crate::startup::AppState;

/// Search pages: `limit` defaults to 20 and is capped at 100.
const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;
/// Longest accepted search string (an email's maximum length).
const MAX_NEEDLE: usize = 254;

fn bad(e: String) -> ApiError {
    ApiError::BadRequest(e)
}

fn user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(bad)
}

/// `limit`/`skip` of a page: limit 1..=∞ capped at 100, skip ≥ 0.
pub fn page(limit: Option<i64>, skip: Option<i64>) -> Result<(i64, u64), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit < 1 {
        return Err(bad("limit must be at least 1".into()));
    }
    let skip = skip.unwrap_or(0);
    if skip < 0 {
        return Err(bad("skip must not be negative".into()));
    }
    Ok((limit.min(MAX_LIMIT), skip as u64))
}

#[derive(Deserialize, ToSchema)]
pub struct CreateUserRequest {
    #[schema(example = "grace@example.com", format = "email", max_length = 254)]
    email: String,
    #[schema(example = "grace_hopper", pattern = "^[A-Za-z0-9_]{3,30}$")]
    username: String,
    /// At least 8 characters, at most 72 bytes.
    #[schema(example = "correct-horse-9", min_length = 8, max_length = 72)]
    password: String,
    /// Default `active`.
    status: Option<UserStatus>,
    /// Default `user`.
    role: Option<Role>,
}

/// A user id in a path: 24 hexadecimal characters.
#[derive(Deserialize, IntoParams)]
pub struct UserPath {
    /// 24 hexadecimal characters.
    #[param(example = "507f1f77bcf86cd799439011")]
    user_id: String,
}

/// Create a user (and their wallet), as an administrator.
#[utoipa::path(post, path = "/users", tag = "users", request_body = CreateUserRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = CreateUserResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 503, description = "Overloaded or a dependency is down", body = ErrorBody),
        (status = 409, description = "Email or username in use", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Authenticated,
    body: web::Json<CreateUserRequest>,
) -> Result<HttpResponse, ApiError> {
    let admin = caller.admin(&state).await?;
    let body = body.into_inner();
    let email = Email::parse(&body.email).map_err(bad)?;
    let username = Username::parse(&body.username).map_err(bad)?;
    let password = Password::parse(&body.password).map_err(bad)?;
    let status = body.status.unwrap_or(UserStatus::Active);
    let role = body.role.unwrap_or(Role::User);
    let password_hash = state.hasher.call(HashPassword(password)).await?;
    let audit = AuditEntry::new("user.create", "success")
        .actor(admin.id)
        .email(email.as_str())
        .ip(client_ip(&req))
        .detail("role", role.as_str())
        .detail("status", status.as_str());
    let (user, _wallet) = state
        .db
        .call(RegisterUser {
            user: NewUser {
                email,
                username,
                password_hash,
                role,
                status,
            },
            initial_balance: state.settings.wallet.initial_balance,
            audit,
        })
        .await?;
    Ok(HttpResponse::Created().json(CreateUserResponse {
        message: "User created successfully".into(),
        user,
        status: "created".into(),
    }))
}

/// A user, to themself or an administrator.
#[utoipa::path(get, path = "/users/{user_id}", tag = "users", params(UserPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 503, description = "Overloaded or a dependency is down", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Authenticated,
    path: web::Path<UserPath>,
) -> Result<HttpResponse, ApiError> {
    let target = user_id(&path.user_id)?;
    caller.self_or_admin(&state, &target).await?;
    let user = state
        .db
        .call(FindUserById(target))
        .await?
        .ok_or_else(|| ApiError::NotFound("User not found".into()))?;
    Ok(HttpResponse::Ok().json(user))
}

/// Every field optional; `null` means "leave as is". Unknown fields are ignored.
#[derive(Deserialize, ToSchema)]
pub struct UpdateUserRequest {
    #[schema(pattern = "^[A-Za-z0-9_]{3,30}$")]
    username: Option<String>,
    #[schema(format = "email", max_length = 254)]
    email: Option<String>,
    /// Administrators only.
    status: Option<UserStatus>,
    /// Administrators only.
    role: Option<Role>,
    /// At least 8 characters, at most 72 bytes; needs `current_password` when changing one's
    /// own.
    #[schema(min_length = 8, max_length = 72)]
    password: Option<String>,
    current_password: Option<String>,
}

/// Change a user: themself (username, email, password with `current_password`) or an
/// administrator (also `status` and `role`).
#[utoipa::path(put, path = "/auth/{user_id}", tag = "users", params(UserPath),
    request_body = UpdateUserRequest, security(("bearer" = [])),
    responses(
        (status = 200, description = "Updated", body = UpdateUserResponse),
        (status = 400, description = "Invalid input or id", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 503, description = "Overloaded or a dependency is down", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "Email or username in use", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
pub async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Authenticated,
    path: web::Path<UserPath>,
    body: web::Json<UpdateUserRequest>,
) -> Result<HttpResponse, ApiError> {
    let target_id = user_id(&path.user_id)?;
    let actor = caller.self_or_admin(&state, &target_id).await?;
    let body = body.into_inner();
    let is_self = actor.id == target_id;
    let target = if is_self {
        actor.clone()
    } else {
        state
            .db
            .call(FindUserById(target_id))
            .await?
            .ok_or_else(|| ApiError::NotFound("User not found".into()))?
    };

    let mut changes = UserChanges {
        email: body
            .email
            .as_deref()
            .map(Email::parse)
            .transpose()
            .map_err(bad)?,
        username: body
            .username
            .as_deref()
            .map(Username::parse)
            .transpose()
            .map_err(bad)?,
        status: body.status,
        role: body.role,
        password_hash: None,
    };
    let new_password = body
        .password
        .as_deref()
        .map(Password::parse)
        .transpose()
        .map_err(bad)?;
    if changes.is_empty() && new_password.is_none() {
        // Nothing to change: like any idempotent PUT, answer with the user as it is.
        return Ok(HttpResponse::Ok().json(UpdateUserResponse {
            success: true,
            message: "User updated successfully".into(),
            data: UserData { user: target },
        }));
    }
    // Status and role are an administrator's to change; asking for the current value is not a
    // change. Checked before anything is applied.
    let changes_privileged = changes.status.is_some_and(|s| s != target.status)
        || changes.role.is_some_and(|r| r != target.role);
    if changes_privileged && actor.role != Role::Admin {
        return Err(ApiError::Forbidden(
            "Only an administrator may change status or role".into(),
        ));
    }
    if let Some(password) = new_password {
        // Changing one's own password needs the current one; an administrator resetting
        // another user's does not.
        if is_self {
            let current = body
                .current_password
                .as_deref()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| bad("current_password is required to change the password".into()))?;
            let current = Password::parse_for_login(current).map_err(bad)?;
            let ok = state
                .hasher
                .call(VerifyPassword {
                    password: current,
                    hash: actor.password_hash.clone(),
                })
                .await?;
            if !ok {
                return Err(ApiError::Forbidden("current_password is incorrect".into()));
            }
        }
        changes.password_hash = Some(state.hasher.call(HashPassword(password)).await?);
    }

    let fields = changes.field_names();
    let audit = AuditEntry::new("user.update", "success")
        .user(target_id)
        .actor(actor.id)
        .ip(client_ip(&req))
        .detail("fields", fields.clone());
    let password_changed = changes.password_hash.is_some();
    let deactivated = changes.status.is_some_and(|s| s != UserStatus::Active);
    let user = state
        .db
        .call(UpdateUser {
            id: target_id,
            changes,
            audit,
        })
        .await?
        .ok_or_else(|| ApiError::NotFound("User not found".into()))?;

    if deactivated {
        revoke_all(&state, target_id, EndReason::Suspended, None).await?;
    } else if password_changed {
        let keep = is_self.then(|| caller.0.session_id.clone());
        revoke_all(&state, target_id, EndReason::PasswordChanged, keep).await?;
    }
    Ok(HttpResponse::Ok().json(UpdateUserResponse {
        success: true,
        message: "User updated successfully".into(),
        data: UserData { user },
    }))
}

async fn revoke_all(
    state: &AppState,
    user_id: UserId,
    reason: EndReason,
    keep: Option<actors::domain::SessionId>,
) -> Result<usize, ApiError> {
    Ok(state
        .tokens
        .call(RevokeUserSessions {
            user_id,
            reason,
            keep,
        })
        .await?)
}

/// Delete a user (themself or by an administrator): sessions end at once, the wallet is kept
/// as `closed`.
#[utoipa::path(delete, path = "/auth/{user_id}", tag = "users", params(UserPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Deleted", body = MessageResponse),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 503, description = "Overloaded or a dependency is down", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Authenticated,
    path: web::Path<UserPath>,
) -> Result<HttpResponse, ApiError> {
    let target_id = user_id(&path.user_id)?;
    let actor = caller.self_or_admin(&state, &target_id).await?;
    let audit = AuditEntry::new("user.delete", "success")
        .user(target_id)
        .actor(actor.id)
        .ip(client_ip(&req))
        .detail("wallet", "closed");
    let deleted = state
        .db
        .call(DeleteUser {
            id: target_id,
            audit,
        })
        .await?;
    if !deleted {
        return Err(ApiError::NotFound("User not found".into()));
    }
    revoke_all(&state, target_id, EndReason::Deleted, None).await?;
    Ok(HttpResponse::Ok().json(MessageResponse::new("User deleted successfully")))
}

/// All optional: `username`/`email` are literal case-insensitive substrings, `status` exact;
/// `limit` defaults to 20 and is capped at 100.
#[derive(Deserialize, ToSchema)]
pub struct SearchRequest {
    #[schema(max_length = 254)]
    username: Option<String>,
    #[schema(max_length = 254)]
    email: Option<String>,
    status: Option<UserStatus>,
    /// 1 or more; more than 100 is served as 100.
    #[schema(minimum = 1)]
    limit: Option<i64>,
    #[schema(minimum = 0)]
    skip: Option<i64>,
}

/// Search users, newest first (administrators).
#[utoipa::path(post, path = "/users/search", tag = "users", request_body = SearchRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of matches", body = SearchResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 503, description = "Overloaded or a dependency is down", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
pub async fn search(
    state: web::Data<AppState>,
    caller: Authenticated,
    body: web::Json<SearchRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.admin(&state).await?;
    let body = body.into_inner();
    for (name, value) in [("username", &body.username), ("email", &body.email)] {
        if value
            .as_ref()
            .is_some_and(|v| v.chars().count() > MAX_NEEDLE)
        {
            return Err(bad(format!(
                "{name} must be at most {MAX_NEEDLE} characters"
            )));
        }
    }
    let status = body.status;
    let (limit, skip) = page(body.limit, body.skip)?;
    let (users, total): (Vec<User>, u64) = state
        .db
        .call(SearchUsers {
            username: body.username,
            email: body.email,
            status,
            limit,
            skip,
        })
        .await?;
    Ok(HttpResponse::Ok().json(SearchResponse {
        users,
        total,
        limit,
        skip,
    }))
}
