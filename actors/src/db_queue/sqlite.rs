//! The embedded store behind the DbQueueActor: users, wallets and the audit trail in one SQLite
//! file (`DATA_DIR/users.db`), with the MongoDB store's guarantees: unique email key (SPEC 10)
//! and (case-insensitive) username by unique indexes, a user and their wallet (and the audit entry)
//! written in one transaction, the same ordering of searches and audit pages. Ids are the same
//! 24-hex ObjectIds, so a user's id looks the same on either backend.
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mongodb::bson::{oid::ObjectId, Bson};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use super::messages::{
    BackfillSearchIndex, Backfilled, DeleteUser, Expect, Guard, IndexPlan, Indexed, IndexedSearch,
    KeepSearchMemory, ListAudit, RegisterUser, SearchIndexed, SearchPosition, SearchSlice,
    SearchUsersSlice, UpdateUser, UserFilter, Written,
};
use crate::domain::{
    AuditEntry, AuditRecord, Email, EmailKey, Page, Registered, Role, User, UserId, UserStatus,
    Wallet,
};
use crate::error::DuplicateField;
use crate::sqlite::{
    has_column, open_read_only, sqlite_error, unique_violation, Durability, Reader, SqliteDb,
};
use crate::ActorError;

/// The schema, idempotent. Index names match the MongoDB store's.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS users (
  id TEXT PRIMARY KEY NOT NULL,
  email TEXT NOT NULL,
  username TEXT NOT NULL,
  username_lower TEXT NOT NULL,
  password_hash TEXT NOT NULL,
  status TEXT NOT NULL,
  role TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  last_login_at INTEGER,
  login_count INTEGER NOT NULL DEFAULT 0,
  credential_version INTEGER NOT NULL DEFAULT 0
);
DROP INDEX IF EXISTS email_unique;
CREATE UNIQUE INDEX IF NOT EXISTS username_ci_unique ON users(username_lower);
CREATE INDEX IF NOT EXISTS "status" ON users(status);
CREATE INDEX IF NOT EXISTS "created_at" ON users(created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS wallets (
  id TEXT PRIMARY KEY NOT NULL,
  user_id TEXT NOT NULL,
  balance INTEGER NOT NULL,
  currency TEXT NOT NULL,
  status TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS user_id_unique ON wallets(user_id);
CREATE TABLE IF NOT EXISTS audit_log (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL,
  at INTEGER NOT NULL,
  action TEXT NOT NULL,
  user_id TEXT,
  actor_id TEXT,
  email TEXT,
  ip TEXT,
  outcome TEXT NOT NULL,
  details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS "at" ON audit_log(at DESC, seq DESC);
CREATE INDEX IF NOT EXISTS user_at ON audit_log(user_id, at DESC);
CREATE INDEX IF NOT EXISTS action_at ON audit_log(action, at DESC);
PRAGMA user_version = 1;
"#;

const USER_COLUMNS: &str = "id, email, username, status, role, created_at, updated_at, \
                            last_login_at, login_count, password_hash, credential_version";

/// Columns added since the first release of this file's tables.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("users", "credential_version", "INTEGER NOT NULL DEFAULT 0"),
    ("users", "email_key", "TEXT"),
];

/// The unique index of the email key, made once every user has one ([`SqliteStore::ensure_indexes`]),
/// and the ASCII-only case-insensitive index it replaces.
const EMAIL_KEY_INDEX: &str =
    "CREATE UNIQUE INDEX IF NOT EXISTS email_key_unique ON users(email_key)";
const RETIRED_EMAIL_INDEX: &str = "email_ci_unique";
/// The index of emails as typed that the first schema had (dropped by [`SCHEMA`]).
const RETIRED_SEED_INDEX: &str = "email_unique";

/// The search index (issue 32): the trigrams of each user's lower-cased username and email in
/// an FTS5 table (with its own copy of the two: SQLite 3.34 and later read and write it, so an
/// older `sqlite3` shell can still change a user), under the user row's `rowid`,
/// kept by triggers in the transaction of every write to `users`. A substring of three
/// characters or more is a phrase of its trigrams, so a search reads the rows that hold them,
/// not the table. The users stored before it existed are added by [`BackfillSearchIndex`]
/// steps, from the lowest `rowid` up to `upto` (`search_backfill` holds the progress; no row:
/// complete). Implicit rowids stay put as long as nothing runs `VACUUM` on the file (nothing in
/// the service does).
const SEARCH_SCHEMA: &str = r#"
CREATE VIRTUAL TABLE IF NOT EXISTS users_search USING fts5(
  username, email, tokenize='trigram case_sensitive 1'
);
CREATE TABLE IF NOT EXISTS search_backfill (upto INTEGER NOT NULL, done INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS users_search_insert AFTER INSERT ON users BEGIN
  INSERT INTO users_search (rowid, username, email)
  VALUES (new.rowid, new.username_lower, lower(new.email));
END;
CREATE TRIGGER IF NOT EXISTS users_search_delete AFTER DELETE ON users BEGIN
  DELETE FROM users_search WHERE rowid = old.rowid;
END;
CREATE TRIGGER IF NOT EXISTS users_search_update AFTER UPDATE OF username_lower, email ON users
BEGIN
  DELETE FROM users_search WHERE rowid = old.rowid;
  INSERT INTO users_search (rowid, username, email)
  VALUES (new.rowid, new.username_lower, lower(new.email));
END;
"#;

/// The `(table, name)` of each `CREATE {kind} IF NOT EXISTS` of `schema` (`kind`: `TABLE` or
/// `INDEX`; a table's name is its own): what a dry run looks for, read from the one schema.
fn schema_objects(schema: &str, kind: &str) -> Vec<(String, String)> {
    let unquote = |word: &str| word.trim_matches('"').to_string();
    schema
        .lines()
        .filter_map(|line| {
            let line = line
                .trim_start_matches("CREATE ")
                .trim_start_matches("UNIQUE ");
            let rest = line.strip_prefix(kind)?.strip_prefix(" IF NOT EXISTS ")?;
            let mut words = rest.split(|c: char| c.is_whitespace() || c == '(');
            let name = unquote(words.next()?);
            let table = if kind == "TABLE" {
                name.clone()
            } else {
                words.find(|w| !w.is_empty() && *w != "ON").map(unquote)?
            };
            Some((table, name))
        })
        .collect()
}
const WALLET_COLUMNS: &str = "id, user_id, balance, currency, status, created_at, updated_at";

const NAME: &str = "sqlite";

fn db_error(e: rusqlite::Error) -> ActorError {
    sqlite_error(NAME, e)
}

/// Now, to the millisecond: what is stored is what the reply says.
fn now_ms() -> DateTime<Utc> {
    let ms = Utc::now().timestamp_millis();
    DateTime::from_timestamp_millis(ms).unwrap_or_else(Utc::now)
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn parse_oid(raw: &str) -> rusqlite::Result<ObjectId> {
    ObjectId::parse_str(raw).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn user_from_row(row: &Row) -> rusqlite::Result<User> {
    let id: String = row.get(0)?;
    let status: String = row.get(3)?;
    let role: String = row.get(4)?;
    Ok(User {
        id: parse_oid(&id)?.into(),
        email: row.get(1)?,
        username: row.get(2)?,
        status: UserStatus::from_stored(Some(&status)),
        role: Role::parse(&role).unwrap_or(Role::User),
        created_at: time(row.get(5)?),
        updated_at: time(row.get(6)?),
        last_login_at: row.get::<_, Option<i64>>(7)?.map(time),
        login_count: row.get(8)?,
        password_hash: row.get(9)?,
        credential_version: row.get(10)?,
    })
}

fn wallet_from_row(row: &Row) -> rusqlite::Result<Wallet> {
    let id: String = row.get(0)?;
    Ok(Wallet {
        id: parse_oid(&id)?,
        user_id: row.get(1)?,
        balance: row.get(2)?,
        currency: row.get(3)?,
        status: row.get(4)?,
        created_at: time(row.get(5)?),
        updated_at: time(row.get(6)?),
    })
}

fn audit_from_row(row: &Row) -> rusqlite::Result<AuditRecord> {
    let details: String = row.get(8)?;
    Ok(AuditRecord {
        id: row.get(0)?,
        at: crate::domain::rfc3339(&time(row.get(1)?)),
        action: row.get(2)?,
        user_id: row.get(3)?,
        actor_id: row.get(4)?,
        email: row.get(5)?,
        ip: row.get(6)?,
        outcome: row.get(7)?,
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
    })
}

fn insert_audit(c: &Connection, entry: &AuditEntry) -> rusqlite::Result<()> {
    let details = Bson::Document(entry.details.clone()).into_relaxed_extjson();
    c.prepare_cached(
        "INSERT INTO audit_log (id, at, action, user_id, actor_id, email, ip, outcome, details) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        ObjectId::new().to_hex(),
        entry.at.timestamp_millis(),
        entry.action,
        entry.user_id,
        entry.actor_id,
        entry.email,
        entry.ip,
        entry.outcome,
        details.to_string(),
    ])?;
    Ok(())
}

fn find_user(c: &Connection, column: &str, value: &str) -> rusqlite::Result<Option<User>> {
    c.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE {column} = ?"
    ))?
    .query_row([value], user_from_row)
    .optional()
}

/// Emails of users without a key that share a key with another user's, each as one line.
fn key_clashes(c: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut by_key: std::collections::BTreeMap<EmailKey, Vec<String>> = Default::default();
    let mut rows = c.prepare("SELECT id, email FROM users")?;
    let users = rows.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for user in users {
        let (id, email) = user?;
        let key = EmailKey::of(&email);
        by_key
            .entry(key)
            .or_default()
            .push(format!("{email:?} ({id})"));
    }
    Ok(by_key
        .into_values()
        .filter(|holders| holders.len() > 1)
        .map(|holders| {
            format!(
                "emails that are one account (one key): {}",
                holders.join(" and ")
            )
        })
        .collect())
}

/// Writes its key onto every user that has none; replies with how many.
fn key_users(c: &Connection) -> rusqlite::Result<usize> {
    let unkeyed: Vec<(String, String)> = c
        .prepare("SELECT id, email FROM users WHERE email_key IS NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut set = c.prepare("UPDATE users SET email_key = ? WHERE id = ?")?;
    for (id, email) in &unkeyed {
        set.execute(params![EmailKey::of(email).as_str(), id])?;
    }
    Ok(unkeyed.len())
}

/// The SQL condition (on `users`) for "reads as `status`" (an unknown value reads as inactive).
fn status_is(status: UserStatus) -> &'static str {
    match status {
        UserStatus::Active => "status = 'active'",
        UserStatus::Suspended => "status = 'suspended'",
        UserStatus::Inactive => "status NOT IN ('active', 'suspended')",
    }
}

fn role_is(role: Role) -> &'static str {
    match role {
        Role::Admin => "role = 'admin'",
        Role::User => "role != 'admin'",
    }
}

/// The guard and the expectations of a conditional write, as a condition on the target row
/// and its arguments.
fn guarded_condition(guard: Guard, expect: &Expect) -> (String, Vec<Value>) {
    let mut conditions = vec!["id = ?".to_string()];
    let mut args = Vec::new();
    if guard == Guard::Owner {
        conditions.push(status_is(UserStatus::Active).into());
    }
    conditions.extend(expect.status.map(|s| status_is(s).to_string()));
    conditions.extend(expect.role.map(|r| role_is(r).to_string()));
    if let Some(version) = expect.credential_version {
        conditions.push("credential_version = ?".into());
        args.push(Value::Integer(version));
    }
    (conditions.join(" AND "), args)
}

/// Inside a write transaction: is `guard`'s administrator (if any) still an active one?
fn guard_holds(c: &Connection, guard: Guard) -> rusqlite::Result<bool> {
    let Guard::Admin(caller) = guard else {
        return Ok(true);
    };
    c.prepare_cached(&format!(
        "SELECT 1 FROM users WHERE id = ? AND {} AND {}",
        role_is(Role::Admin),
        status_is(UserStatus::Active)
    ))?
    .exists([caller.to_hex()])
}

/// Inside a write transaction, after its writes: is an active administrator left?
fn an_admin_is_left(c: &Connection) -> rusqlite::Result<bool> {
    c.prepare_cached(&format!(
        "SELECT 1 FROM users WHERE {} AND {}",
        role_is(Role::Admin),
        status_is(UserStatus::Active)
    ))?
    .exists([])
}

/// A guarded write matched nothing: the user is gone, or no longer what was expected.
fn missing_or_changed<T>(c: &Connection, id: &str) -> rusqlite::Result<Written<T>> {
    let exists = c
        .prepare_cached("SELECT 1 FROM users WHERE id = ?")?
        .exists([id])?;
    Ok(if exists {
        Written::Changed
    } else {
        Written::NotFound
    })
}

/// A write that hit a unique index is a 409 naming the field; anything else is a failure.
fn write_error(e: rusqlite::Error) -> ActorError {
    match unique_violation(&e) {
        Some("users.email_key") => ActorError::Duplicate(DuplicateField::Email),
        Some("users.username_lower") => ActorError::Duplicate(DuplicateField::Username),
        Some(_) => ActorError::Duplicate(DuplicateField::Unknown),
        None => db_error(e),
    }
}

/// One page of a query's rows in its order, and how many match in all.
fn page<T>(
    c: &Connection,
    from_where: &str,
    order: &str,
    columns: &str,
    args: Vec<Value>,
    (skip, limit): (u64, i64),
    map: impl FnMut(&Row) -> rusqlite::Result<T>,
) -> rusqlite::Result<Page<T>> {
    let total: i64 = c
        .prepare_cached(&format!("SELECT COUNT(*) {from_where}"))?
        .query_row(params_from_iter(args.iter()), |r| r.get(0))?;
    let mut paged = args;
    paged.push(Value::Integer(limit.max(0)));
    paged.push(Value::Integer(i64::try_from(skip).unwrap_or(i64::MAX)));
    let rows = c
        .prepare_cached(&format!(
            "SELECT {columns} {from_where} ORDER BY {order} LIMIT ? OFFSET ?"
        ))?
        .query_map(params_from_iter(paged.iter()), map)?
        .collect::<rusqlite::Result<Vec<T>>>()?;
    Ok(Page {
        items: rows,
        total: u64::try_from(total).unwrap_or(0),
    })
}

/// How to answer one operation of a batch once the commit's outcome is known: with its own
/// result (`None`), or with why the commit failed.
pub type Answer = Box<dyn FnOnce(Option<ActorError>) + Send>;

/// Runs one operation of a batch in a savepoint: an operation that fails is rolled back alone,
/// and the batch goes on.
pub fn in_savepoint<T>(
    c: &Connection,
    op: impl FnOnce(&Connection) -> Result<T, ActorError>,
) -> Result<T, ActorError> {
    c.execute_batch("SAVEPOINT op").map_err(db_error)?;
    let result = op(c);
    let end = if result.is_ok() {
        "RELEASE op"
    } else {
        "ROLLBACK TO op; RELEASE op"
    };
    match c.execute_batch(end) {
        Ok(()) => result,
        Err(e) => Err(db_error(e)),
    }
}

#[derive(Clone)]
pub struct SqliteStore {
    db: SqliteDb,
    /// A read-only connection for half of a long count, on a machine of more than one core.
    reader: Option<Reader>,
}

impl SqliteStore {
    /// Opens (or creates) `dir/users.db`. Commits are on disk before they are acknowledged.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let db = SqliteDb::open(
            &dir.join("users.db"),
            NAME,
            Durability::Full,
            SCHEMA,
            ADDED_COLUMNS,
        )?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let reader = if cores > 1 { Some(db.reader()?) } else { None };
        Ok(Self { db, reader })
    }

    /// The reader a batch's reads may share their work with ([`Beside`]).
    pub fn reader(&self) -> Option<Reader> {
        self.reader.clone()
    }

    pub fn database_name(&self) -> String {
        self.db.path().display().to_string()
    }

    /// Runs `batch` on the database thread inside one write transaction (`BEGIN IMMEDIATE`:
    /// instances sharing the file serialise) and commits it: one commit, so one wait for the
    /// disk, for every operation of the batch. `batch` runs each operation in a savepoint of its
    /// own (see [`in_savepoint`]) and returns how to answer them once the commit's outcome is
    /// known. The budget interrupts a statement still running at `deadline`.
    pub async fn batch<F>(&self, deadline: Instant, batch: F) -> Result<(), ActorError>
    where
        F: FnOnce(&Connection) -> Vec<Answer> + Send + 'static,
    {
        self.db
            .run(move |c| {
                let answers = match c.execute_batch("BEGIN IMMEDIATE") {
                    Ok(()) => {
                        c.progress_handler(1000, Some(move || Instant::now() >= deadline));
                        let answers = batch(c);
                        c.progress_handler(1000, None::<fn() -> bool>);
                        answers
                    }
                    Err(e) => return Err(db_error(e)),
                };
                match c.execute_batch("COMMIT") {
                    Ok(()) => answers.into_iter().for_each(|answer| answer(None)),
                    Err(e) => {
                        let _ = c.execute_batch("ROLLBACK");
                        let reason = e.to_string();
                        for answer in answers {
                            answer(Some(ActorError::unavailable(NAME, reason.clone())));
                        }
                    }
                }
                Ok(())
            })
            .await
    }

    pub async fn ping(self) -> Result<(), ActorError> {
        self.db.ping().await
    }

    /// Removes the audit entries older than `before`; replies with how many went.
    pub fn purge_audit(c: &Connection, before: DateTime<Utc>) -> Result<u64, ActorError> {
        c.execute(
            "DELETE FROM audit_log WHERE at < ?",
            [before.timestamp_millis()],
        )
        .map(|n| n as u64)
        .map_err(db_error)
    }

    /// The tables are made when the file is opened; what is left is the email key (SPEC 10):
    /// writing it onto users an earlier version stored, its unique index, and retiring the
    /// ASCII-only case-insensitive index it replaces.
    pub fn plan_indexes(c: &Connection) -> Result<IndexPlan, ActorError> {
        let mut plan = IndexPlan::default();
        // A file an earlier version made, read by a dry run, may lack the column still.
        let unkeyed_users = if has_column(c, "users", "email_key").map_err(db_error)? {
            "SELECT COUNT(*) FROM users WHERE email_key IS NULL"
        } else {
            "SELECT COUNT(*) FROM users"
        };
        let unkeyed: i64 = c
            .query_row(unkeyed_users, [], |r| r.get(0))
            .map_err(db_error)?;
        if unkeyed > 0 {
            plan.steps.push(format!(
                "write the email key (SPEC 10) onto {unkeyed} users"
            ));
        }
        let index = |name: &str| -> Result<bool, ActorError> {
            c.prepare_cached("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?")
                .and_then(|mut s| s.exists([name]))
                .map_err(db_error)
        };
        if !index("email_key_unique")? {
            plan.steps
                .push("create index users.email_key_unique".into());
        }
        if index(RETIRED_EMAIL_INDEX)? {
            plan.steps.push(format!(
                "drop index users.{RETIRED_EMAIL_INDEX} (the email key decides identity now)"
            ));
        }
        if unkeyed > 0 {
            plan.conflicts = key_clashes(c).map_err(db_error)?;
        }
        match search_backfill(c).map_err(db_error)? {
            SearchIndex::Missing => {
                let users: i64 = c
                    .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
                    .map_err(db_error)?;
                plan.steps.push(format!(
                    "create the search index users_search (trigrams of usernames and emails) \
                     and add its {users} users to it in steps, while serving"
                ));
            }
            SearchIndex::Filling { done, upto } => {
                let left: i64 = c
                    .query_row(
                        "SELECT COUNT(*) FROM users WHERE rowid > ? AND rowid <= ?",
                        [done, upto],
                        |r| r.get(0),
                    )
                    .map_err(db_error)?;
                plan.steps.push(format!(
                    "add the {left} users it lacks still to the search index users_search, in \
                     steps, while serving"
                ));
            }
            SearchIndex::Ready => {}
        }
        Ok(plan)
    }

    /// What starting on `dir/users.db` would change, read without writing anything (no file
    /// is created, no lock taken on a file no service has open): the tables, columns and
    /// indexes missing, the email keys to write, and the audit entries older than `retention`
    /// that the purge would remove.
    pub fn plan_read_only(dir: &Path, retention: Option<Duration>) -> Result<IndexPlan, String> {
        let path = dir.join("users.db");
        if !path.exists() {
            return Ok(IndexPlan {
                steps: vec![format!("create {} with its tables", path.display())],
                conflicts: vec![],
            });
        }
        let c = open_read_only(&path)?;
        let failed = |e: rusqlite::Error| format!("{}: {e}", path.display());
        let named = |kind: &str, name: &str| -> Result<bool, String> {
            c.prepare_cached("SELECT 1 FROM sqlite_master WHERE type = ? AND name = ?")
                .and_then(|mut s| s.exists([kind, name]))
                .map_err(failed)
        };
        let mut steps = Vec::new();
        for (table, _) in schema_objects(SCHEMA, "TABLE") {
            if !named("table", &table)? {
                steps.push(format!("create table {table}"));
            }
        }
        for (table, column, _) in ADDED_COLUMNS {
            if named("table", table)? && !has_column(&c, table, column).map_err(failed)? {
                steps.push(format!("add column {table}.{column}"));
            }
        }
        for (table, index) in schema_objects(SCHEMA, "INDEX") {
            if !named("index", &index)? {
                steps.push(format!("create index {table}.{index}"));
            }
        }
        if named("index", RETIRED_SEED_INDEX)? {
            steps.push(format!("drop index users.{RETIRED_SEED_INDEX}"));
        }
        let mut plan = if named("table", "users")? {
            Self::plan_indexes(&c).map_err(|e| e.to_string())?
        } else {
            IndexPlan::default()
        };
        plan.steps.splice(0..0, steps);
        if let Some(retention) = retention.filter(|_| named("table", "audit_log").unwrap_or(false))
        {
            let before = Utc::now() - retention;
            let aged: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM audit_log WHERE at < ?",
                    [before.timestamp_millis()],
                    |r| r.get(0),
                )
                .map_err(failed)?;
            if aged > 0 {
                plan.steps.push(format!(
                    "remove {aged} audit entries older than {} days (AUDIT_RETENTION_DAYS)",
                    retention.as_secs() / 86_400
                ));
            }
        }
        Ok(plan)
    }

    /// Carries out [`Self::plan_indexes`] in one transaction, or, when two users' emails share
    /// a key, stops naming them with nothing changed.
    pub fn ensure_indexes(c: &Connection) -> Result<(), ActorError> {
        let plan = Self::plan_indexes(c)?;
        if !plan.conflicts.is_empty() {
            return Err(ActorError::Incompatible(format!(
                "{} holds accounts this version must keep apart: {}; give each of them an email \
                 of its own (PUT /auth/{{id}} with an earlier version), or delete the duplicate \
                 account, then start again; nothing was changed",
                c.path().unwrap_or("users.db"),
                plan.conflicts.join("; ")
            )));
        }
        let keyed = in_savepoint(c, |c| {
            let keyed = key_users(c).map_err(db_error)?;
            c.execute_batch(&format!(
                "{SCHEMA}; {EMAIL_KEY_INDEX}; DROP INDEX IF EXISTS {RETIRED_EMAIL_INDEX};"
            ))
            .map_err(db_error)?;
            if let SearchIndex::Missing = search_backfill(c).map_err(db_error)? {
                c.execute_batch(SEARCH_SCHEMA).map_err(db_error)?;
                c.execute(
                    "INSERT INTO search_backfill (upto, done) \
                     SELECT MAX(rowid), 0 FROM users HAVING COUNT(*) > 0",
                    [],
                )
                .map_err(db_error)?;
            }
            Ok(keyed)
        })?;
        if keyed > 0 {
            tracing::info!(users = keyed, "email keys written");
        }
        Ok(())
    }

    /// User, wallet and the audit entry in one transaction; an administrator creating the
    /// account must still be one when it commits.
    pub fn register(c: &Connection, m: RegisterUser) -> Result<Written<Registered>, ActorError> {
        let RegisterUser {
            user: new,
            initial_balance,
            guard,
            audit,
        } = m;
        let now = now_ms();
        let id = UserId::new();
        let wallet = Wallet::new(&id, initial_balance, now);
        let user = User {
            id,
            email: new.email.as_str().to_string(),
            username: new.username.as_str().to_string(),
            status: new.status,
            role: new.role,
            created_at: now,
            updated_at: now,
            last_login_at: None,
            login_count: 0,
            password_hash: new.password_hash,
            credential_version: 0,
        };
        let audit = audit.user(id.to_hex());
        let username_lower = new.username.lowercase();
        if !guard_holds(c, guard).map_err(db_error)? {
            return Ok(Written::Changed);
        }
        c.prepare_cached(
            "INSERT INTO users (id, email, email_key, username, username_lower, password_hash, \
                     status, role, created_at, updated_at, last_login_at, login_count) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 0)",
        )
        .and_then(|mut s| {
            s.execute(params![
                user.id.to_hex(),
                user.email,
                new.email.key().as_str(),
                user.username,
                username_lower,
                user.password_hash,
                user.status.as_str(),
                user.role.as_str(),
                now.timestamp_millis(),
                now.timestamp_millis(),
            ])
        })
        .map_err(write_error)?;
        c.prepare_cached(&format!(
            "INSERT INTO wallets ({WALLET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        ))
        .and_then(|mut s| {
            s.execute(params![
                wallet.id.to_hex(),
                wallet.user_id,
                wallet.balance,
                wallet.currency,
                wallet.status,
                now.timestamp_millis(),
                now.timestamp_millis(),
            ])
        })
        .map_err(write_error)?;
        insert_audit(c, &audit).map_err(db_error)?;
        Ok(Written::Applied(Registered { user, wallet }))
    }

    pub fn find_user_by_email(c: &Connection, email: Email) -> Result<Option<User>, ActorError> {
        find_user(c, "email_key", email.key().as_str()).map_err(db_error)
    }

    pub fn find_user_by_id(c: &Connection, id: UserId) -> Result<Option<User>, ActorError> {
        find_user(c, "id", &id.to_hex()).map_err(db_error)
    }

    pub fn find_user_with_wallet(
        c: &Connection,
        id: UserId,
    ) -> Result<Option<(User, Option<Wallet>)>, ActorError> {
        let hex = id.to_hex();
        let Some(user) = find_user(c, "id", &hex).map_err(db_error)? else {
            return Ok(None);
        };
        let wallet = c
            .prepare_cached(&format!(
                "SELECT {WALLET_COLUMNS} FROM wallets WHERE user_id = ?"
            ))
            .and_then(|mut s| s.query_row([&hex], wallet_from_row).optional())
            .map_err(db_error)?;
        Ok(Some((user, wallet)))
    }

    pub fn record_login(
        c: &Connection,
        id: UserId,
        at: DateTime<Utc>,
        audit: Vec<AuditEntry>,
    ) -> Result<(), ActorError> {
        c.prepare_cached(
            "UPDATE users SET last_login_at = ?, login_count = login_count + 1 \
                     WHERE id = ?",
        )
        .and_then(|mut s| s.execute(params![at.timestamp_millis(), id.to_hex()]))
        .map_err(db_error)?;
        for entry in &audit {
            insert_audit(c, entry).map_err(db_error)?;
        }
        Ok(())
    }

    pub fn upgrade_hash(
        c: &Connection,
        id: UserId,
        verified: String,
        upgraded: String,
    ) -> Result<bool, ActorError> {
        c.execute(
            "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
            params![upgraded, id.to_hex(), verified],
        )
        .map(|n| n == 1)
        .map_err(db_error)
    }

    pub fn write_audit(c: &Connection, entry: AuditEntry) -> Result<(), ActorError> {
        insert_audit(c, &entry).map_err(db_error)
    }

    /// The changes, if the guard and the expectations hold, with the audit entry, in one
    /// transaction. A password change raises the credential version.
    pub fn update_user(c: &Connection, m: UpdateUser) -> Result<Written<User>, ActorError> {
        let changes = &m.changes;
        let mut sets = vec!["updated_at = ?"];
        let mut args = vec![Value::Integer(now_ms().timestamp_millis())];
        if let Some(email) = &changes.email {
            sets.push("email = ?");
            args.push(Value::Text(email.as_str().to_string()));
            sets.push("email_key = ?");
            args.push(Value::Text(email.key().as_str().to_string()));
        }
        if let Some(username) = &changes.username {
            sets.push("username = ?");
            args.push(Value::Text(username.as_str().to_string()));
            sets.push("username_lower = ?");
            args.push(Value::Text(username.lowercase()));
        }
        if let Some(hash) = &changes.password_hash {
            sets.push("password_hash = ?");
            args.push(Value::Text(hash.clone()));
            sets.push("credential_version = credential_version + 1");
        }
        if let Some(status) = changes.status {
            sets.push("status = ?");
            args.push(Value::Text(status.as_str().to_string()));
        }
        if let Some(role) = changes.role {
            sets.push("role = ?");
            args.push(Value::Text(role.as_str().to_string()));
        }
        let hex = m.id.to_hex();
        let (condition, condition_args) = guarded_condition(m.guard, &m.expect);
        args.push(Value::Text(hex.clone()));
        args.extend(condition_args);
        let sql = format!("UPDATE users SET {} WHERE {condition}", sets.join(", "));
        let (guard, keep_an_admin, audit) = (m.guard, m.keep_an_admin, m.audit);
        if !guard_holds(c, guard).map_err(db_error)? {
            return Ok(Written::Changed);
        }
        let matched = c
            .execute(&sql, params_from_iter(args.iter()))
            .map_err(write_error)?;
        if matched == 0 {
            return missing_or_changed(c, &hex).map_err(db_error);
        }
        if keep_an_admin && !an_admin_is_left(c).map_err(db_error)? {
            return Err(ActorError::LastAdmin);
        }
        insert_audit(c, &audit).map_err(db_error)?;
        let user = find_user(c, "id", &hex).map_err(db_error)?;
        Ok(user.map_or(Written::NotFound, Written::Applied))
    }

    /// Deletes the user (if the guard holds), closes (keeps) the wallet and writes the audit
    /// entry, in one transaction.
    pub fn delete_user(c: &Connection, m: DeleteUser) -> Result<Written<()>, ActorError> {
        let now = now_ms().timestamp_millis();
        let hex = m.id.to_hex();
        let (condition, mut args) = guarded_condition(m.guard, &m.expect);
        args.insert(0, Value::Text(hex.clone()));
        let sql = format!("DELETE FROM users WHERE {condition}");
        let (guard, keep_an_admin, audit) = (m.guard, m.keep_an_admin, m.audit);
        if !guard_holds(c, guard).map_err(db_error)? {
            return Ok(Written::Changed);
        }
        let deleted = c
            .execute(&sql, params_from_iter(args.iter()))
            .map_err(db_error)?;
        if deleted == 0 {
            return missing_or_changed(c, &hex).map_err(db_error);
        }
        if keep_an_admin && !an_admin_is_left(c).map_err(db_error)? {
            return Err(ActorError::LastAdmin);
        }
        c.execute(
            "UPDATE wallets SET status = 'closed', updated_at = ? WHERE user_id = ?",
            params![now, hex],
        )
        .map_err(db_error)?;
        insert_audit(c, &audit).map_err(db_error)?;
        Ok(Written::Applied(()))
    }

    /// Literal, case-insensitive substrings (`instr` on lower-cased copies: no pattern syntax
    /// at all), newest first.
    /// One slice of a search, as on MongoDB: at most `examine` users after `after` in id order
    /// are read and filtered.
    pub fn search_slice(c: &Connection, q: SearchUsersSlice) -> Result<SearchSlice, ActorError> {
        let mut conditions = Vec::new();
        let after = match q.after {
            Some(SearchPosition::Embedded(id)) => id.to_hex(),
            _ => String::new(),
        };
        let mut args = vec![
            Value::Text(after),
            Value::Integer(i64::from(q.examine.max(1))),
        ];
        if let Some(username) = &q.filter.username {
            conditions.push("instr(username_lower, ?) > 0");
            args.push(Value::Text(username.clone()));
        }
        if let Some(email) = &q.filter.email {
            conditions.push("instr(lower(email), ?) > 0");
            args.push(Value::Text(email.clone()));
        }
        if let Some(status) = q.filter.status {
            conditions.push("status = ?");
            args.push(Value::Text(status.as_str().to_string()));
        }
        let filter: String = conditions.iter().map(|c| format!(" AND {c}")).collect();
        let examine = i64::from(q.examine.max(1));
        let slice = "SELECT id FROM users WHERE id > ?1 ORDER BY id LIMIT ?2";
        let (covered, last): (i64, Option<String>) = c
            .prepare_cached(&format!("SELECT COUNT(*), MAX(id) FROM ({slice})"))
            .and_then(|mut s| {
                s.query_row(params![args[0], args[1]], |r| Ok((r.get(0)?, r.get(1)?)))
            })
            .map_err(db_error)?;
        let matches = c
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE id IN ({slice}){filter}"
            ))
            .and_then(|mut s| {
                s.query_map(params_from_iter(args.iter()), user_from_row)?
                    .map(|u| u.map(|u| (u.created_at, u.id)))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db_error)?;
        let next = if covered < examine {
            None
        } else {
            last.as_deref()
                .and_then(|id| UserId::parse(id).ok())
                .map(SearchPosition::Embedded)
        };
        Ok(SearchSlice {
            matches,
            may_recur: false,
            next,
        })
    }

    /// A whole search in one turn when an index bounds it ([`SearchIndexed`]). The candidates
    /// are the rows of the search index that hold the substrings' trigrams (an FTS5 phrase per
    /// substring: exact for three characters or more), or of the `status` index, or all users.
    /// Few candidates (up to `sort_at_most`) are read, filtered and sorted; many are
    /// counted (in the index, or along the username index when that costs less), and the page
    /// is read along the `created_at` index, where matches that dense come soon. Many
    /// candidates and a status besides would need every candidate read to count them: that
    /// search goes on in slices.
    pub fn search_indexed(
        c: &Connection,
        q: SearchIndexed,
        beside: &Beside,
    ) -> Result<Option<Indexed>, ActorError> {
        let f = &q.filter;
        let phrase = match search_phrase(f) {
            None => None,
            Some(Err(())) => return Ok(None),
            Some(Ok(phrase)) => match search_backfill(c).map_err(db_error)? {
                SearchIndex::Ready => Some(phrase),
                _ => return Ok(None),
            },
        };
        let status = f.status.map(|s| s.as_str().to_string());
        let (source, source_arg, candidates) =
            search_candidates(c, phrase.as_ref(), status.as_ref(), q.sort_at_most)?;
        let (filter, mut args) = exact_filter(f, status.as_ref());
        let few = candidates <= i64::from(q.sort_at_most);
        let (source, index) = if few {
            let source_arg = source_arg.map(|a| Value::Text(a.clone()));
            args.splice(0..0, source_arg);
            (source, "")
        } else if phrase.is_some() && status.is_some() {
            return Ok(None);
        } else {
            ("1", " INDEXED BY \"created_at\"")
        };
        let total = match (few, &phrase) {
            (true, _) => count(
                c,
                &format!("SELECT COUNT(*) FROM users WHERE {source}{filter}"),
                &args,
            )?,
            (false, Some(phrase)) => count_dense_matches(c, f, phrase, beside)?,
            (false, None) => candidates,
        };
        args.push(Value::Integer(i64::try_from(q.keep).unwrap_or(i64::MAX)));
        let newest = c
            .prepare_cached(&format!(
                "SELECT created_at, id FROM users{index} WHERE {source}{filter} \
                 ORDER BY created_at DESC, id DESC LIMIT ?"
            ))
            .and_then(|mut s| {
                s.query_map(params_from_iter(&args), |r| {
                    let id: String = r.get(1)?;
                    Ok((time(r.get(0)?), UserId::from(parse_oid(&id)?)))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db_error)?;
        Ok(Some(Indexed::Found(IndexedSearch {
            newest,
            total: u64::try_from(total).unwrap_or(0),
        })))
    }

    /// Nothing to keep: the trigram index answers searches ([`KeepSearchMemory`] is MongoDB's).
    pub fn keep_search_memory(_: &Connection, _: KeepSearchMemory) -> Result<bool, ActorError> {
        Ok(false)
    }

    /// One backfill step ([`BackfillSearchIndex`]): the next `rows` rowids up to `upto` are
    /// (re)written into the search index, in the write transaction of the turn.
    pub fn backfill_search_index(
        c: &Connection,
        q: BackfillSearchIndex,
    ) -> Result<Backfilled, ActorError> {
        let SearchIndex::Filling { done, upto } = search_backfill(c).map_err(db_error)? else {
            return Ok(Backfilled::default());
        };
        let end = done.saturating_add(i64::from(q.rows.max(1))).min(upto);
        let step = |c: &Connection| -> rusqlite::Result<usize> {
            // A row written since the index was made is in it already (its trigger): written
            // again, not twice.
            c.execute(
                "DELETE FROM users_search WHERE rowid > ? AND rowid <= ?",
                [done, end],
            )?;
            let indexed = c.execute(
                "INSERT INTO users_search (rowid, username, email) \
                 SELECT rowid, username_lower, lower(email) FROM users \
                 WHERE rowid > ? AND rowid <= ?",
                [done, end],
            )?;
            if end >= upto {
                c.execute("DELETE FROM search_backfill", [])?;
            } else {
                c.execute("UPDATE search_backfill SET done = ?", [end])?;
            }
            Ok(indexed)
        };
        let indexed = in_savepoint(c, |c| step(c).map_err(db_error))?;
        Ok(Backfilled {
            indexed: indexed as u64,
            remaining: end < upto,
            resume: None,
        })
    }

    pub fn find_users_by_ids(c: &Connection, ids: Vec<UserId>) -> Result<Vec<User>, ActorError> {
        let mut users = Vec::with_capacity(ids.len());
        for id in ids {
            users.extend(find_user(c, "id", &id.to_hex()).map_err(db_error)?);
        }
        Ok(users)
    }

    pub fn list_audit(c: &Connection, q: ListAudit) -> Result<Page<AuditRecord>, ActorError> {
        let mut conditions = Vec::new();
        let mut args = Vec::new();
        if let Some(user_id) = q.user_id {
            conditions.push("user_id = ?");
            args.push(Value::Text(user_id));
        }
        if let Some(action) = q.action {
            conditions.push("action = ?");
            args.push(Value::Text(action));
        }
        let from_where = where_clause("audit_log", &conditions);
        page(
            c,
            &from_where,
            "at DESC, seq DESC",
            "id, at, action, user_id, actor_id, email, ip, outcome, details",
            args,
            (q.skip, q.limit),
            audit_from_row,
        )
        .map_err(db_error)
    }
}

/// The one number `sql` counts, with `args`.
fn count<P: rusqlite::ToSql>(c: &Connection, sql: &str, args: &[P]) -> Result<i64, ActorError> {
    c.prepare_cached(sql)
        .and_then(|mut s| s.query_row(params_from_iter(args), |r| r.get(0)))
        .map_err(db_error)
}

/// Where an indexed search's candidates come from: a condition on `users`, its argument, and
/// how many it holds (of the search index's, one more than `sort_at_most` at most: counting them
/// all may cost more).
fn search_candidates<'a>(
    c: &Connection,
    phrase: Option<&'a String>,
    status: Option<&'a String>,
    sort_at_most: u32,
) -> Result<(&'static str, Option<&'a String>, i64), ActorError> {
    Ok(match (phrase, status) {
        (Some(phrase), _) => (
            "rowid IN (SELECT rowid FROM users_search WHERE users_search MATCH ?)",
            Some(phrase),
            count(
                c,
                "SELECT COUNT(*) FROM \
                 (SELECT rowid FROM users_search WHERE users_search MATCH ? LIMIT ?)",
                &[
                    Value::Text(phrase.clone()),
                    Value::Integer(i64::from(sort_at_most) + 1),
                ],
            )?,
        ),
        (None, Some(status)) => (
            "status = ?",
            Some(status),
            count(c, "SELECT COUNT(*) FROM users WHERE status = ?", &[status])?,
        ),
        (None, None) => (
            "1",
            None,
            count::<String>(c, "SELECT COUNT(*) FROM users", &[])?,
        ),
    })
}

/// A search's filter itself, exact whatever the candidates: SQL conditions (each starting with
/// ` AND`) and their arguments.
fn exact_filter(f: &UserFilter, status: Option<&String>) -> (String, Vec<Value>) {
    let mut filter = String::new();
    let mut args = Vec::new();
    for (column, needle) in [("username_lower", &f.username), ("lower(email)", &f.email)] {
        if let Some(needle) = needle {
            filter.push_str(&format!(" AND instr({column}, ?) > 0"));
            args.push(Value::Text(needle.clone()));
        }
    }
    if let Some(status) = status {
        filter.push_str(" AND status = ?");
        args.push(Value::Text(status.clone()));
    }
    (filter, args)
}

/// What the reads of a batch's turn may hand to the store's [`Reader`] to run on another core:
/// while the batch has written nothing yet, the reader's snapshot (the last commit: the batch
/// holds the write lock) holds exactly the rows the batch's connection reads.
pub struct Beside {
    reader: Option<Reader>,
    /// The connection's count of changed rows when the batch began.
    unchanged: u64,
    deadline: Instant,
}

impl Beside {
    /// For the batch beginning on `c` now, to end by `deadline`.
    pub fn new(reader: Option<Reader>, c: &Connection, deadline: Instant) -> Self {
        Self {
            reader,
            unchanged: c.total_changes(),
            deadline,
        }
    }

    /// Nothing beside: every read runs on the database thread alone.
    pub fn none() -> Self {
        Self {
            reader: None,
            unchanged: 0,
            deadline: Instant::now(),
        }
    }

    /// The reader, when it reads the same rows as `c` (nothing written in this batch yet).
    fn reader(&self, c: &Connection) -> Option<&Reader> {
        self.reader
            .as_ref()
            .filter(|_| c.total_changes() == self.unchanged)
    }
}

/// How many users hold a phrase most of them hold. Of several trigrams, counting it in the index
/// (its positions) costs more than reading the username index whole; that reading is split at
/// about the middle username, the upper half counted by the reader on another core.
fn count_dense_matches(
    c: &Connection,
    f: &UserFilter,
    phrase: &str,
    beside: &Beside,
) -> Result<i64, ActorError> {
    // GLOB, which SQLite runs a quarter faster than `instr` over a million names.
    const ALL: &str = "SELECT COUNT(*) FROM users INDEXED BY username_ci_unique \
                       WHERE username_lower GLOB ?1";
    const BELOW: &str = "SELECT COUNT(*) FROM users INDEXED BY username_ci_unique \
                         WHERE username_lower < ?2 AND username_lower GLOB ?1";
    const FROM: &str = "SELECT COUNT(*) FROM users INDEXED BY username_ci_unique \
                        WHERE username_lower >= ?2 AND username_lower GLOB ?1";
    let needle = match (&f.username, &f.email) {
        (Some(needle), None) if needle.chars().count() > 3 => containing_glob(needle),
        _ => {
            return count(
                c,
                "SELECT COUNT(*) FROM users_search WHERE users_search MATCH ?",
                &[phrase],
            )
        }
    };
    let split = match beside.reader(c) {
        Some(reader) => middle_username(c)?.map(|middle| (reader, middle)),
        None => None,
    };
    let Some((reader, middle)) = split else {
        return count(c, ALL, &[needle]);
    };
    let args = [needle, middle];
    let upper = {
        let (args, deadline) = (args.clone(), beside.deadline);
        reader.start(move |r| {
            r.progress_handler(1000, Some(move || Instant::now() >= deadline));
            let counted = count(r, FROM, &args);
            r.progress_handler(1000, None::<fn() -> bool>);
            counted
        })
    };
    let lower = count(c, BELOW, &args)?;
    // A reader gone (or its call panicked): the database thread counts that half too.
    let upper = upper.recv().unwrap_or_else(|_| count(c, FROM, &args))?;
    Ok(lower + upper)
}

/// About the middle username (`None` without users): the middle of a sample of rows spread
/// evenly over the rowids, found by point reads.
fn middle_username(c: &Connection) -> Result<Option<String>, ActorError> {
    const SAMPLE: i64 = 63;
    let last: Option<i64> = c
        .query_row("SELECT MAX(rowid) FROM users", [], |r| r.get(0))
        .map_err(db_error)?;
    let Some(last) = last else {
        return Ok(None);
    };
    let mut sample = Vec::with_capacity(SAMPLE as usize);
    let mut at = c
        .prepare_cached("SELECT username_lower FROM users WHERE rowid >= ? ORDER BY rowid LIMIT 1")
        .map_err(db_error)?;
    for i in 1..=SAMPLE {
        let rowid = last / (SAMPLE + 1) * i;
        if let Some(name) = at
            .query_row([rowid], |r| r.get::<_, String>(0))
            .optional()
            .map_err(db_error)?
        {
            sample.push(name);
        }
    }
    sample.sort_unstable();
    Ok(sample.get(sample.len() / 2).cloned())
}

/// The GLOB pattern of the values that contain `needle`, its wildcards read literally.
fn containing_glob(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('*');
    for ch in needle.chars() {
        match ch {
            '*' | '?' | '[' => pattern.extend(['[', ch, ']']),
            _ => pattern.push(ch),
        }
    }
    pattern.push('*');
    pattern
}

/// Where the search index stands in this file.
enum SearchIndex {
    Missing,
    /// Users up to `rowid` `upto` are still being added, those up to `done` are in.
    Filling {
        done: i64,
        upto: i64,
    },
    Ready,
}

fn search_backfill(c: &Connection) -> rusqlite::Result<SearchIndex> {
    let exists = c
        .prepare_cached(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'users_search'",
        )?
        .exists([])?;
    if !exists {
        return Ok(SearchIndex::Missing);
    }
    Ok(c.prepare_cached("SELECT done, upto FROM search_backfill")?
        .query_row([], |r| {
            Ok(SearchIndex::Filling {
                done: r.get(0)?,
                upto: r.get(1)?,
            })
        })
        .optional()?
        .unwrap_or(SearchIndex::Ready))
}

/// The FTS5 query of the filter's substrings (each a quoted phrase of its column: literal, a
/// `"` doubled), `None` when it has none; `Some(Err)` when one is shorter than a trigram (no
/// index answers it).
fn search_phrase(f: &UserFilter) -> Option<Result<String, ()>> {
    let needles = [("username", &f.username), ("email", &f.email)];
    let given: Vec<_> = needles
        .iter()
        .filter_map(|(column, needle)| Some((column, needle.as_ref()?)))
        .collect();
    if given.is_empty() {
        return None;
    }
    if given.iter().any(|(_, needle)| needle.chars().count() < 3) {
        return Some(Err(()));
    }
    Some(Ok(given
        .iter()
        .map(|(column, needle)| format!("{column} : \"{}\"", needle.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" AND ")))
}

fn where_clause(table: &str, conditions: &[&str]) -> String {
    if conditions.is_empty() {
        format!("FROM {table}")
    } else {
        format!("FROM {table} WHERE {}", conditions.join(" AND "))
    }
}

#[cfg(test)]
mod tests {
    use super::containing_glob;

    #[test]
    fn a_glob_pattern_finds_the_values_containing_its_needle_and_no_other() {
        let c = rusqlite::Connection::open_in_memory().expect("an in-memory database");
        let values = ["a*b", "axb", "a?b", "a[b]", "ab", "x_a*bz", "Ab*"];
        for (needle, expect) in [
            ("a*b", vec!["a*b", "x_a*bz"]),
            ("a?b", vec!["a?b"]),
            ("[b]", vec!["a[b]"]),
            ("b]", vec!["a[b]"]),
            ("ab", vec!["ab"]),
            ("b*", vec!["Ab*"]),
        ] {
            let found: Vec<&str> = values
                .into_iter()
                .filter(|v| {
                    c.query_row("SELECT ?1 GLOB ?2", [*v, &containing_glob(needle)], |r| {
                        r.get::<_, bool>(0)
                    })
                    .expect("a comparison")
                })
                .collect();
            assert_eq!(found, expect, "{needle}");
        }
    }
}
