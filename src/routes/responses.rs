//! The typed bodies every endpoint answers with. Handlers build these, and the OpenAPI document
//! is generated from the same types, so the two cannot drift.
use crate::configuration::{Settings, StorageBackend, TokensBackend};
use std::collections::BTreeMap;

use actors::domain::{AuditRecord, User, Wallet};
use actors::mailbox::ActorSnapshot;
use serde::Serialize;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, ToSchema};

use crate::error::ErrorBody;

/// One error answer of the OpenAPI document: an [`ErrorBody`] under `status`.
fn error_response(status: u16, description: &str) -> (String, RefOr<Response>) {
    let body = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(ErrorBody::name())))
        .build();
    let response = ResponseBuilder::new()
        .description(description)
        .content("application/json", body)
        .build();
    (status.to_string(), response.into())
}

/// Error answers several endpoints share, each written once: an endpoint lists the types in its
/// `responses(...)`, beside its own answers.
macro_rules! error_responses {
    ($($(#[$doc:meta])* $name:ident => [$(($status:literal, $description:expr)),+ $(,)?];)+) => {$(
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([$(error_response($status, $description)),+])
            }
        }
    )+};
}

const UNAVAILABLE: &str = "Overloaded or a dependency is down";

error_responses! {
    /// Every endpoint that needs the actors.
    Unavailable => [(503, UNAVAILABLE)];
    /// Every endpoint that takes a bearer token (and needs the actors).
    SignedIn => [
        (401, "Missing, invalid, expired or revoked token"),
        (503, UNAVAILABLE),
    ];
    /// Every endpoint that takes a JSON body.
    JsonBody => [
        (413, "Body too large"),
        (415, "Body not sent as application/json"),
    ];
    InvalidInput => [(400, "Invalid input")];
    InvalidId => [(400, "Invalid id")];
    NotAllowed => [(403, "Not allowed")];
    AdminOnly => [(403, "Administrator role required")];
    NoSuchUser => [(404, "No such user")];
    InUse => [(409, "Email or username in use")];
    TooManyRequests => [(429, "Too many requests from this address (Retry-After)")];
}

/// `{"success": true, "message": …}`: logout and delete.
#[derive(Serialize, ToSchema)]
pub struct MessageResponse {
    pub success: bool,
    pub message: String,
}

impl MessageResponse {
    pub fn new(message: &str) -> Self {
        Self {
            success: true,
            message: message.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UserAndWallet {
    pub user: User,
    /// Null only for legacy accounts created without one.
    pub wallet: Option<Wallet>,
}

/// 201 from `POST /auth/register`.
#[derive(Serialize, ToSchema)]
pub struct RegisterResponse {
    pub success: bool,
    #[schema(example = "User registered successfully")]
    pub message: String,
    pub data: UserAndWallet,
}

#[derive(Serialize, ToSchema)]
pub struct LoginData {
    pub user: User,
    pub access_token: String,
    pub refresh_token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// Access token lifetime in seconds.
    pub expires_in: u64,
    /// Names this device: send it back as `device_token` with this device's next logins, so a
    /// lockout strangers cause does not refuse them. Valid `DEVICE_TOKEN_TTL` seconds.
    pub device_token: String,
}

/// 200 from `POST /auth/login` (the seed's shape).
#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    pub success: bool,
    #[schema(example = "Login successful")]
    pub message: String,
    pub data: LoginData,
}

#[derive(Serialize, ToSchema)]
pub struct TokenData {
    pub access_token: String,
    pub refresh_token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
    pub expires_in: u64,
}

/// 200 from `POST /auth/refresh`.
#[derive(Serialize, ToSchema)]
pub struct RefreshResponse {
    pub success: bool,
    pub data: TokenData,
}

/// 200 from `GET /auth/me` (the seed's shape).
#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    pub success: bool,
    pub data: UserAndWallet,
}

/// [`MeResponse`] borrowed from the shared user and wallet (the same JSON, nothing copied).
#[derive(Serialize)]
pub struct MeReply<'a> {
    pub success: bool,
    pub data: UserAndWalletRef<'a>,
}

#[derive(Serialize)]
pub struct UserAndWalletRef<'a> {
    pub user: &'a User,
    pub wallet: &'a Option<Wallet>,
}

