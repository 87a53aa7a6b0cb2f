//! The embedded backend's one connection per database file: SQLite (bundled, so nothing needs
//! installing) in WAL mode. The connection lives on its own thread, which runs the calls sent to
//! it one at a time in arrival order, never on an actor's or an HTTP worker's thread; a burst of
//! calls waits in its queue instead of parking a thread each.
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::ActorError;

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: a commit is on disk before it is acknowledged (survives power loss).
    Full,
    /// `synchronous=NORMAL` in WAL mode: a commit survives the process being killed; the last
    /// moments before a power loss may be lost.
    Normal,
}

type Call = Box<dyn FnOnce(&mut Connection) + Send>;

/// One SQLite database file shared by clones; calls are serialised on its one connection, on
/// its own thread (which ends when the last clone is dropped).
#[derive(Clone)]
pub struct SqliteDb {
    calls: mpsc::Sender<Call>,
    path: Arc<PathBuf>,
    /// The name this database reports in errors and `/health`.
    name: &'static str,
}

impl SqliteDb {
    /// Opens (creating if needed) `path` and its directory; `schema` is run once (it must be
    /// idempotent: `CREATE … IF NOT EXISTS`), then each column of `added` (`(table, column,
    /// definition)`: columns added since a table was first created) is added where missing.
    pub fn open(
        path: &Path,
        name: &'static str,
        durability: Durability,
        schema: &str,
        added: &[(&str, &str, &str)],
    ) -> Result<Self, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("DATA_DIR {}: cannot create it: {e}", dir.display()))?;
        }
        owner_only(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| format!("{}: cannot open: {e}", path.display()))?;
        let synchronous = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.busy_timeout(Duration::from_secs(5))
            .and_then(|()| {
                conn.execute_batch(&format!(
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; \
                     PRAGMA foreign_keys=ON;"
                ))
            })
            .and_then(|()| conn.execute_batch(schema))
            .and_then(|()| add_missing_columns(&conn, added))
            .map_err(|e| format!("{}: cannot prepare the database: {e}", path.display()))?;
        let (calls, queue) = mpsc::channel::<Call>();
        std::thread::Builder::new()
            .name(format!("{name}-db"))
            .spawn(move || serve(conn, queue))
            .map_err(|e| format!("{}: cannot start its thread: {e}", path.display()))?;
        Ok(Self {
            calls,
            path: Arc::new(path.to_path_buf()),
            name,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on the database's thread, after the calls sent before it.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ActorError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, ActorError> + Send + 'static,
    {
        let name = self.name;
        let gone = || ActorError::unavailable(name, "its thread has stopped");
        let (reply, answer) = tokio::sync::oneshot::channel();
        let call: Call = Box::new(move |conn| {
            // The caller may have stopped waiting; nothing to do about that here.
            let _ = reply.send(f(conn));
        });
        self.calls.send(call).map_err(|_| gone())?;
        // A call that panicked dropped its reply: a 503 for this request, as a panicking actor
        // handler gives, and the thread serves the next call.
        answer
            .await
            .map_err(|_| ActorError::unavailable(name, "the call panicked"))?
    }

    /// `SELECT 1`: the probe.
    pub async fn ping(self) -> Result<(), ActorError> {
        let name = self.name;
        self.run(move |c| {
            c.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(|e| sqlite_error(name, e))
        })
        .await
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A second connection to the file, read-only, on a thread of its own: for the half of a
    /// long read that runs on another core while the database thread reads the other half.
    pub fn reader(&self) -> Result<Reader, String> {
        let path = self.path();
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .and_then(|conn| conn.busy_timeout(Duration::from_secs(5)).map(|()| conn))
            .map_err(|e| format!("{}: cannot open it to read: {e}", path.display()))?;
        let (calls, queue) = mpsc::channel::<Call>();
        std::thread::Builder::new()
            .name(format!("{}-reader", self.name))
            .spawn(move || serve(conn, queue))
            .map_err(|e| format!("{}: cannot start its reader: {e}", path.display()))?;
        Ok(Reader { calls })
    }
}

/// A read-only connection on its own thread ([`SqliteDb::reader`]), driven from the database
/// thread: [`Reader::start`] hands it a read and returns at once; the database thread reads its
/// own share meanwhile, then waits for the reader's.
#[derive(Clone)]
pub struct Reader {
    calls: mpsc::Sender<Call>,
}

impl Reader {
    /// Starts `f` on the reader's thread; its result comes on the returned channel (which
    /// closes without one if the reader is gone or `f` panicked).
    pub fn start<T, F>(&self, f: F) -> mpsc::Receiver<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> T + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        let call: Call = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        // A reader gone drops the call, and with it `reply`: the caller reads its half itself.
        let _ = self.calls.send(call);
        answer
    }
}

/// Opens `path` for reading only, leaving every file as it is (for `migrate --dry-run`). A
/// database with a write-ahead log beside it (a service running, or one that stopped without
/// closing) is read with its log, through the log's existing files; one without is read as an
/// immutable file, so no lock or log file is created either.
pub fn open_read_only(path: &Path) -> Result<Connection, String> {
    let mut log = path.as_os_str().to_owned();
    log.push("-wal");
    let mode = if Path::new(&log).exists() {
        "mode=ro"
    } else {
        "immutable=1"
    };
    // A URI names the file: `%`, `?` and `#` in its path are escaped.
    let escaped = path
        .display()
        .to_string()
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23");
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(format!("file:{escaped}?{mode}"), flags)
        .map_err(|e| format!("{}: cannot open it to read: {e}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(conn)
}

/// Whether `table` has `column` (false when the table is missing too).
pub fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
        .exists([table, column])
}

/// Adds each `(table, column, definition)` the table lacks (a database an older version made).
fn add_missing_columns(conn: &Connection, added: &[(&str, &str, &str)]) -> rusqlite::Result<()> {
    for (table, column, definition) in added {
        if !has_column(conn, table, column)? {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    Ok(())
}

/// The database thread: runs each call in turn until every sender is gone. A call that panics
/// is dropped (its caller gets a 503); an open transaction
/// in it is rolled back when dropped, so the connection stays consistent and serves the next.
fn serve(mut conn: Connection, queue: mpsc::Receiver<Call>) {
    for call in queue {
        let conn = &mut conn;
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || call(conn)));
    }
}

/// A busy or unreadable database file is "unavailable" (503); anything else is internal.
pub fn sqlite_error(name: &'static str, e: rusqlite::Error) -> ActorError {
    if e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) {
        // The operation's time budget ran out (the DbQueueActor's progress handler).
        return ActorError::Timeout("database");
    }
    let unavailable = matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::ReadOnly
        )
    );
    if unavailable {
        ActorError::unavailable(name, e)
    } else {
        ActorError::internal(name, e)
    }
}

