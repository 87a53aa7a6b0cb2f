//! The records the DbQueueActor reads and writes, with their BSON layout (compatible with the
//! seed's Python data) and their public JSON shape (never the password hash).
use chrono::{DateTime, SecondsFormat, Utc};
use mongodb::bson::{self, doc, oid::ObjectId, Bson, Document};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{search_keys, search_slot, Email, UserId, Username};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            _ => Err("role must be one of: user, admin".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Active,
    Inactive,
    Suspended,
}

impl UserStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Inactive => "inactive",
            UserStatus::Suspended => "suspended",
        }
    }

    /// A stored status. Missing (the seed's oldest documents) reads as `active`; a value this
    /// version does not know fails closed: `inactive`, which cannot sign in or use a session.
    pub fn from_stored(raw: Option<&str>) -> Self {
        match raw.map(Self::parse) {
            None => UserStatus::Active,
            Some(Ok(status)) => status,
            Some(Err(_)) => {
                tracing::warn!(
                    stored = raw.unwrap_or_default(),
                    "a user has a status this version does not know; treated as inactive"
                );
                UserStatus::Inactive
            }
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "active" => Ok(UserStatus::Active),
            "inactive" => Ok(UserStatus::Inactive),
            "suspended" => Ok(UserStatus::Suspended),
            _ => Err("status must be one of: active, inactive, suspended".into()),
        }
    }
}

/// Why a session ended; each gives its own 401 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Logout,
    /// Evicted by a newer sign-in beyond `max_concurrent_sessions`.
    Evicted,
    /// A rotated refresh token was presented again.
    RefreshReuse,
    /// Idle longer than `session_timeout`.
    Expired,
    /// The account was suspended or deactivated.
    Suspended,
    Deleted,
    /// The password changed in another session.
    PasswordChanged,
    /// Ended by its user from another session, or by an administrator (the sessions API).
    Revoked,
}

impl EndReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::Evicted => "evicted",
            EndReason::RefreshReuse => "refresh_reuse",
            EndReason::Expired => "expired",
            EndReason::Suspended => "suspended",
            EndReason::Deleted => "deleted",
            EndReason::PasswordChanged => "password_changed",
            EndReason::Revoked => "revoked",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "logout" => EndReason::Logout,
            "evicted" => EndReason::Evicted,
            "refresh_reuse" => EndReason::RefreshReuse,
            "expired" => EndReason::Expired,
            "suspended" => EndReason::Suspended,
            "deleted" => EndReason::Deleted,
            "password_changed" => EndReason::PasswordChanged,
            "revoked" => EndReason::Revoked,
            _ => return None,
        })
    }
}

/// RFC 3339 UTC with a `Z`, to the second: `2024-01-15T10:30:00Z`.
pub(crate) fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn serialize_time<S: serde::Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(at))
}

fn serialize_opt_time<S: serde::Serializer>(
    at: &Option<DateTime<Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.serialize_str(&rfc3339(at)),
        None => s.serialize_none(),
    }
}

/// A user account. Serializes to the public JSON shape; the hash is skipped.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    /// 24 hexadecimal characters.
    #[serde(rename = "_id", serialize_with = "serialize_hex")]
    #[schema(value_type = String, example = "507f1f77bcf86cd799439011")]
    pub id: UserId,
    pub email: String,
    pub username: String,
    pub status: UserStatus,
    pub role: Role,
    #[serde(serialize_with = "serialize_time")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "serialize_time")]
    pub updated_at: DateTime<Utc>,
    #[serde(serialize_with = "serialize_opt_time")]
    pub last_login_at: Option<DateTime<Utc>>,
    pub login_count: i64,
    #[serde(skip)]
    pub password_hash: String,
    /// Raised by every password change (not by a rehash): a session carries the version it was
    /// opened under, and a session of an older version is refused. Missing (seed data) = 0.
    #[serde(skip)]
    pub credential_version: i64,
}

fn serialize_hex<S: serde::Serializer>(id: &UserId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&id.to_hex())
}