/// 201 from `POST /users` (the seed's shape).
#[derive(Serialize, ToSchema)]
pub struct CreateUserResponse {
    #[schema(example = "User created successfully")]
    pub message: String,
    pub user: User,
    #[schema(example = "created")]
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct UserData {
    pub user: User,
}

/// 200 from `PUT /auth/{user_id}`.
#[derive(Serialize, ToSchema)]
pub struct UpdateUserResponse {
    pub success: bool,
    #[schema(example = "User updated successfully")]
    pub message: String,
    pub data: UserData,
}

/// 200 from `POST /users/search`.
#[derive(Serialize, ToSchema)]
pub struct SearchResponse {
    pub users: Vec<User>,
    pub total: u64,
    pub limit: i64,
    pub skip: u64,
}

/// 200 from `GET /audit`.
#[derive(Serialize, ToSchema)]
pub struct AuditResponse {
    pub entries: Vec<AuditRecord>,
    pub total: u64,
    pub limit: i64,
    pub skip: u64,
}

/// The seed's queue block.
#[derive(Serialize, ToSchema)]
pub struct DatabaseQueue {
    pub queue_size: usize,
    pub worker_alive: bool,
    pub queue_enabled: bool,
    pub pending_results: usize,
}

impl DatabaseQueue {
    pub fn from_snapshot(db: Option<&ActorSnapshot>) -> Self {
        Self {
            queue_size: db.map_or(0, |d| d.mailbox_len),
            worker_alive: db.is_some_and(|d| d.alive),
            queue_enabled: true,
            pending_results: db.map_or(0, |d| d.in_flight),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct HealthDetails {
    pub database_queue: DatabaseQueue,
    /// On MongoDB, how many users the search memory holds while searches read it (absent
    /// while it fills, is set aside, or is off: searches read the indexes then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_memory_users: Option<u64>,
    /// One entry per actor: `db_queue`, `token`, `session`, `hasher`.
    pub actors: BTreeMap<&'static str, ActorSnapshot>,
}

/// `GET /health`: 200 `healthy`/`degraded`, 503 `unhealthy`.
#[derive(Serialize, ToSchema)]
pub struct HealthResponse {
    #[schema(example = "healthy")]
    pub status: &'static str,
    pub service: &'static str,
    pub version: &'static str,
    pub uptime_s: u64,
    pub dependencies: Vec<&'static str>,
    /// `up` or `down` per dependency.
    pub checks: BTreeMap<&'static str, &'static str>,
    /// Why a dependency is down, where that is a state of the deployment anyone may know
    /// (`mongodb`: no writable primary during a step-down or an election); other causes are
    /// logged only.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub why: BTreeMap<&'static str, &'static str>,
    pub details: HealthDetails,
}

/// `GET /health/live` and `GET /health/ready`.
#[derive(Serialize, ToSchema)]
pub struct StatusResponse {
    #[schema(example = "ready")]
    pub status: &'static str,
    pub checks: BTreeMap<&'static str, &'static str>,
}

#[derive(Serialize, ToSchema)]
pub struct TestBackends {
    /// `mongodb` or `embedded`.
    #[schema(value_type = String)]
    pub storage: StorageBackend,
    /// `redis` or `embedded`.
    #[schema(value_type = String)]
    pub tokens: TokensBackend,
}

/// Non-secret settings shown by `/auth/test`.
#[derive(Serialize, ToSchema)]
pub struct PublicSettings {
    pub app_env: String,
    pub jwt_access_token_expires: u64,
    pub jwt_refresh_token_expires: u64,
    pub jwt_issuer: String,
    pub session_timeout: u64,
    pub max_concurrent_sessions: u32,
    pub session_limit_policy: String,
    pub session_check_interval: u64,
    pub refresh_reuse_grace: u64,
    pub bcrypt_cost: u32,
    pub login_max_failures: u32,
    pub login_max_failures_per_account: u32,
    pub login_failure_window: u64,
    pub wallet_initial_balance: i64,
    pub redis_key_prefix: String,
}

impl From<&Settings> for PublicSettings {
    fn from(s: &Settings) -> Self {
        Self {
            app_env: s.app_env.clone(),
            jwt_access_token_expires: s.jwt.access_token_expires,
            jwt_refresh_token_expires: s.jwt.refresh_token_expires,
            jwt_issuer: s.jwt.issuer.clone(),
            session_timeout: s.sessions.session_timeout,
            max_concurrent_sessions: s.sessions.max_concurrent_sessions,
            session_limit_policy: s.sessions.limit_policy.as_str().into(),
            session_check_interval: s.sessions.session_check_interval,
            refresh_reuse_grace: s.sessions.refresh_reuse_grace,
            bcrypt_cost: s.security.bcrypt_cost,
            login_max_failures: s.security.login_max_failures,
            login_max_failures_per_account: s.security.login_max_failures_per_account,
            login_failure_window: s.security.login_failure_window,
            wallet_initial_balance: s.wallet.initial_balance,
            redis_key_prefix: s.redis.key_prefix.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TestData {
    pub service: &'static str,
    pub version: &'static str,
    pub backends: TestBackends,
    /// `up` or `down` per backend in use (`mongodb`/`sqlite`, `redis`/`sqlite_sessions`).
    #[schema(value_type = Object)]
    pub connections: BTreeMap<&'static str, &'static str>,
    pub database: String,
    pub database_queue: DatabaseQueue,
    pub actors: BTreeMap<&'static str, ActorSnapshot>,
    pub settings: PublicSettings,
}

/// 200 from `GET /auth/test`.
#[derive(Serialize, ToSchema)]
pub struct TestResponse {
    pub success: bool,
    pub data: TestData,
}
