//! The settings tree: `config/default.toml` (compiled in, so the binary runs from any
//! directory), then `config/<APP_ENV>.toml` if present, then `APP__SECTION__KEY` variables, then
//! the seed's environment variable names. Secrets are `SecretString`s: they never print.
use std::collections::HashMap;
use std::time::Duration;

use actors::domain::{Email, Password, Username};
use actors::session_store::LimitPolicy;
use actors::token::SigningAlgorithm;
use config::{Config, Environment, File, FileFormat};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

mod text;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// Variables read besides [`ENV_VARS`] and `APP__…`.
const OTHER_VARS: &[&str] = &["APP_CONFIG_DIR"];

/// Every setting's dotted key: those of `config/default.toml` and those [`ENV_VARS`] set.
fn known_keys() -> Vec<String> {
    fn flatten(prefix: &str, table: config::Map<String, config::Value>, out: &mut Vec<String>) {
        for (name, value) in table {
            let key = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}.{name}")
            };
            match value.clone().into_table() {
                Ok(inner) => flatten(&key, inner, out),
                Err(_) => out.push(key),
            }
        }
    }
    let mut keys: Vec<String> = ENV_VARS.iter().map(|(_, k)| k.to_string()).collect();
    let defaults = Config::builder()
        .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<config::Map<String, config::Value>>());
    if let Ok(table) = defaults {
        flatten("", table, &mut keys);
    }
    keys.sort();
    keys.dedup();
    keys
}

/// The name of `among` fewest edits from `name`, and how many.
fn closest<'a>(name: &str, among: &[&'a str]) -> Option<(usize, &'a str)> {
    among
        .iter()
        .map(|known| (strsim::levenshtein(name, known), *known))
        .min()
}

/// Refuses a name that looks like a setting but is none, naming the setting probably meant:
/// an `APP__…` variable whose key is no setting (`APP__SERVR__PORT`), and a variable within
/// two edits of a setting's variable or a setting's variable cut short at an underscore
/// (`MONGO_URI`, `JWT_SECRET`). Names without an underscore, and those container platforms
/// set for linked services (`REDIS_SERVICE_HOST`, `REDIS_PORT_6379_TCP`), are not judged.
fn refuse_unknown_names(env: &HashMap<String, String>) -> Result<(), ConfigError> {
    let vars: Vec<&str> = ENV_VARS.iter().map(|(v, _)| *v).collect();
    let mut names: Vec<&String> = env.keys().collect();
    names.sort();
    for name in names {
        if let Some(path) = name.strip_prefix("APP__") {
            let key = path.to_lowercase().replace("__", ".");
            let keys = known_keys();
            if keys.contains(&key) {
                continue;
            }
            let as_strs: Vec<&str> = keys.iter().map(String::as_str).collect();
            let hint = closest(&key, &as_strs)
                .filter(|(distance, _)| *distance <= 3)
                .map(|(_, k)| {
                    format!(
                        "; did you mean APP__{}?",
                        k.replace('.', "__").to_uppercase()
                    )
                })
                .unwrap_or_default();
            return Err(ConfigError(format!("{name} names no setting{hint}")));
        }
        let platform = name.contains("_SERVICE_")
            || name
                .split("_PORT_")
                .nth(1)
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
        if vars.contains(&name.as_str())
            || OTHER_VARS.contains(&name.as_str())
            || !name.contains('_')
            || platform
        {
            continue;
        }
        let cut_short = vars
            .iter()
            .find(|known| known.starts_with(&format!("{name}_")));
        let near = closest(name, &vars).filter(|(distance, _)| *distance <= 2);
        if let Some(meant) = cut_short.copied().or(near.map(|(_, k)| k)) {
            return Err(ConfigError(format!(
                "{name} is not a setting; did you mean {meant}?"
            )));
        }
    }
    Ok(())
}