fn get_time(doc: &Document, key: &str) -> Option<DateTime<Utc>> {
    match doc.get(key)? {
        Bson::DateTime(d) => Some(d.to_chrono()),
        // The seed's Python code may have stored ISO strings.
        Bson::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                    .ok()
                    .map(|n| n.and_utc())
            }),
        _ => None,
    }
}

fn get_int(doc: &Document, key: &str) -> Option<i64> {
    match doc.get(key)? {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(f) if f.is_finite() => Some(*f as i64),
        _ => None,
    }
}

impl User {
    /// A stored user's place in a search's order (newest first): its `created_at` as
    /// [`User::from_document`] reads it, and its id.
    pub fn sort_key(doc: &Document) -> Option<(DateTime<Utc>, UserId)> {
        let id = doc.get_object_id("_id").ok()?;
        let created_at = get_time(doc, "created_at").unwrap_or_else(|| id.timestamp().to_chrono());
        Some((created_at, id.into()))
    }

    /// Reads a stored user leniently: documents written by the seed's Python service may lack
    /// `role`, `login_count` or timestamps, and must still load.
    pub fn from_document(doc: &Document) -> Result<Self, String> {
        let id = doc
            .get_object_id("_id")
            .map_err(|_| "user document without an ObjectId _id".to_string())?;
        let created_at = get_time(doc, "created_at").unwrap_or_else(|| id.timestamp().to_chrono());
        Ok(Self {
            id: id.into(),
            email: doc.get_str("email").unwrap_or_default().to_string(),
            username: doc.get_str("username").unwrap_or_default().to_string(),
            status: UserStatus::from_stored(doc.get_str("status").ok()),
            role: doc
                .get_str("role")
                .ok()
                .and_then(|s| Role::parse(s).ok())
                .unwrap_or(Role::User),
            created_at,
            updated_at: get_time(doc, "updated_at").unwrap_or(created_at),
            last_login_at: get_time(doc, "last_login_at"),
            login_count: get_int(doc, "login_count").unwrap_or(0),
            password_hash: doc.get_str("password_hash").unwrap_or_default().to_string(),
            credential_version: get_int(doc, "credential_version").unwrap_or(0),
        })
    }
}

/// A user to be created, already validated and hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub username: Username,
    pub password_hash: String,
    pub role: Role,
    pub status: UserStatus,
}

impl NewUser {
    pub fn to_document(&self, id: ObjectId, now: DateTime<Utc>) -> Document {
        let now = bson::DateTime::from_chrono(now);
        doc! {
            "_id": id,
            "email": self.email.as_str(),
            "email_key": self.email.key().as_str(),
            "username": self.username.as_str(),
            "username_lower": self.username.lowercase(),
            "username_keys": search_keys(self.username.as_str()),
            "email_keys": search_keys(self.email.as_str()),
            "search_slot": search_slot(&id),
            "password_hash": &self.password_hash,
            "status": self.status.as_str(),
            "role": self.role.as_str(),
            "created_at": now,
            "updated_at": now,
            "last_login_at": Bson::Null,
            "login_count": 0_i64,
            "credential_version": 0_i64,
        }
    }
}

/// What an update changes; `None` leaves a field as it is. Values are already validated (and
/// the password already hashed).
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    pub email: Option<Email>,
    pub username: Option<Username>,
    pub password_hash: Option<String>,
    pub status: Option<UserStatus>,
    pub role: Option<Role>,
}

impl UserChanges {
    pub fn is_empty(&self) -> bool {
        self.email.is_none()
            && self.username.is_none()
            && self.password_hash.is_none()
            && self.status.is_none()
            && self.role.is_none()
    }

