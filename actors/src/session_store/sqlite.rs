//! Session and token state in the embedded SQLite file `DATA_DIR/sessions.db`: the same rules as
//! the Redis scripts, each operation one transaction. Several processes on one host may share the
//! file (SQLite locks it), so instances sharing a data directory agree at once as with Redis.
//! Expiry that Redis does by itself is a column here: expired rows count as gone and are purged
//! by the periodic sweep.
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{
    AccessCheck, AccessRequest, Admission, AttemptEnd, AttemptOutcome, AttemptRequest,
    AttemptSource, EndAllRequest, EndRequest, IdleCheck, LimitPolicy, OpenRequest, Opening,
    RateRequest, RotateRequest, Rotation, SessionInfo, SessionRules, TokenKind,
};
use crate::domain::{EmailKey, EndReason, SessionId, UserId};
use crate::sqlite::{sqlite_error, Durability, SqliteDb};
use crate::ActorError;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS sessions (
  sid TEXT PRIMARY KEY NOT NULL,
  uid TEXT NOT NULL,
  role TEXT NOT NULL,
  created INTEGER NOT NULL,
  seen INTEGER NOT NULL,
  ajti TEXT NOT NULL,
  rjti TEXT NOT NULL,
  prev_rjti TEXT,
  rotated INTEGER,
  succ TEXT,
  expires INTEGER NOT NULL,
  cv INTEGER NOT NULL DEFAULT 0,
  ip TEXT NOT NULL DEFAULT '',
  ua TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(uid, created);
CREATE INDEX IF NOT EXISTS sessions_seen ON sessions(seen);
CREATE TABLE IF NOT EXISTS ended (
  sid TEXT PRIMARY KEY NOT NULL,
  reason TEXT NOT NULL,
  expires INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS login_failures (
  email TEXT PRIMARY KEY NOT NULL,
  count INTEGER NOT NULL,
  expires INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS login_pending (
  email TEXT NOT NULL,
  attempt TEXT NOT NULL,
  started INTEGER NOT NULL,
  PRIMARY KEY (email, attempt)
);
CREATE TABLE IF NOT EXISTS rate_limits (
  ip TEXT PRIMARY KEY NOT NULL,
  tat REAL NOT NULL,
  expires INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS devices_ended (
  uid TEXT PRIMARY KEY NOT NULL,
  at INTEGER NOT NULL,
  expires INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS credentials (
  uid TEXT PRIMARY KEY NOT NULL,
  version INTEGER NOT NULL,
  expires INTEGER NOT NULL
);
PRAGMA user_version = 1;
"#;

/// Columns added since the first release of this file's tables.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("sessions", "cv", "INTEGER NOT NULL DEFAULT 0"),
    ("sessions", "ip", "TEXT NOT NULL DEFAULT ''"),
    ("sessions", "ua", "TEXT NOT NULL DEFAULT ''"),
];

const NAME: &str = "sqlite_sessions";

fn db_error(e: rusqlite::Error) -> ActorError {
    sqlite_error(NAME, e)
}

fn ms(seconds: u64) -> i64 {
    i64::try_from(seconds.max(1).saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// A write transaction that takes the lock at once, so two processes never deadlock upgrading.
fn write(c: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    c.transaction_with_behavior(TransactionBehavior::Immediate)
}

/// Ends `sid`: its row goes, and why it ended is kept until `until`.
fn end(tx: &Connection, sid: &str, reason: EndReason, until: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM sessions WHERE sid = ?")?
        .execute([sid])?;
    tx.prepare_cached("INSERT OR REPLACE INTO ended (sid, reason, expires) VALUES (?, ?, ?)")?
        .execute(params![sid, reason.as_str(), until])?;
    Ok(())
}

/// Why a session that is not live ended (`expired` when nothing is known).
fn ended_reason(c: &Connection, sid: &str, now: i64) -> rusqlite::Result<EndReason> {
    let reason: Option<String> = c
        .prepare_cached("SELECT reason FROM ended WHERE sid = ? AND expires > ?")?
        .query_row(params![sid, now], |r| r.get(0))
        .optional()?;
    Ok(reason
        .as_deref()
        .and_then(EndReason::parse)
        .unwrap_or(EndReason::Expired))
}

/// A user's current credential version (0 when none was ever raised).
fn credential_version(c: &Connection, uid: &str, now: i64) -> rusqlite::Result<i64> {
    Ok(
        c.prepare_cached("SELECT version FROM credentials WHERE uid = ? AND expires > ?")?
            .query_row(params![uid, now], |r| r.get(0))
            .optional()?
            .unwrap_or(0),
    )
}

/// The lockout's keys: the (email, client) counter and the email's counter in the attempt's
/// pool, named as the Redis store names them (the email's key as a brace-delimited tag, so no
/// email's key can be another's counter).
fn attempt_keys(email: &EmailKey, source: &AttemptSource) -> [String; 2] {
    let keys = super::keys::Keys::new("");
    [
        keys.login_failures_from(email, source),
        keys.login_failures(email, source),
    ]
}

/// Before a session of `uid` opens: drops its sessions past their lifetime, ends those of an
/// older credential version than `current` and those idle past the timeout. Replies with the
/// live ones left, oldest first, and those that expired.
fn sweep_user(
    tx: &Connection,
    uid: &str,
    rules: &SessionRules,
    now: i64,
    current: i64,
) -> rusqlite::Result<(Vec<String>, Vec<SessionId>)> {
    let existing: Vec<(String, i64, i64, i64)> = tx
        .prepare_cached(
            "SELECT sid, seen, expires, cv FROM sessions WHERE uid = ? ORDER BY created, sid",
        )?
        .query_map([uid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let until = now + ms(rules.lifetime_s());
    let (mut live, mut expired) = (Vec::new(), Vec::new());
    for (sid, seen, expires, cv) in existing {
        if expires <= now {
            tx.prepare_cached("DELETE FROM sessions WHERE sid = ?")?
                .execute([&sid])?;
        } else if cv < current {
            end(tx, &sid, EndReason::PasswordChanged, until)?;
        } else if now - seen > rules.idle_ms() {
            end(tx, &sid, EndReason::Expired, until)?;
            expired.extend(SessionId::parse(&sid).ok());
        } else {
            live.push(sid);
        }
    }
    Ok((live, expired))
}

fn insert_session(
    tx: &Connection,
    req: &OpenRequest,
    rules: &SessionRules,
) -> rusqlite::Result<()> {
    let now = req.now_ms;
    tx.prepare_cached(
        "INSERT INTO sessions (sid, uid, role, created, seen, ajti, rjti, expires, cv, ip, ua) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        req.sid.as_str(),
        req.uid.to_hex(),
        req.role.as_str(),
        now,
        now,
        req.access_jti,
        req.refresh_jti,
        now + ms(rules.lifetime_s()),
        req.credential_version,
        req.ip,
        req.user_agent,
    ])?;
    Ok(())
}

/// What a rotation reads of a session: its owner, current and previous refresh `jti`, when it
/// last rotated, the successor pair kept for the grace window, its last activity and
/// credential version.
struct RotationRow {
    owner: String,
    rjti: String,
    prev_rjti: Option<String>,
    rotated: Option<i64>,
    succ: Option<String>,
    seen: i64,
    cv: i64,
}

fn rotation_row(tx: &Connection, sid: &str, now: i64) -> rusqlite::Result<Option<RotationRow>> {
    tx.prepare_cached(
        "SELECT uid, rjti, prev_rjti, rotated, succ, seen, cv FROM sessions \
         WHERE sid = ? AND expires > ?",
    )?
    .query_row(params![sid, now], |r| {
        Ok(RotationRow {
            owner: r.get(0)?,
            rjti: r.get(1)?,
            prev_rjti: r.get(2)?,
            rotated: r.get(3)?,
            succ: r.get(4)?,
            seen: r.get(5)?,
            cv: r.get(6)?,
        })
    })
    .optional()
}

/// Moves the session to the new pair, keeping the one it replaces (and, within a grace
/// window, the new pair itself) for reuse detection.
fn rotate_to(tx: &Connection, req: RotateRequest, rules: &SessionRules) -> rusqlite::Result<()> {
    let now = req.now_ms;
    let succ = if rules.grace_ms() > 0 {
        req.successor
    } else {
        String::new()
    };
    tx.prepare_cached(
        "UPDATE sessions SET prev_rjti = ?, rotated = ?, ajti = ?, rjti = ?, \
         seen = ?, succ = ?, expires = ? WHERE sid = ?",
    )?
    .execute(params![
        req.presented_jti,
        now,
        req.access_jti,
        req.refresh_jti,
        now,
        succ,
        now + ms(rules.lifetime_s()),
        req.sid.as_str(),
    ])?;
    Ok(())
}

#[derive(Clone)]
pub struct SqliteSessions {
    db: SqliteDb,
    rules: SessionRules,
}

impl SqliteSessions {
    /// Opens (or creates) `dir/sessions.db`. Commits survive the process being killed
    /// (`synchronous=NORMAL` in WAL mode).
    pub fn open(dir: &Path) -> Result<Self, String> {
        let db = SqliteDb::open(
            &dir.join("sessions.db"),
            NAME,
            Durability::Normal,
            SCHEMA,
            ADDED_COLUMNS,
        )?;
        Ok(Self {
            db,
            rules: SessionRules::default(),
        })
    }

    /// Sessions are opened, checked, rotated and ended under `rules`.
    pub fn with_rules(mut self, rules: SessionRules) -> Self {
        self.rules = rules;
        self
    }

    async fn run<T, F>(&self, f: F) -> Result<T, ActorError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.db.run(move |c| f(c).map_err(db_error)).await
    }

    pub async fn ping(&self) -> Result<(), ActorError> {
        self.db.clone().ping().await
    }

    pub async fn open_session(&self, req: OpenRequest) -> Result<Opening, ActorError> {
        let rules = self.rules;
        self.run(move |c| {
            let tx = write(c)?;
            let uid = req.uid.to_hex();
            let current = credential_version(&tx, &uid, req.now_ms)?;
            if req.credential_version < current {
                return Ok(Opening::Stale);
            }
            let (live, expired) = sweep_user(&tx, &uid, &rules, req.now_ms, current)?;
            let max = rules.max() as usize;
            let mut evicted = Vec::new();
            if live.len() >= max {
                if rules.policy == LimitPolicy::Reject {
                    tx.commit()?;
                    return Ok(Opening::Rejected);
                }
                let until = req.now_ms + ms(rules.lifetime_s());
                for sid in &live[..=live.len() - max] {
                    end(&tx, sid, EndReason::Evicted, until)?;
                    evicted.extend(SessionId::parse(sid).ok());
                }
            }
            insert_session(&tx, &req, &rules)?;
            tx.commit()?;
            Ok(Opening::Opened { evicted, expired })
        })
        .await
    }

    pub async fn check_access(&self, req: AccessRequest) -> Result<AccessCheck, ActorError> {
        let idle_ms = self.rules.idle_ms();
        self.run(move |c| {
            let (sid, uid, now_ms) = (req.sid.as_str(), req.uid.to_hex(), req.now_ms);
            let row: Option<(String, String, String, i64, i64)> = c
                .prepare_cached(
                    "SELECT uid, ajti, rjti, seen, cv FROM sessions WHERE sid = ? AND expires > ?",
                )?
                .query_row(params![sid, now_ms], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .optional()?;
            let Some((owner, ajti, rjti, seen, cv)) = row else {
                return Ok(AccessCheck::Ended(ended_reason(c, sid, now_ms)?));
            };
            if owner != uid {
                return Ok(AccessCheck::Invalid);
            }
            if cv < credential_version(c, &uid, now_ms)? {
                return Ok(AccessCheck::Ended(EndReason::PasswordChanged));
            }
            if now_ms - seen > idle_ms {
                return Ok(AccessCheck::Ended(EndReason::Expired));
            }
            let current = match req.kind {
                TokenKind::Access => ajti,
                TokenKind::Refresh => rjti,
            };
            if current != req.jti {
                return Ok(AccessCheck::Superseded);
            }
            // Activity is recorded at most once a second, as on Redis; only for an access token.
            if req.kind == TokenKind::Access && now_ms - seen >= 1000 {
                c.prepare_cached("UPDATE sessions SET seen = max(seen, ?) WHERE sid = ?")?
                    .execute(params![now_ms, sid])?;
            }
            Ok(AccessCheck::Live {
                credential_version: cv,
            })
        })
        .await
    }

    pub async fn rotate(&self, req: RotateRequest) -> Result<Rotation, ActorError> {
        let rules = self.rules;
        self.run(move |c| {
            let tx = write(c)?;
            let (sid, now) = (req.sid.as_str(), req.now_ms);
            let Some(row) = rotation_row(&tx, sid, now)? else {
                return Ok(Rotation::Ended(ended_reason(&tx, sid, now)?));
            };
            let uid = req.uid.to_hex();
            if row.owner != uid {
                return Ok(Rotation::Invalid);
            }
            if row.cv < credential_version(&tx, &uid, now)? {
                return Ok(Rotation::Ended(EndReason::PasswordChanged));
            }
            if now - row.seen > rules.idle_ms() {
                return Ok(Rotation::Ended(EndReason::Expired));
            }
            let credential_version = row.cv;
            if row.rjti == req.presented_jti {
                rotate_to(&tx, req, &rules)?;
                tx.commit()?;
                return Ok(Rotation::Rotated { credential_version });
            }
            let grace = rules.grace_ms();
            let in_grace = grace > 0
                && row.prev_rjti.as_deref() == Some(req.presented_jti.as_str())
                && row.rotated.is_some_and(|at| now - at <= grace);
            if let Some(pair) = row.succ.filter(|s| in_grace && !s.is_empty()) {
                return Ok(Rotation::Grace {
                    pair,
                    credential_version,
                });
            }
            end(
                &tx,
                sid,
                EndReason::RefreshReuse,
                now + ms(rules.lifetime_s()),
            )?;
            tx.commit()?;
            Ok(Rotation::Reuse)
        })
        .await
    }

    pub async fn end_session(&self, req: EndRequest) -> Result<bool, ActorError> {
        let ended_ttl_s = self.rules.lifetime_s();
        self.run(move |c| {
            let tx = write(c)?;
            let (now, sid) = (chrono::Utc::now().timestamp_millis(), req.sid.as_str());
            let live: Option<i64> = tx
                .prepare_cached("SELECT 1 FROM sessions WHERE sid = ? AND uid = ? AND expires > ?")?
                .query_row(params![sid, req.uid.to_hex(), now], |r| r.get(0))
                .optional()?;
            if live.is_none() {
                return Ok(false);
            }
            end(&tx, sid, req.reason, now + ms(ended_ttl_s))?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    pub async fn list_sessions(
        &self,
        uid: UserId,
        now_ms: i64,
    ) -> Result<Vec<SessionInfo>, ActorError> {
        let idle_ms = self.rules.idle_ms();
        self.run(move |c| {
            let uid = uid.to_hex();
            let current = credential_version(c, &uid, now_ms)?;
            let rows = c
                .prepare_cached(
                    "SELECT sid, created, seen, ip, ua FROM sessions \
                     WHERE uid = ? AND expires > ? AND seen >= ? AND cv >= ? \
                     ORDER BY created DESC, sid DESC",
                )?
                .query_map(params![uid, now_ms, now_ms - idle_ms, current], |r| {
                    Ok(SessionInfo {
                        sid: r.get(0)?,
                        created_ms: r.get(1)?,
                        seen_ms: r.get(2)?,
                        ip: r.get(3)?,
                        user_agent: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn end_user_sessions(&self, req: EndAllRequest) -> Result<Vec<String>, ActorError> {
        let ended_ttl_s = self.rules.lifetime_s();
        self.run(move |c| {
            let tx = write(c)?;
            let now = chrono::Utc::now().timestamp_millis();
            let (uid, keep) = (
                req.uid.to_hex(),
                req.keep.as_ref().map_or("", |s| s.as_str()),
            );
            if let Some(version) = req.credential_version {
                tx.prepare_cached(
                    "INSERT INTO credentials (uid, version, expires) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(uid) DO UPDATE SET version = max(version, ?2), expires = ?3",
                )?
                .execute(params![uid, version, now + ms(ended_ttl_s)])?;
                tx.prepare_cached("UPDATE sessions SET cv = max(cv, ?) WHERE sid = ?")?
                    .execute(params![version, keep])?;
            }
            let sids: Vec<String> = tx
                .prepare_cached(
                    "SELECT sid FROM sessions WHERE uid = ? AND sid != ? AND expires > ?",
                )?
                .query_map(params![uid, keep, now], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for sid in &sids {
                end(&tx, sid, req.reason, now + ms(ended_ttl_s))?;
            }
            tx.commit()?;
            Ok(sids)
        })
        .await
    }

    pub async fn idle_candidates(
        &self,
        cutoff_ms: i64,
        limit: usize,
    ) -> Result<Vec<(UserId, SessionId)>, ActorError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(String, String)> = self
            .run(move |c| {
                c.prepare_cached(
                    "SELECT uid, sid FROM sessions WHERE seen <= ? ORDER BY seen LIMIT ?",
                )?
                .query_map(params![cutoff_ms, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(uid, sid)| {
                Some((UserId::parse(&uid).ok()?, SessionId::parse(&sid).ok()?))
            })
            .collect())
    }

    pub async fn expire_if_idle(&self, req: IdleCheck) -> Result<bool, ActorError> {
        self.run(move |c| {
            let (sid, now_ms) = (req.sid.as_str(), req.now_ms);
            let tx = write(c)?;
            let row: Option<(i64, i64)> = tx
                .prepare_cached("SELECT seen, expires FROM sessions WHERE sid = ? AND uid = ?")?
                .query_row(params![sid, req.uid.to_hex()], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((seen, expires)) = row else {
                return Ok(false);
            };
            if expires <= now_ms {
                // Outlived its refresh token: gone without a trace, as a Redis key would be.
                tx.prepare_cached("DELETE FROM sessions WHERE sid = ?")?
                    .execute([sid])?;
                tx.commit()?;
                return Ok(false);
            }
            if now_ms - seen <= req.idle_ms {
                return Ok(false);
            }
            end(&tx, sid, EndReason::Expired, now_ms + ms(req.ended_ttl_s))?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    /// The lockout's check-and-count, in one transaction (see the Redis script it mirrors,
    /// `BEGIN_LOGIN_ATTEMPT`).
    pub async fn begin_attempt(&self, req: AttemptRequest) -> Result<Admission, ActorError> {
        self.run(move |c| {
            let tx = write(c)?;
            let now = req.now_ms;
            let keys = attempt_keys(&req.email, &req.source);
            let limits = [req.max_per_address, req.max_per_account];
            let mut slots_held = false;
            for (key, max) in keys.iter().zip(limits) {
                tx.prepare_cached("DELETE FROM login_pending WHERE email = ? AND started <= ?")?
                    .execute(params![key, now - req.stale_ms])?;
                let failures: Option<(i64, i64)> = tx
                    .prepare_cached(
                        "SELECT count, expires FROM login_failures \
                         WHERE email = ? AND expires > ?",
                    )?
                    .query_row(params![key, now], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let (failed, expires) = failures.unwrap_or((0, now));
                if max > 0 && failed >= i64::from(max) {
                    let seconds = u64::try_from((expires - now + 999) / 1000).unwrap_or(1);
                    tx.commit()?;
                    return Ok(Admission::Locked(seconds.max(1)));
                }
                let pending: i64 = tx
                    .prepare_cached("SELECT COUNT(*) FROM login_pending WHERE email = ?")?
                    .query_row([key], |r| r.get(0))?;
                slots_held |= max > 0 && failed + pending >= i64::from(max);
            }
            if slots_held {
                tx.commit()?;
                return Ok(Admission::Wait);
            }
            for key in &keys {
                tx.prepare_cached(
                    "INSERT INTO login_pending (email, attempt, started) VALUES (?, ?, ?)",
                )?
                .execute(params![key, req.attempt, now])?;
            }
            tx.commit()?;
            Ok(Admission::Admitted)
        })
        .await
    }

    /// Ends an admitted attempt (see the Redis script `END_LOGIN_ATTEMPT`).
    pub async fn end_attempt(&self, req: AttemptEnd) -> Result<u64, ActorError> {
        self.run(move |c| {
            let now = chrono::Utc::now().timestamp_millis();
            let tx = write(c)?;
            let [from_address, account] = attempt_keys(&req.email, &req.source);
            for key in [&from_address, &account] {
                tx.prepare_cached("DELETE FROM login_pending WHERE email = ? AND attempt = ?")?
                    .execute(params![key, req.attempt])?;
            }
            let mut count = 0;
            match req.outcome {
                AttemptOutcome::Failed => {
                    for key in [&account, &from_address] {
                        count = tx
                            .prepare_cached(
                                "INSERT INTO login_failures (email, count, expires) \
                                 VALUES (?1, 1, ?2 + ?3) \
                                 ON CONFLICT(email) DO UPDATE SET \
                                   count = CASE WHEN expires > ?2 THEN count + 1 ELSE 1 END, \
                                   expires = CASE WHEN expires > ?2 THEN expires ELSE ?2 + ?3 END \
                                 RETURNING count",
                            )?
                            .query_row(params![key, now, ms(req.window_s)], |r| r.get(0))?;
                    }
                }
                AttemptOutcome::Succeeded => {
                    tx.prepare_cached("DELETE FROM login_failures WHERE email = ?")?
                        .execute([&from_address])?;
                }
                AttemptOutcome::Abandoned => {}
            }
            tx.commit()?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
        .await
    }

    /// One request against `ip`'s rate limit (the Redis script `TAKE_RATE_TOKEN`'s GCRA), in
    /// one transaction: 0 when allowed, else the milliseconds to wait.
    pub async fn take_rate_token(&self, req: RateRequest) -> Result<u64, ActorError> {
        self.run(move |c| {
            let (ip, now_ms, interval_ms) = (&req.ip, req.now_ms, req.interval_ms);
            let tx = write(c)?;
            let now = now_ms as f64;
            let stored: Option<f64> = tx
                .prepare_cached("SELECT tat FROM rate_limits WHERE ip = ? AND expires > ?")?
                .query_row(params![ip.counted(), now_ms], |r| r.get(0))
                .optional()?;
            let next_tat = stored.unwrap_or(now).max(now) + interval_ms;
            let allowed_at = next_tat - f64::from(req.burst.max(1)) * interval_ms;
            if allowed_at > now {
                return Ok((allowed_at - now).ceil() as u64);
            }
            tx.prepare_cached(
                "INSERT OR REPLACE INTO rate_limits (ip, tat, expires) VALUES (?, ?, ?)",
            )?
            .execute(params![ip.counted(), next_tat, next_tat.ceil() as i64])?;
            tx.commit()?;
            Ok(0)
        })
        .await
    }

    /// Ends every device token of `uid` issued until now (see the Redis store's).
    pub async fn end_devices(&self, uid: UserId, now_ms: i64) -> Result<(), ActorError> {
        let ttl_s = self.rules.devices_ended_s();
        self.run(move |c| {
            let tx = write(c)?;
            tx.execute(
                "INSERT INTO devices_ended (uid, at, expires) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(uid) DO UPDATE SET at = ?2, expires = ?3",
                params![uid.to_hex(), now_ms, now_ms + ms(ttl_s)],
            )?;
            tx.commit()
        })
        .await
    }

    /// Deletes every failure counter of `email` (an administrator lifts its lockout); replies
    /// with how many there were.
    pub async fn lift_lockout(&self, email: EmailKey) -> Result<u64, ActorError> {
        let prefix = super::keys::Keys::new("").login_failures_prefix(&email);
        self.run(move |c| {
            let tx = write(c)?;
            let n = tx
                .prepare_cached(
                    "DELETE FROM login_failures WHERE substr(email, 1, length(?1)) = ?1",
                )?
                .execute([&prefix])?;
            tx.commit()?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    /// When `uid`'s device tokens were last ended, if within their lifetime.
    pub async fn devices_ended_at(
        &self,
        uid: UserId,
        now_ms: i64,
    ) -> Result<Option<i64>, ActorError> {
        self.run(move |c| {
            c.prepare_cached("SELECT at FROM devices_ended WHERE uid = ? AND expires > ?")?
                .query_row(params![uid.to_hex(), now_ms], |r| r.get(0))
                .optional()
        })
        .await
    }

    /// Drops what has expired: what Redis would have dropped by itself.
    pub async fn housekeeping(&self, now_ms: i64) -> Result<(), ActorError> {
        self.run(move |c| {
            let tx = write(c)?;
            tx.execute("DELETE FROM sessions WHERE expires <= ?", [now_ms])?;
            tx.execute("DELETE FROM ended WHERE expires <= ?", [now_ms])?;
            tx.execute("DELETE FROM login_failures WHERE expires <= ?", [now_ms])?;
            tx.execute("DELETE FROM credentials WHERE expires <= ?", [now_ms])?;
            tx.execute("DELETE FROM devices_ended WHERE expires <= ?", [now_ms])?;
            tx.execute("DELETE FROM rate_limits WHERE expires <= ?", [now_ms])?;
            // Attempts of a process that died mid-check; `begin_attempt` drops them per email
            // too, this catches emails nobody tries again.
            tx.execute(
                "DELETE FROM login_pending WHERE started <= ?",
                [now_ms - 3_600_000],
            )?;
            tx.commit()
        })
        .await
    }
}