/// The seed's (and SPEC's) environment variable names, and the setting each one sets.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("APP_ENV", "app_env"),
    ("STORAGE_BACKEND", "storage.backend"),
    ("TOKENS_BACKEND", "tokens.backend"),
    ("DATA_DIR", "storage.data_dir"),
    ("HOST", "server.host"),
    ("PORT", "server.port"),
    ("SERVER_WORKERS", "server.workers"),
    ("SHUTDOWN_GRACE", "server.shutdown_grace"),
    ("MONGODB_URI", "mongodb.uri"),
    ("MONGODB_USER", "mongodb.user"),
    ("MONGODB_PASSWORD", "mongodb.password"),
    (
        "MONGODB_SERVER_SELECTION_TIMEOUT_MS",
        "mongodb.server_selection_timeout_ms",
    ),
    ("MONGODB_OP_TIMEOUT_MS", "mongodb.op_timeout_ms"),
    ("REDIS_HOST", "redis.host"),
    ("REDIS_PORT", "redis.port"),
    ("REDIS_DB", "redis.db"),
    ("REDIS_PASSWORD", "redis.password"),
    ("REDIS_KEY_PREFIX", "redis.key_prefix"),
    ("REDIS_TIMEOUT_MS", "redis.timeout_ms"),
    ("REDIS_CLUSTER_NODES", "redis.cluster_nodes"),
    ("REDIS_WAIT_REPLICAS", "redis.wait_replicas"),
    ("REDIS_WAIT_TIMEOUT_MS", "redis.wait_timeout_ms"),
    ("JWT_SECRET_KEY", "jwt.secret_key"),
    ("JWT_PREVIOUS_SECRET_KEYS", "jwt.previous_secret_keys"),
    ("JWT_ACCESS_TOKEN_EXPIRES", "jwt.access_token_expires"),
    ("JWT_REFRESH_TOKEN_EXPIRES", "jwt.refresh_token_expires"),
    ("JWT_ISSUER", "jwt.issuer"),
    ("JWT_ALGORITHM", "jwt.algorithm"),
    ("JWT_PRIVATE_KEY_FILE", "jwt.private_key_file"),
    (
        "JWT_PREVIOUS_PUBLIC_KEY_FILES",
        "jwt.previous_public_key_files",
    ),
    ("JWT_NEXT_PUBLIC_KEY_FILE", "jwt.next_public_key_file"),
    ("JWT_AUDIENCE", "jwt.audience"),
    ("JWT_JWKS_MAX_AGE", "jwt.jwks_max_age"),
    ("INTROSPECTION_CLIENTS", "introspection.clients"),
    ("INTROSPECTION_RATE_LIMIT", "introspection.rate_limit"),
    ("SESSION_TIMEOUT", "sessions.session_timeout"),
    (
        "MAX_CONCURRENT_SESSIONS",
        "sessions.max_concurrent_sessions",
    ),
    ("SESSION_LIMIT_POLICY", "sessions.limit_policy"),
    ("SESSION_CHECK_INTERVAL", "sessions.session_check_interval"),
    ("REFRESH_REUSE_GRACE", "sessions.refresh_reuse_grace"),
    ("DEVICE_TOKEN_TTL", "sessions.device_token_ttl"),
    ("BCRYPT_COST", "security.bcrypt_cost"),
    ("LOGIN_MAX_FAILURES", "security.login_max_failures"),
    ("LOGIN_FAILURE_WINDOW", "security.login_failure_window"),
    (
        "LOGIN_MAX_FAILURES_PER_ACCOUNT",
        "security.login_max_failures_per_account",
    ),
    ("TRUSTED_PROXIES", "security.trusted_proxies"),
    ("CLIENT_IPV6_PREFIX", "security.client_ipv6_prefix"),
    ("AUTH_RATE_LIMIT", "security.auth_rate_limit"),
    ("AUTH_RATE_BURST", "security.auth_rate_burst"),
    ("WALLET_INITIAL_BALANCE", "wallet.initial_balance"),
    ("AUDIT_RETENTION_DAYS", "audit.retention_days"),
    ("BOOTSTRAP_ADMIN_EMAIL", "bootstrap.admin_email"),
    ("BOOTSTRAP_ADMIN_USERNAME", "bootstrap.admin_username"),
    ("BOOTSTRAP_ADMIN_PASSWORD", "bootstrap.admin_password"),
    ("HASHER_THREADS", "actors.hasher_threads"),
    ("HASHER_QUEUE_TARGET_MS", "actors.hasher_queue_target_ms"),
    ("ACTOR_CALL_TIMEOUT_MS", "actors.call_timeout_ms"),
    ("PROBE_INTERVAL_MS", "actors.probe_interval_ms"),
    ("USER_CACHE_TTL_MS", "actors.user_cache_ttl_ms"),
];

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    pub app_env: String,
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub tokens: TokensSettings,
    pub mongodb: MongoSettings,
    pub redis: RedisSettings,
    pub jwt: JwtSettings,
    pub introspection: IntrospectionSettings,
    pub sessions: SessionsSettings,
    pub security: SecuritySettings,
    pub wallet: WalletSettings,
    pub audit: AuditSettings,
    pub bootstrap: BootstrapSettings,
    pub actors: ActorSettings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub max_body_bytes: usize,
    pub shutdown_grace: u64,
}