    /// The names of the fields changed, for the audit trail (never their secret values).
    pub fn field_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.email.is_some() {
            names.push("email");
        }
        if self.username.is_some() {
            names.push("username");
        }
        if self.password_hash.is_some() {
            names.push("password");
        }
        if self.status.is_some() {
            names.push("status");
        }
        if self.role.is_some() {
            names.push("role");
        }
        names
    }

    pub fn to_set_document(&self, now: DateTime<Utc>) -> Document {
        let mut set = doc! {"updated_at": bson::DateTime::from_chrono(now)};
        if let Some(email) = &self.email {
            set.insert("email", email.as_str());
            set.insert("email_key", email.key().as_str());
            set.insert("email_keys", search_keys(email.as_str()));
        }
        if let Some(username) = &self.username {
            set.insert("username", username.as_str());
            set.insert("username_lower", username.lowercase());
            set.insert("username_keys", search_keys(username.as_str()));
        }
        if let Some(hash) = &self.password_hash {
            set.insert("password_hash", hash.as_str());
        }
        if let Some(status) = self.status {
            set.insert("status", status.as_str());
        }
        if let Some(role) = self.role {
            set.insert("role", role.as_str());
        }
        set
    }
}

/// A user's credit wallet. One per user; kept as `closed` when the user is deleted.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Wallet {
    #[serde(rename = "_id", serialize_with = "serialize_oid")]
    #[schema(value_type = String, example = "507f1f77bcf86cd799439021")]
    pub id: ObjectId,
    pub user_id: String,
    pub balance: i64,
    pub currency: String,
    pub status: String,
    #[serde(serialize_with = "serialize_time")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "serialize_time")]
    pub updated_at: DateTime<Utc>,
}

fn serialize_oid<S: serde::Serializer>(id: &ObjectId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&id.to_hex())
}

impl Wallet {
    pub fn new(user_id: &UserId, balance: i64, now: DateTime<Utc>) -> Self {
        Self {
            id: ObjectId::new(),
            user_id: user_id.to_hex(),
            balance,
            currency: "credits".into(),
            status: "active".into(),
            created_at: now,
            updated_at: now,
        }
    }

    pub fn to_document(&self) -> Document {
        doc! {
            "_id": self.id,
            "user_id": &self.user_id,
            "balance": self.balance,
            "currency": &self.currency,
            "status": &self.status,
            "created_at": bson::DateTime::from_chrono(self.created_at),
            "updated_at": bson::DateTime::from_chrono(self.updated_at),
        }
    }

    pub fn from_document(doc: &Document) -> Result<Self, String> {
        let id = doc
            .get_object_id("_id")
            .map_err(|_| "wallet document without an ObjectId _id".to_string())?;
        let created_at = get_time(doc, "created_at").unwrap_or_else(|| id.timestamp().to_chrono());
        Ok(Self {
            id,
            user_id: doc.get_str("user_id").unwrap_or_default().to_string(),
            balance: get_int(doc, "balance").unwrap_or(0),
            currency: doc.get_str("currency").unwrap_or("credits").to_string(),
            status: doc.get_str("status").unwrap_or("active").to_string(),
            created_at,
            updated_at: get_time(doc, "updated_at").unwrap_or(created_at),
        })
    }
}

/// One line of the audit trail. Never holds a password, hash or token.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub action: &'static str,
    pub user_id: Option<String>,
    pub actor_id: Option<String>,
    pub email: Option<String>,
    pub ip: Option<String>,
    pub outcome: &'static str,
    pub details: Document,
}

impl AuditEntry {
    pub fn new(action: &'static str, outcome: &'static str) -> Self {
        Self {
            at: Utc::now(),
            action,
            user_id: None,
            actor_id: None,
            email: None,
            ip: None,
            outcome,
            details: Document::new(),
        }
    }

    /// A session ended for idleness (by the sweep, or found so when the user signed in again).
    pub fn session_expired(
        user_id: impl ToString,
        sid: &super::SessionId,
        idle_timeout: std::time::Duration,
    ) -> Self {
        Self::new("session.expired", "success")
            .user(user_id)
            .detail("session_id", sid.as_str())
            .detail("idle_timeout_s", idle_timeout.as_secs() as i64)
    }

    pub fn user(mut self, user_id: impl ToString) -> Self {
        self.user_id = Some(user_id.to_string());
        self
    }