/// The column a UNIQUE constraint failure names (`UNIQUE constraint failed: users.email`).
pub fn unique_violation(e: &rusqlite::Error) -> Option<&str> {
    match e {
        rusqlite::Error::SqliteFailure(f, Some(message))
            if f.code == ErrorCode::ConstraintViolation =>
        {
            message
                .strip_prefix("UNIQUE constraint failed: ")
                .map(|cols| cols.split(',').next().unwrap_or(cols).trim())
        }
        _ => None,
    }
}

/// The database file (password hashes, sessions) readable by its owner only, as the JWT secret
/// is: created so, or narrowed if an earlier version made it wider. SQLite gives its `-wal` and
/// `-shm` files the database file's mode.
fn owner_only(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let cannot = |e: std::io::Error| format!("{}: cannot create it: {e}", path.display());
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(cannot)
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map(|_| ())
            .map_err(cannot),
        Err(e) => Err(cannot(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_call_is_a_503_and_the_next_call_is_served() {
        let dir = std::env::temp_dir().join(format!("sqlite-{}", uuid::Uuid::new_v4().simple()));
        let db = SqliteDb::open(
            &dir.join("t.db"),
            "sqlite",
            Durability::Normal,
            "CREATE TABLE IF NOT EXISTS t (x INTEGER);",
            &[("t", "y", "INTEGER NOT NULL DEFAULT 0")],
        )
        .map_err(|e| e.to_string());
        let Ok(db) = db else {
            panic!("opens: {db:?}", db = db.err())
        };

        let panicked = db
            .run(|_| -> Result<(), ActorError> { panic!("a bug") })
            .await;
        let next = db.clone().ping().await;

        assert!(matches!(panicked, Err(ActorError::Unavailable { .. })));
        assert!(next.is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }
}