/// Where users, wallets and the audit trail live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Mongodb,
    Embedded,
}

/// Where token and session state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokensBackend {
    Redis,
    Embedded,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StorageSettings {
    /// `mongodb` | `embedded`; empty = chosen at load time (see [`Settings::load_from`]).
    #[serde(deserialize_with = "text::empty_is_none")]
    pub backend: Option<StorageBackend>,
    pub data_dir: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TokensSettings {
    /// `redis` | `embedded`; empty = chosen at load time.
    #[serde(deserialize_with = "text::empty_is_none")]
    pub backend: Option<TokensBackend>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MongoSettings {
    #[serde(serialize_with = "masked_uri")]
    pub uri: String,
    pub user: String,
    #[serde(serialize_with = "masked")]
    pub password: Option<SecretString>,
    pub server_selection_timeout_ms: u64,
    pub op_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RedisSettings {
    pub host: String,
    pub port: u16,
    pub db: i64,
    #[serde(serialize_with = "masked")]
    pub password: Option<SecretString>,
    pub key_prefix: String,
    pub timeout_ms: u64,
    /// `REDIS_CLUSTER_NODES`, comma-separated `host:port`: when set, the token store is a Redis
    /// Cluster reached through these nodes (`REDIS_HOST`/`REDIS_PORT`/`REDIS_DB` are then not
    /// used).
    #[serde(default, with = "text::cluster_nodes")]
    pub cluster_nodes: Vec<(String, u16)>,
    /// Replicas that must have an end of sessions before it is answered (0: do not wait).
    #[serde(default)]
    pub wait_replicas: u32,
    /// How long an end of sessions waits for those replicas.
    #[serde(default = "default_wait_timeout_ms")]
    pub wait_timeout_ms: u64,
}

fn default_hasher_queue_target_ms() -> u64 {
    5000
}

fn default_wait_timeout_ms() -> u64 {
    100
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct JwtSettings {
    #[serde(serialize_with = "masked")]
    pub secret_key: Option<SecretString>,
    /// `JWT_PREVIOUS_SECRET_KEYS`: keys retired by a rotation whose tokens still verify,
    /// comma-separated (so a key cannot hold a comma); in production each at least 32 bytes.
    #[serde(default, with = "text::secret_list")]
    pub previous_secret_keys: Vec<SecretString>,
    pub access_token_expires: u64,
    pub refresh_token_expires: u64,
    pub issuer: String,
    /// `HS256`, `EdDSA` or `ES256`.
    #[serde(with = "text::algorithm")]
    pub algorithm: SigningAlgorithm,
    /// The PKCS#8 PEM file of the private key that signs under `EdDSA`/`ES256`.
    #[serde(default)]
    pub private_key_file: Option<String>,
    /// Comma-separated PEM files of public keys a rotation retired: they still verify.
    #[serde(default, with = "text::text_list")]
    pub previous_public_key_files: Vec<String>,
    /// The PEM file of the public key that signs next: published (and verifying) before it signs.
    #[serde(default)]
    pub next_public_key_file: Option<String>,
    pub audience: String,
    /// Seconds other services may cache `/.well-known/jwks.json`.
    pub jwks_max_age: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct IntrospectionSettings {
    /// `INTROSPECTION_CLIENTS`: `id:secret` pairs, comma-separated, allowed to introspect with
    /// HTTP Basic; in production each secret at least 32 bytes.
    #[serde(default, with = "text::client_list")]
    pub clients: Vec<(String, SecretString)>,
    /// Introspections a second for each client (bursts of as many).
    pub rate_limit: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SessionsSettings {
    pub session_timeout: u64,
    pub max_concurrent_sessions: u32,
    #[serde(with = "text::limit_policy")]
    pub limit_policy: LimitPolicy,
    pub session_check_interval: u64,
    pub refresh_reuse_grace: u64,
    /// Seconds a device token names its device.
    pub device_token_ttl: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SecuritySettings {
    pub bcrypt_cost: u32,
    pub login_max_failures: u32,
    pub login_max_failures_per_account: u32,
    pub login_failure_window: u64,
    /// `TRUSTED_PROXIES`: the reverse proxies whose `X-Forwarded-For` is believed, CIDRs or
    /// single addresses, comma-separated.
    #[serde(with = "text::proxies")]
    pub trusted_proxies: Vec<IpNet>,
    /// How many leading bits of an IPv6 address name one client (1–128).
    pub client_ipv6_prefix: u8,
    pub auth_rate_limit: u32,
    pub auth_rate_burst: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WalletSettings {
    pub initial_balance: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AuditSettings {
    /// Days an audit entry is kept; 0 = for ever.
    pub retention_days: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BootstrapSettings {
    pub admin_email: String,
    pub admin_username: String,
    #[serde(serialize_with = "masked")]
    pub admin_password: Option<SecretString>,
}

/// The validated bootstrap administrator, when configured.
pub struct BootstrapAdmin {
    pub email: Email,
    pub username: Username,
    pub password: Password,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ActorSettings {
    pub db_queue_capacity: usize,
    pub token_capacity: usize,
    pub session_capacity: usize,
    pub hasher_capacity: usize,
    pub account_capacity: usize,
    /// Users read by one slice of an administrator's search: a slice is one turn in the
    /// database queue, so this bounds what waits behind a search.
    pub search_slice: u32,
    /// On MongoDB, searches read what they compare of at most this many users from memory,
    /// kept by a change stream (0: never); see `config/default.toml`.
    #[serde(default = "default_search_memory")]
    pub search_memory: usize,
    /// At most this many operations in one batch of the database queue (group commit); 1
    /// sends every operation on its own.
    pub db_queue_batch: usize,
    pub hasher_threads: usize,
    /// The hashing pool's admission target (0: none); see `config/default.toml`.
    #[serde(default = "default_hasher_queue_target_ms")]
    pub hasher_queue_target_ms: u64,
    pub call_timeout_ms: u64,
    pub probe_interval_ms: u64,
    pub user_cache_ttl_ms: u64,
}

fn default_search_memory() -> usize {
    2_000_000
}

/// Secrets print as `***` when set, `null` when not.
fn masked<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(v) if !v.expose_secret().is_empty() => s.serialize_str("***"),
        _ => s.serialize_none(),
    }
}

/// A connection string with its password (if any) replaced by `***`.
fn masked_uri<S: Serializer>(uri: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mask_uri_password(uri))
}

pub fn mask_uri_password(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &uri[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &uri[..scheme_end + 3], &uri[at..]),
                None => uri.to_string(),
            }
        }
        _ => uri.to_string(),
    }
}

/// A setting that stops start-up; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// The environment variable that sets a key, for error messages.
fn env_name_of(key: &str) -> Option<&'static str> {
    ENV_VARS.iter().find(|(_, k)| *k == key).map(|(v, _)| *v)
}

fn named(key: &str) -> String {
    match env_name_of(key) {
        Some(var) => format!("{var} ({key})"),
        None => key.to_string(),
    }
}

impl Settings {
    /// Loads from the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(&std::env::vars().collect())
    }

    /// Loads with `env` standing for the process environment (tests pass their own).
    pub fn load_from(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        refuse_unknown_names(env)?;
        let app_env = env
            .get("APP_ENV")
            .cloned()
            .unwrap_or_else(|| "development".into());
        let config_dir = env
            .get("APP_CONFIG_DIR")
            .cloned()
            .unwrap_or_else(|| "config".into());
        let mut builder = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .add_source(File::with_name(&format!("{config_dir}/{app_env}")).required(false))
            .add_source(
                Environment::with_prefix("APP")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(env.clone())),
            );
        for (var, key) in ENV_VARS {
            if let Some(value) = env.get(*var) {
                builder = builder
                    .set_override(*key, value.as_str())
                    .map_err(|e| ConfigError(format!("{var}: {e}")))?;
            }
        }
        let config = builder.build().map_err(|e| ConfigError(e.to_string()))?;
        let mut settings: Settings = config.try_deserialize().map_err(|e| match e {
            // A value that did not convert (see `parse_text`): the variable, then why.
            config::ConfigError::At {
                error,
                key: Some(key),
                ..
            } => ConfigError(format!("{} {error}", named(&key))),
            // config names the key (`… for key `jwt.access_token_expires``); add its variable.
            other => {
                let msg = other.to_string();
                let hint = ENV_VARS
                    .iter()
                    .find(|(_, k)| msg.contains(&format!("`{k}`")))
                    .map(|(v, _)| format!(" (environment variable {v})"))
                    .unwrap_or_default();
                ConfigError(format!("{msg}{hint}"))
            }
        })?;
        settings.choose_backends(env)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Unset backends follow the environment: MongoDB when `MONGODB_URI` is set, Redis when
    /// `REDIS_HOST` is set; otherwise the embedded store in `DATA_DIR`. So a fresh machine runs
    /// with nothing installed, and the seed's deployments keep their servers.
    fn choose_backends(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        let set = |names: &[&str]| names.iter().any(|n| env.contains_key(*n));
        // A server's other settings without its address would quietly mean the embedded
        // store: say so instead.
        let without = |family: &str, address: &[&str], chosen: bool| {
            let orphan = ENV_VARS
                .iter()
                .map(|(var, _)| *var)
                .find(|var| var.starts_with(family) && env.contains_key(*var));
            match orphan {
                Some(var) if !chosen && !set(address) => Err(ConfigError(format!(
                    "{var} is set but {} is not: set {} (or the backend to embedded)",
                    address[0], address[0]
                ))),
                _ => Ok(()),
            }
        };
        without(
            "MONGODB_",
            &["MONGODB_URI", "APP__MONGODB__URI"],
            self.storage.backend.is_some(),
        )?;
        without(
            "REDIS_",
            &[
                "REDIS_HOST",
                "APP__REDIS__HOST",
                "REDIS_CLUSTER_NODES",
                "APP__REDIS__CLUSTER_NODES",
            ],
            self.tokens.backend.is_some(),
        )?;
        if self.storage.backend.is_none() {
            let mongo = set(&["MONGODB_URI", "APP__MONGODB__URI"]);
            self.storage.backend = Some(match mongo {
                true => StorageBackend::Mongodb,
                false => StorageBackend::Embedded,
            });
        }
        if self.tokens.backend.is_none() {
            let redis = set(&[
                "REDIS_HOST",
                "APP__REDIS__HOST",
                "REDIS_CLUSTER_NODES",
                "APP__REDIS__CLUSTER_NODES",
            ]);
            self.tokens.backend = Some(match redis {
                true => TokensBackend::Redis,
                false => TokensBackend::Embedded,
            });
        }
        Ok(())
    }

    /// Where users live: chosen at load when not set.
    pub fn storage_backend(&self) -> StorageBackend {
        self.storage.backend.unwrap_or(StorageBackend::Embedded)
    }

    /// Where token state lives: chosen at load when not set.
    pub fn tokens_backend(&self) -> TokensBackend {
        self.tokens.backend.unwrap_or(TokensBackend::Embedded)
    }

    pub fn is_production(&self) -> bool {
        self.app_env == "production"
    }

    /// The rules no single setting's type holds: ranges, and settings that need others.
    fn validate(&self) -> Result<(), ConfigError> {
        let zero = self
            .zero_duration()
            .map(|key| (key, "must be greater than 0"));
        if let Some((key, why)) = self.broken_rule().or(zero) {
            return Err(ConfigError(format!("{} {why}", named(key))));
        }
        self.bootstrap_admin()?;
        self.production_secrets()
    }

    /// The first rule broken: its key, and what it must be.
    fn broken_rule(&self) -> Option<(&'static str, &'static str)> {
        let (jwt, security, sessions) = (&self.jwt, &self.security, &self.sessions);
        let production = self.is_production();
        let hmac = jwt.algorithm == SigningAlgorithm::Hs256;
        let blank = |text: Option<&str>| text.is_none_or(|t| t.trim().is_empty());
        let secret = jwt.secret_key.as_ref().map(|s| s.expose_secret());
        let storage = self.storage_backend();
        let embedded =
            storage == StorageBackend::Embedded || self.tokens_backend() == TokensBackend::Embedded;
        let rules = [
            (
                !matches!(self.app_env.as_str(), "development" | "test" | "production"),
                "app_env",
                "must be one of: development, test, production",
            ),
            (
                production && hmac && secret.map_or(0, str::len) < 32,
                "jwt.secret_key",
                "must be set to at least 32 bytes when APP_ENV=production (and JWT_ALGORITHM=HS256)",
            ),
            (
                production && !hmac && blank(jwt.private_key_file.as_deref()),
                "jwt.private_key_file",
                "must name the private key's PEM file when JWT_ALGORITHM is not HS256 and \
                 APP_ENV=production",
            ),
            (blank(Some(&jwt.audience)), "jwt.audience", "must not be empty"),
            (
                !(4..=31).contains(&security.bcrypt_cost),
                "security.bcrypt_cost",
                "must be between 4 and 31",
            ),
            (
                sessions.max_concurrent_sessions == 0,
                "sessions.max_concurrent_sessions",
                "must be at least 1",
            ),
            (
                self.wallet.initial_balance < 0,
                "wallet.initial_balance",
                "must not be negative",
            ),
            (
                storage == StorageBackend::Mongodb && blank(Some(&self.mongodb.uri)),
                "mongodb.uri",
                "must not be empty",
            ),
            (
                embedded && blank(Some(&self.storage.data_dir)),
                "storage.data_dir",
                "must not be empty",
            ),
            (
                self.redis.key_prefix.contains(['{', '}']),
                "redis.key_prefix",
                "must not contain `{` or `}` (the keys' hash tags are the service's own)",
            ),
            (
                !(1..=128).contains(&security.client_ipv6_prefix),
                "security.client_ipv6_prefix",
                "must be between 1 and 128",
            ),
            (
                security.auth_rate_limit > 0 && security.auth_rate_burst == 0,
                "security.auth_rate_burst",
                "must be at least 1 when AUTH_RATE_LIMIT is set",
            ),
        ];
        rules
            .into_iter()
            .find(|(broken, ..)| *broken)
            .map(|(_, key, why)| (key, why))
    }

    /// The first duration or interval set to 0, which would mean "at once, always".
    fn zero_duration(&self) -> Option<&'static str> {
        let (jwt, security, sessions) = (&self.jwt, &self.security, &self.sessions);
        [
            ("jwt.access_token_expires", jwt.access_token_expires),
            ("jwt.refresh_token_expires", jwt.refresh_token_expires),
            ("sessions.session_timeout", sessions.session_timeout),
            ("sessions.device_token_ttl", sessions.device_token_ttl),
            (
                "sessions.session_check_interval",
                sessions.session_check_interval,
            ),
            (
                "security.login_failure_window",
                security.login_failure_window,
            ),
            ("actors.probe_interval_ms", self.actors.probe_interval_ms),
            ("actors.call_timeout_ms", self.actors.call_timeout_ms),
        ]
        .into_iter()
        .find(|(_, value)| *value == 0)
        .map(|(key, _)| key)
    }

    /// In production every secret that signs or admits is at least 32 bytes.
    fn production_secrets(&self) -> Result<(), ConfigError> {
        if !self.is_production() {
            return Ok(());
        }
        let short = |secret: &SecretString| secret.expose_secret().len() < 32;
        if self.jwt.previous_secret_keys.iter().any(short) {
            return Err(ConfigError(format!(
                "{} must hold keys of at least 32 bytes each when APP_ENV=production",
                named("jwt.previous_secret_keys")
            )));
        }
        if self
            .introspection
            .clients
            .iter()
            .any(|(_, secret)| short(secret))
        {
            return Err(ConfigError(format!(
                "{} must be comma-separated id:secret pairs, each secret at least 32 bytes when \
                 APP_ENV=production",
                named("introspection.clients")
            )));
        }
        Ok(())
    }

    /// The bootstrap administrator: all three variables or none.
    pub fn bootstrap_admin(&self) -> Result<Option<BootstrapAdmin>, ConfigError> {
        let b = &self.bootstrap;
        let password = b
            .admin_password
            .as_ref()
            .map(|p| p.expose_secret())
            .unwrap_or_default();
        let given = [
            !b.admin_email.is_empty(),
            !b.admin_username.is_empty(),
            !password.is_empty(),
        ];
        if given.iter().all(|g| !g) {
            return Ok(None);
        }
        if !given.iter().all(|g| *g) {
            return Err(ConfigError(
                "BOOTSTRAP_ADMIN_EMAIL, BOOTSTRAP_ADMIN_USERNAME and BOOTSTRAP_ADMIN_PASSWORD \
                 must be set together"
                    .into(),
            ));
        }
        let wrap = |var: &str, e: String| ConfigError(format!("{var}: {e}"));
        Ok(Some(BootstrapAdmin {
            email: Email::parse(&b.admin_email).map_err(|e| wrap("BOOTSTRAP_ADMIN_EMAIL", e))?,
            username: Username::parse(&b.admin_username)
                .map_err(|e| wrap("BOOTSTRAP_ADMIN_USERNAME", e))?,
            password: Password::parse(password).map_err(|e| wrap("BOOTSTRAP_ADMIN_PASSWORD", e))?,
        }))
    }

    /// How long audit entries are kept (`None`: for ever).
    pub fn audit_retention(&self) -> Option<Duration> {
        let days = u64::from(self.audit.retention_days);
        (days > 0).then(|| Duration::from_secs(days * 86_400))
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.actors.call_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_and_seed_names_override() {
        let s = Settings::load_from(&env(&[
            ("JWT_ACCESS_TOKEN_EXPIRES", "60"),
            ("MAX_CONCURRENT_SESSIONS", "3"),
        ]));
        let s = s.map_err(|e| e.to_string());
        assert_eq!(
            s.as_ref().map(|s| (
                s.jwt.access_token_expires,
                s.sessions.max_concurrent_sessions
            )),
            Ok((60, 3))
        );
        assert_eq!(s.map(|s| s.jwt.refresh_token_expires), Ok(604800));
    }

    #[test]
    fn production_refuses_a_short_secret_naming_the_variable() {
        let err = Settings::load_from(&env(&[
            ("APP_ENV", "production"),
            ("JWT_SECRET_KEY", "short"),
        ]))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("JWT_SECRET_KEY"), "{err}");
    }

    #[test]
    fn redis_cluster_nodes_choose_redis_and_bad_ones_or_a_braced_prefix_are_refused() {
        let s = Settings::load_from(&env(&[("REDIS_CLUSTER_NODES", "a:7000, b:7001")]));
        let s = s.map_err(|e| e.to_string());
        assert_eq!(
            s.as_ref().map(|s| s.tokens_backend()),
            Ok(TokensBackend::Redis)
        );
        assert_eq!(
            s.map(|s| s.redis.cluster_nodes),
            Ok(vec![("a".to_string(), 7000), ("b".to_string(), 7001)])
        );
        for (name, value) in [
            ("REDIS_CLUSTER_NODES", "a:7000,nope"),
            ("REDIS_CLUSTER_NODES", "a:0"),
            ("REDIS_KEY_PREFIX", "app{x}:"),
        ] {
            let err = Settings::load_from(&env(&[(name, value)]))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(name), "{value}: {err}");
        }
    }

    #[test]
    fn settings_written_as_text_load_typed_and_print_back_as_text() {
        let s = Settings::load_from(&env(&[
            ("SESSION_LIMIT_POLICY", "reject"),
            ("JWT_ALGORITHM", "EdDSA"),
            ("TRUSTED_PROXIES", " 10.0.0.0/8, 127.0.0.1 ,"),
            ("JWT_PREVIOUS_PUBLIC_KEY_FILES", "a.pem, b.pem"),
            ("JWT_PREVIOUS_SECRET_KEYS", "old-key-one,old-key-two"),
            (
                "INTROSPECTION_CLIENTS",
                "billing:s3cret-one, audit:s3cret-two",
            ),
        ]))
        .map_err(|e| e.to_string());
        let Ok(s) = s else {
            panic!("{s:?}");
        };
        assert_eq!(s.sessions.limit_policy, LimitPolicy::Reject);
        assert_eq!(s.jwt.algorithm, SigningAlgorithm::EdDsa);
        let proxies: Vec<String> = s
            .security
            .trusted_proxies
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(proxies, ["10.0.0.0/8", "127.0.0.1/32"]);
        assert_eq!(s.jwt.previous_public_key_files, ["a.pem", "b.pem"]);
        assert_eq!(s.jwt.previous_secret_keys.len(), 2);
        let ids: Vec<&str> = s
            .introspection
            .clients
            .iter()
            .map(|(id, _)| id.as_str())
            .collect();
        assert_eq!(ids, ["billing", "audit"]);
        let printed = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(printed["sessions"]["limit_policy"], "reject");
        assert_eq!(printed["jwt"]["algorithm"], "EdDSA");
        assert_eq!(
            printed["security"]["trusted_proxies"],
            "10.0.0.0/8,127.0.0.1/32"
        );
        assert_eq!(printed["jwt"]["previous_public_key_files"], "a.pem,b.pem");
        assert_eq!(printed["jwt"]["previous_secret_keys"], "***");
        assert_eq!(printed["introspection"]["clients"], "***");
        let shown = printed.to_string();
        for secret in ["old-key-one", "s3cret-one"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn a_setting_that_does_not_convert_names_its_variable() {
        for (name, value) in [
            ("SESSION_LIMIT_POLICY", "sometimes"),
            ("JWT_ALGORITHM", "RS1"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, proxy.local"),
            ("INTROSPECTION_CLIENTS", "billing"),
            ("STORAGE_BACKEND", "postgres"),
        ] {
            let err = Settings::load_from(&env(&[(name, value)]))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(name), "{value}: {err}");
        }
        let production = |name, value| {
            Settings::load_from(&env(&[
                ("APP_ENV", "production"),
                ("JWT_SECRET_KEY", "a-production-secret-of-32-bytes-x"),
                (name, value),
            ]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
        };
        let err = production("INTROSPECTION_CLIENTS", "billing:short");
        assert!(err.contains("INTROSPECTION_CLIENTS"), "{err}");
        let err = production("JWT_PREVIOUS_SECRET_KEYS", "short");
        assert!(err.contains("JWT_PREVIOUS_SECRET_KEYS"), "{err}");
    }

    #[test]
    fn a_bad_number_names_its_variable() {
        let err = Settings::load_from(&env(&[("BCRYPT_COST", "lots")]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("BCRYPT_COST"), "{err}");
    }

    #[test]
    fn the_resolved_configuration_masks_secrets() {
        let s = Settings::load_from(&env(&[
            ("JWT_SECRET_KEY", "a-very-secret-value-xyz"),
            (
                "MONGODB_URI",
                "mongodb://app:hunter22@db:27017/credit_system",
            ),
            ("REDIS_HOST", "redis"),
            ("REDIS_PASSWORD", "redis-secret-1"),
        ]))
        .map_err(|e| e.to_string());
        let json = s.map(|s| serde_json::to_string(&s).unwrap_or_default());
        let json = json.unwrap_or_default();
        for secret in ["a-very-secret-value-xyz", "hunter22", "redis-secret-1"] {
            assert!(!json.contains(secret), "{json}");
        }
        assert!(
            json.contains("mongodb://app:***@db:27017/credit_system"),
            "{json}"
        );
    }

    #[test]
    fn the_embedded_pair_is_the_default_and_servers_are_chosen_by_their_variables() {
        let backends = |pairs: &[(&str, &str)]| {
            Settings::load_from(&env(pairs))
                .map(|s| (s.storage_backend(), s.tokens_backend()))
                .map_err(|e| e.to_string())
        };
        use StorageBackend::{Embedded, Mongodb};
        use TokensBackend::Redis;
        let pair = |a, b| Ok((a, b));
        assert_eq!(backends(&[]), pair(Embedded, TokensBackend::Embedded));
        assert_eq!(
            backends(&[("MONGODB_URI", "mongodb://db/x"), ("REDIS_HOST", "r")]),
            pair(Mongodb, Redis)
        );
        assert_eq!(
            backends(&[("MONGODB_URI", "mongodb://db/x")]),
            pair(Mongodb, TokensBackend::Embedded)
        );
        assert_eq!(
            backends(&[("REDIS_HOST", "r"), ("STORAGE_BACKEND", "embedded")]),
            pair(Embedded, Redis)
        );
        let err = backends(&[("TOKENS_BACKEND", "memcached")])
            .err()
            .unwrap_or_default();
        assert!(err.contains("TOKENS_BACKEND"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let s = Settings::load_from(&env(&[("JWT_SECRET_KEY", "a-very-secret-value-xyz")]));
        let printed = format!("{s:?}");
        assert!(!printed.contains("a-very-secret-value-xyz"));
    }
}