    pub fn actor(mut self, actor_id: impl ToString) -> Self {
        self.actor_id = Some(actor_id.to_string());
        self
    }

    pub fn email(mut self, email: impl ToString) -> Self {
        self.email = Some(email.to_string());
        self
    }

    pub fn ip(mut self, ip: super::ClientIp) -> Self {
        self.ip = Some(ip.to_string());
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Bson>) -> Self {
        self.details.insert(key, value.into());
        self
    }

    pub fn to_document(&self) -> Document {
        let opt = |v: &Option<String>| v.clone().map(Bson::String).unwrap_or(Bson::Null);
        doc! {
            "at": bson::DateTime::from_chrono(self.at),
            "action": self.action,
            "user_id": opt(&self.user_id),
            "actor_id": opt(&self.actor_id),
            "email": opt(&self.email),
            "ip": opt(&self.ip),
            "outcome": self.outcome,
            "details": self.details.clone(),
        }
    }
}

/// A stored audit entry as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditRecord {
    #[serde(rename = "_id")]
    pub id: String,
    /// RFC 3339 UTC.
    pub at: String,
    pub action: String,
    /// The subject of the operation.
    pub user_id: Option<String>,
    /// Who acted; null when anonymous.
    pub actor_id: Option<String>,
    pub email: Option<String>,
    pub ip: Option<String>,
    pub outcome: String,
    /// Operation-specific facts, as relaxed extended JSON.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl AuditRecord {
    pub fn from_document(doc: &Document) -> Self {
        let text = |key: &str| doc.get_str(key).ok().map(str::to_string);
        Self {
            id: doc
                .get_object_id("_id")
                .map(|id| id.to_hex())
                .unwrap_or_default(),
            at: get_time(doc, "at").map(|t| rfc3339(&t)).unwrap_or_default(),
            action: text("action").unwrap_or_default(),
            user_id: text("user_id"),
            actor_id: text("actor_id"),
            email: text("email"),
            ip: text("ip"),
            outcome: text("outcome").unwrap_or_default(),
            details: doc
                .get("details")
                .cloned()
                .map(Bson::into_relaxed_extjson)
                .unwrap_or(serde_json::Value::Null),
        }
    }
}

/// A new account: the user and their wallet, created together.
#[derive(Debug, Clone)]
pub struct Registered {
    pub user: User,
    pub wallet: Wallet,
}

/// One page of a listing (newest first) and how many match in all.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_user_without_new_fields_loads_with_defaults() {
        let id = ObjectId::new();
        let doc = doc! {"_id": id, "email": "a@b.co", "username": "abc", "password_hash": "$2b$"};
        let user = User::from_document(&doc).map_err(|e| e.to_string());
        let user = user.as_ref().map(|u| (u.role, u.status, u.login_count));
        assert_eq!(user, Ok((Role::User, UserStatus::Active, 0)));
    }

    #[test]
    fn a_stored_status_this_version_does_not_know_fails_closed() {
        let id = ObjectId::new();
        let doc = doc! {"_id": id, "email": "a@b.co", "username": "abc", "status": "frozen"};
        let status = User::from_document(&doc).map(|u| u.status);
        assert_eq!(status, Ok(UserStatus::Inactive));
        assert_eq!(UserStatus::from_stored(None), UserStatus::Active);
    }

    #[test]
    fn public_json_has_no_hash_and_rfc3339_times() {
        let id = ObjectId::new();
        let doc = doc! {"_id": id, "email": "a@b.co", "username": "abc", "password_hash": "$2b$secret",
        "created_at": bson::DateTime::from_millis(1_705_314_600_000)};
        let json = User::from_document(&doc)
            .ok()
            .and_then(|u| serde_json::to_value(u).ok())
            .unwrap_or_default();
        assert!(json.get("password_hash").is_none());
        assert_eq!(json["created_at"], "2024-01-15T10:30:00Z");
        assert_eq!(json["last_login_at"], serde_json::Value::Null);
    }
}
