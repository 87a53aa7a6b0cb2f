//! Session and token state in the embedded SQLite file `DATA_DIR/sessions.db`: the same rules as
//! the Redis scripts, each operation one transaction. Several processes on one host may share the
//! file (SQLite locks it), so instances sharing a data directory agree at once as with Redis.
//! Expiry that Redis does by itself is a column here: expired rows count as gone and are purged
//! by the periodic sweep.
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{
    AccessCheck, Admission, AttemptOutcome, AttemptRequest, AttemptSource, LimitPolicy,
    OpenRequest, Opening, RotateRequest, Rotation, SessionInfo, TokenKind,
};
use crate::domain::{ClientIp, EmailKey, EndReason, SessionId, UserId};
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

#[derive(Clone)]
pub struct SqliteSessions {
    db: SqliteDb,
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
        Ok(Self { db })
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
        self.run(move |c| {
            let tx = write(c)?;
            let now = req.now_ms;
            let ended_until = now + ms(req.lifetime_s);
            let uid = req.uid.to_hex();
            let current = credential_version(&tx, &uid, now)?;
            if req.credential_version < current {
                return Ok(Opening::Stale);
            }
            let existing: Vec<(String, i64, i64, i64)> = tx
                .prepare_cached(
                    "SELECT sid, seen, expires, cv FROM sessions WHERE uid = ? \
                     ORDER BY created, sid",
                )?
                .query_map([&uid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let (mut live, mut expired, mut evicted) = (Vec::new(), Vec::new(), Vec::new());
            for (sid, seen, expires, cv) in existing {
                if expires <= now {
                    tx.prepare_cached("DELETE FROM sessions WHERE sid = ?")?
                        .execute([&sid])?;
                } else if cv < current {
                    end(&tx, &sid, EndReason::PasswordChanged, ended_until)?;
                } else if now - seen > req.idle_ms {
                    end(&tx, &sid, EndReason::Expired, ended_until)?;
                    expired.extend(SessionId::parse(&sid).ok());
                } else {
                    live.push(sid);
                }
            }
            let max = req.max.max(1) as usize;
            if live.len() >= max {
                if req.policy == LimitPolicy::Reject {
                    tx.commit()?;
                    return Ok(Opening::Rejected);
                }
                for sid in &live[..=live.len() - max] {
                    end(&tx, sid, EndReason::Evicted, ended_until)?;
                    evicted.extend(SessionId::parse(sid).ok());
                }
            }
            tx.prepare_cached(
                "INSERT INTO sessions \
                 (sid, uid, role, created, seen, ajti, rjti, expires, cv, ip, ua) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                req.sid.as_str(),
                uid,
                req.role.as_str(),
                now,
                now,
                req.access_jti,
                req.refresh_jti,
                now + ms(req.lifetime_s),
                req.credential_version,
                req.ip,
                req.user_agent,
            ])?;
            tx.commit()?;
            Ok(Opening::Opened { evicted, expired })
        })
        .await
    }

