//! User administration: create (admin), read, update and delete (self or admin), search (admin).
use actix_web::{web, HttpResponse};
use actors::account::{
    AccountChanges, CreateAccount, DeleteAccount, GetAccount, SearchAccounts, UpdateAccount,
};
use actors::db_queue::SearchUsers;
use actors::domain::{Email, Password, Role, User, UserStatus, Username};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::extractors::{Accounts, Bearer, ClientAddr, TargetUser};
use crate::routes::responses::{
    CreateUserResponse, InUse, InvalidId, InvalidInput, JsonBody, MessageResponse, NoSuchUser,
    NotAllowed, SearchResponse, SignedIn, UpdateUserResponse, UserData,
};

/// Search pages: `limit` defaults to 20 and is capped at 100.
const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;
/// Longest accepted search string (an email's maximum length).
const MAX_NEEDLE: usize = 254;

fn bad(e: String) -> ApiError {
    ApiError::BadRequest(e)
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

/// A user id in a path: 24 hexadecimal characters (documented here; handlers take it as
/// [`TargetUser`]).
#[derive(Deserialize, IntoParams)]
#[allow(dead_code)] // its field is read by the OpenAPI document only
pub struct UserPath {
    /// 24 hexadecimal characters.
    #[param(example = "507f1f77bcf86cd799439011")]
    pub(crate) user_id: String,
}

/// Create a user (and their wallet), as an administrator.
#[utoipa::path(post, path = "/users", operation_id = "createUser", tag = "users", request_body = CreateUserRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = CreateUserResponse),
        SignedIn, JsonBody, InvalidInput, NotAllowed, InUse,
    ))]
#[tracing::instrument(skip_all)]
pub async fn create(
    accounts: Accounts,
    ClientAddr(ip): ClientAddr,
    Bearer(token): Bearer,
    body: web::Json<CreateUserRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let user = accounts
        .call(CreateAccount {
            token,
            email: Email::parse(&body.email).map_err(bad)?,
            username: Username::parse(&body.username).map_err(bad)?,
            password: Password::parse(&body.password).map_err(bad)?,
            status: body.status.unwrap_or(UserStatus::Active),
            role: body.role.unwrap_or(Role::User),
            ip,
        })
        .await?;
    Ok(HttpResponse::Created().json(CreateUserResponse {
        message: "User created successfully".into(),
        user,
        status: "created".into(),
    }))
}

/// A user, to themself or an administrator.
#[utoipa::path(get, path = "/users/{user_id}", operation_id = "getUser", tag = "users", params(UserPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = User),
        SignedIn, InvalidId, NotAllowed, NoSuchUser,
    ))]
#[tracing::instrument(skip_all)]
pub async fn get(
    accounts: Accounts,
    Bearer(token): Bearer,
    TargetUser(target): TargetUser,
) -> Result<HttpResponse, ApiError> {
    let user = accounts.call(GetAccount { token, target }).await?;
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

impl UpdateUserRequest {
    /// Each field given, validated; an empty `current_password` counts as none.
    fn parse(self) -> Result<AccountChanges, ApiError> {
        Ok(AccountChanges {
            email: self
                .email
                .as_deref()
                .map(Email::parse)
                .transpose()
                .map_err(bad)?,
            username: (self.username.as_deref().map(Username::parse))
                .transpose()
                .map_err(bad)?,
            status: self.status,
            role: self.role,
            password: (self.password.as_deref().map(Password::parse))
                .transpose()
                .map_err(bad)?,
            current_password: (self.current_password.as_deref())
                .filter(|p| !p.is_empty())
                .map(Password::parse_for_login)
                .transpose()
                .map_err(bad)?,
        })
    }
}

/// Change a user: themself (username, email, password with `current_password`) or an
/// administrator (also `status` and `role`).
#[utoipa::path(put, path = "/auth/{user_id}", operation_id = "updateUser", tag = "users", params(UserPath),
    request_body = UpdateUserRequest, security(("bearer" = [])),
    responses(
        (status = 200, description = "Updated", body = UpdateUserResponse),
        (status = 400, description = "Invalid input or id", body = ErrorBody),
        (status = 409, description = "Email or username in use, the last active administrator, or the account changed meanwhile", body = ErrorBody),
        SignedIn, JsonBody, NotAllowed, NoSuchUser,
    ))]
#[tracing::instrument(skip_all)]
pub async fn update(
    accounts: Accounts,
    ClientAddr(ip): ClientAddr,
    Bearer(token): Bearer,
    body: web::Json<UpdateUserRequest>,
    // Taken as a `Result`, so a bad body is reported before a bad id.
    target: Result<TargetUser, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let TargetUser(target) = target?;
    let changes = body.into_inner().parse()?;
    let user = accounts
        .call(UpdateAccount {
            token,
            target,
            changes,
            ip,
        })
        .await?;
    Ok(HttpResponse::Ok().json(UpdateUserResponse {
        success: true,
        message: "User updated successfully".into(),
        data: UserData { user },
    }))
}

/// Delete a user (themself or by an administrator): sessions end at once, the wallet is kept
/// as `closed`.
#[utoipa::path(delete, path = "/auth/{user_id}", operation_id = "deleteUser", tag = "users", params(UserPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Deleted", body = MessageResponse),
        (status = 409, description = "The last active administrator, or the account changed meanwhile", body = ErrorBody),
        SignedIn, InvalidId, NotAllowed, NoSuchUser,
    ))]
#[tracing::instrument(skip_all)]
pub async fn delete(
    accounts: Accounts,
    ClientAddr(ip): ClientAddr,
    Bearer(token): Bearer,
    TargetUser(target): TargetUser,
) -> Result<HttpResponse, ApiError> {
    accounts.call(DeleteAccount { token, target, ip }).await?;
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
#[utoipa::path(post, path = "/users/search", operation_id = "searchUsers", tag = "users", request_body = SearchRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of matches", body = SearchResponse),
        SignedIn, JsonBody, InvalidInput, NotAllowed,
    ))]
#[tracing::instrument(skip_all)]
pub async fn search(
    accounts: Accounts,
    Bearer(token): Bearer,
    body: web::Json<SearchRequest>,
) -> Result<HttpResponse, ApiError> {
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
    let (limit, skip) = page(body.limit, body.skip)?;
    let query = SearchUsers {
        username: body.username,
        email: body.email,
        status: body.status,
        limit,
        skip,
    };
    let found = accounts.call(SearchAccounts { token, query }).await?;
    Ok(HttpResponse::Ok().json(SearchResponse {
        users: found.items,
        total: found.total,
        limit,
        skip,
    }))
}
