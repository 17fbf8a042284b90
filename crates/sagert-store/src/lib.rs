//! The crash-safe run store of sagert.
//!
//! Every run directory holds one SQLite database, [`DB_FILE`], with:
//!
//! - **calls**: every model call that succeeded, keyed by the content hash of its
//!   request ([`cache_key`]), with the request and response as JSON text, token
//!   counts, cost, latency, attempts and a hit counter. This is the cache that makes
//!   a rerun free and the ledger that `sagert status` and the report read.
//! - **failures**: every call that failed for good, with its stable label
//!   ([`sagert_backend::FailureKind::label`]), message, attempts and time taken.
//! - **items**: the state of each pipeline work item, keyed by `(stage, item_id)`,
//!   so that an interrupted run resumes where it stopped.
//! - **meta**: run metadata as key/value strings (configuration hash, stop reason).
//!
//! Crash safety: the database is in WAL mode and every write is one transaction (a
//! single statement, or an explicit transaction for [`Store::put_items`] and for
//! migrations), so a SIGKILL at any moment leaves every row either complete or
//! absent. The schema is versioned with `PRAGMA user_version`; see [`SCHEMA_VERSION`].
//!
//! A [`Store`] is `Send + Sync` and meant to be shared through an `Arc` by many
//! tasks. It holds one connection behind a mutex; values are serialised to JSON
//! before the lock is taken and parsed after it is released, so each critical
//! section is one short prepared statement. Calls block the calling thread for that
//! statement (microseconds to a few milliseconds; no fsync per commit in WAL mode).
//!
//! Nothing secret reaches the store: the HTTP backend (`sagert-openai`) keeps API
//! keys and headers to itself, and no column holds either. The cached, metered
//! client that reads and writes calls lives in `sagert-engine`; the request and
//! response types come from [`sagert_backend`].

mod calls;
mod error;
mod items;
mod key;
mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

pub use calls::{CallRecord, FailureRecord, RoleStats, StoredCall};
pub use error::StoreError;
pub use items::{ItemState, UnknownItemState, WorkItem};
pub use key::{cache_key, CallKey};
pub use schema::SCHEMA_VERSION;

/// The database file's name inside a run directory.
pub const DB_FILE: &str = "sagert.sqlite";

/// The run store of one run directory. See the [crate docs](crate).
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    db: PathBuf,
    run_dir: PathBuf,
}

impl Store {
    /// Open the store of `run_dir`, creating the directory and the database if
    /// needed, and migrate it to [`SCHEMA_VERSION`].
    pub fn open(run_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(run_dir)
            .map_err(|source| StoreError::Io { path: run_dir.to_path_buf(), source })?;
        Store::open_with(run_dir, OpenFlags::default())
    }

    /// Open the store of an existing run directory, for `sagert status` and the
    /// like. Fails with [`StoreError::NotARunDir`] when there is no database there;
    /// never creates one. An older schema is migrated.
    pub fn open_existing(run_dir: &Path) -> Result<Store, StoreError> {
        if !run_dir.join(DB_FILE).is_file() {
            return Err(StoreError::NotARunDir { path: run_dir.to_path_buf() });
        }
        let flags = OpenFlags::default() - OpenFlags::SQLITE_OPEN_CREATE;
        Store::open_with(run_dir, flags)
    }

    fn open_with(run_dir: &Path, flags: OpenFlags) -> Result<Store, StoreError> {
        let db = run_dir.join(DB_FILE);
        let mut conn = Connection::open_with_flags(&db, flags)
            .map_err(|source| StoreError::Open { path: db.clone(), source: Box::new(source) })?;
        schema::configure(&conn, &db)?;
        schema::migrate(&mut conn, &db)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(Store { conn: Mutex::new(conn), db, run_dir: run_dir.to_path_buf() })
    }

    /// The database file, `RUN_DIR/sagert.sqlite`.
    pub fn path(&self) -> &Path {
        &self.db
    }

    /// The run directory the store lives in.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Set a metadata value, replacing any old one.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.prepare_cached(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .and_then(|mut s| s.execute((key, value)))
        .map(drop)
        .map_err(self.sql_err("set metadata", Some(key)))
    }

    /// A metadata value, if set.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let conn = self.lock();
        conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
            .map_err(self.sql_err("read metadata", Some(key)))
    }

    /// Every metadata entry, by key.
    pub fn all_meta(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let conn = self.lock();
        conn.prepare_cached("SELECT key, value FROM meta")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(self.sql_err("read metadata", None))
    }

    /// Run SQLite's `PRAGMA integrity_check`: `"ok"`, or its findings one a line.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        let conn = self.lock();
        let lines: Vec<String> = conn
            .prepare("PRAGMA integrity_check")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(self.sql_err("check integrity", None))?;
        Ok(lines.join("\n"))
    }

    /// The connection. A panic in another thread while it held the lock cannot have
    /// left a half-done write behind (an open `Transaction` rolls back on unwind), so
    /// a poisoned lock is taken over rather than propagated.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A mapper from SQLite's error to [`StoreError::Sqlite`] with context.
    fn sql_err<'a>(
        &'a self,
        op: &'static str,
        subject: Option<&'a str>,
    ) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
        move |source| StoreError::Sqlite {
            path: self.db.clone(),
            op,
            subject: subject.map(str::to_string),
            source: Box::new(source),
        }
    }

    /// A [`StoreError::Corrupt`] for this store.
    fn corrupt(&self, what: String, reason: impl ToString) -> StoreError {
        StoreError::Corrupt { path: self.db.clone(), what, reason: reason.to_string() }
    }
}

/// Milliseconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// SQLite integers are signed; counts beyond `i64::MAX` saturate.
fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored integer back to a count; a negative one (never written) reads as 0.
fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Store>();
    }

    #[test]
    fn integer_conversions_saturate() {
        assert_eq!(to_i64(u64::MAX), i64::MAX);
        assert_eq!(to_i64(7), 7);
        assert_eq!(to_u64(-1), 0);
        assert_eq!(to_u64(7), 7);
        assert!(now_unix_ms() > 1_600_000_000_000);
    }
}