    pub async fn check_access(
        &self,
        sid: SessionId,
        uid: UserId,
        kind: TokenKind,
        jti: String,
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<AccessCheck, ActorError> {
        self.run(move |c| {
            let sid = sid.as_str();
            let uid = uid.to_hex();
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
            let current = match kind {
                TokenKind::Access => ajti,
                TokenKind::Refresh => rjti,
            };
            if current != jti {
                return Ok(AccessCheck::Superseded);
            }
            // Activity is recorded at most once a second, as on Redis; only for an access token.
            if kind == TokenKind::Access && now_ms - seen >= 1000 {
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
        self.run(move |c| {
            let tx = write(c)?;
            let sid = req.sid.as_str();
            let now = req.now_ms;
            type Row = (
                String,
                String,
                Option<String>,
                Option<i64>,
                Option<String>,
                i64,
                i64,
            );
            let row: Option<Row> = tx
                .prepare_cached(
                    "SELECT uid, rjti, prev_rjti, rotated, succ, seen, cv FROM sessions \
                     WHERE sid = ? AND expires > ?",
                )?
                .query_row(params![sid, now], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })
                .optional()?;
            let Some((owner, rjti, prev_rjti, rotated, succ, seen, cv)) = row else {
                return Ok(Rotation::Ended(ended_reason(&tx, sid, now)?));
            };
            let uid = req.uid.to_hex();
            if owner != uid {
                return Ok(Rotation::Invalid);
            }
            if cv < credential_version(&tx, &uid, now)? {
                return Ok(Rotation::Ended(EndReason::PasswordChanged));
            }
            if now - seen > req.idle_ms {
                return Ok(Rotation::Ended(EndReason::Expired));
            }
            if rjti == req.presented_jti {
                let succ = if req.grace_ms > 0 {
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
                    now + ms(req.lifetime_s),
                    sid,
                ])?;
                tx.commit()?;
                return Ok(Rotation::Rotated {
                    credential_version: cv,
                });
            }
            let in_grace = req.grace_ms > 0
                && prev_rjti.as_deref() == Some(req.presented_jti.as_str())
                && rotated.is_some_and(|at| now - at <= req.grace_ms);
            if let Some(pair) = succ.filter(|s| in_grace && !s.is_empty()) {
                return Ok(Rotation::Grace {
                    pair,
                    credential_version: cv,
                });
            }
            end(&tx, sid, EndReason::RefreshReuse, now + ms(req.lifetime_s))?;
            tx.commit()?;
            Ok(Rotation::Reuse)
        })
        .await
    }

    pub async fn end_session(
        &self,
        uid: UserId,
        sid: SessionId,
        reason: EndReason,
        ended_ttl_s: u64,
    ) -> Result<bool, ActorError> {
        self.run(move |c| {
            let tx = write(c)?;
            let now = chrono::Utc::now().timestamp_millis();
            let live: Option<i64> = tx
                .prepare_cached("SELECT 1 FROM sessions WHERE sid = ? AND uid = ? AND expires > ?")?
                .query_row(params![sid.as_str(), uid.to_hex(), now], |r| r.get(0))
                .optional()?;
            if live.is_none() {
                return Ok(false);
            }
            end(&tx, sid.as_str(), reason, now + ms(ended_ttl_s))?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    pub async fn list_sessions(
        &self,
        uid: UserId,
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<Vec<SessionInfo>, ActorError> {
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

    pub async fn end_user_sessions(
        &self,
        uid: UserId,
        reason: EndReason,
        ended_ttl_s: u64,
        keep: Option<SessionId>,
        credential_version: Option<i64>,
    ) -> Result<Vec<String>, ActorError> {
        self.run(move |c| {
            let tx = write(c)?;
            let now = chrono::Utc::now().timestamp_millis();
            let keep = keep.as_ref().map_or("", |s| s.as_str());
            if let Some(version) = credential_version {
                tx.prepare_cached(
                    "INSERT INTO credentials (uid, version, expires) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(uid) DO UPDATE SET version = max(version, ?2), expires = ?3",
                )?
                .execute(params![uid.to_hex(), version, now + ms(ended_ttl_s)])?;
                tx.prepare_cached("UPDATE sessions SET cv = max(cv, ?) WHERE sid = ?")?
                    .execute(params![version, keep])?;
            }
            let sids: Vec<String> = tx
                .prepare_cached(
                    "SELECT sid FROM sessions WHERE uid = ? AND sid != ? AND expires > ?",
                )?
                .query_map(params![uid.to_hex(), keep, now], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for sid in &sids {
                end(&tx, sid, reason, now + ms(ended_ttl_s))?;
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

    pub async fn expire_if_idle(
        &self,
        uid: UserId,
        sid: SessionId,
        now_ms: i64,
        idle_ms: i64,
        ended_ttl_s: u64,
    ) -> Result<bool, ActorError> {
        self.run(move |c| {
            let tx = write(c)?;
            let row: Option<(i64, i64)> = tx
                .prepare_cached("SELECT seen, expires FROM sessions WHERE sid = ? AND uid = ?")?
                .query_row(params![sid.as_str(), uid.to_hex()], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((seen, expires)) = row else {
                return Ok(false);
            };
            if expires <= now_ms {
                // Outlived its refresh token: gone without a trace, as a Redis key would be.
                tx.prepare_cached("DELETE FROM sessions WHERE sid = ?")?
                    .execute([sid.as_str()])?;
                tx.commit()?;
                return Ok(false);
            }
            if now_ms - seen <= idle_ms {
                return Ok(false);
            }
            end(
                &tx,
                sid.as_str(),
                EndReason::Expired,
                now_ms + ms(ended_ttl_s),
            )?;
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
    pub async fn end_attempt(
        &self,
        email: EmailKey,
        source: AttemptSource,
        attempt: String,
        outcome: AttemptOutcome,
        window_s: u64,
    ) -> Result<u64, ActorError> {
        self.run(move |c| {
            let now = chrono::Utc::now().timestamp_millis();
            let tx = write(c)?;
            let [from_address, account] = attempt_keys(&email, &source);
            for key in [&from_address, &account] {
                tx.prepare_cached("DELETE FROM login_pending WHERE email = ? AND attempt = ?")?
                    .execute(params![key, attempt])?;
            }
            let mut count = 0;
            match outcome {
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
                            .query_row(params![key, now, ms(window_s)], |r| r.get(0))?;
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
    pub async fn take_rate_token(
        &self,
        ip: ClientIp,
        now_ms: i64,
        interval_ms: f64,
        burst: u32,
    ) -> Result<u64, ActorError> {
        self.run(move |c| {
            let tx = write(c)?;
            let now = now_ms as f64;
            let stored: Option<f64> = tx
                .prepare_cached("SELECT tat FROM rate_limits WHERE ip = ? AND expires > ?")?
                .query_row(params![ip.counted(), now_ms], |r| r.get(0))
                .optional()?;
            let next_tat = stored.unwrap_or(now).max(now) + interval_ms;
            let allowed_at = next_tat - f64::from(burst.max(1)) * interval_ms;
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

    /// Drops what has expired: what Redis would have dropped by itself.
    /// Ends every device token of `uid` issued until now (see the Redis store's).
    pub async fn end_devices(
        &self,
        uid: UserId,
        now_ms: i64,
        ttl_s: u64,
    ) -> Result<(), ActorError> {
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
