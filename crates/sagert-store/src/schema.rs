//! Connection set-up and schema migrations.
//!
//! The schema version lives in SQLite's `PRAGMA user_version`. [`MIGRATIONS`]\[i\]
//! takes a database from version `i` to `i + 1`; opening a store applies every
//! migration it lacks in one `IMMEDIATE` transaction, together with the new
//! `user_version`, so that a crash during a migration leaves the old version intact.
//! Migrations are append-only: never edit one that has shipped.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// How long a statement waits for another connection's write lock before failing
/// with `database is locked`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema, one migration per version step.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 0 -> 1: calls, failures, work items, run metadata.
    r#"
    -- One row per distinct model call, keyed by content hash. The request and the
    -- response are JSON text; no column holds HTTP headers or credentials.
    CREATE TABLE calls (
        key                TEXT    PRIMARY KEY NOT NULL,
        role               TEXT    NOT NULL,
        model              TEXT    NOT NULL,
        endpoint           TEXT    NOT NULL,
        request_json       TEXT    NOT NULL,
        response_json      TEXT    NOT NULL,
        prompt_tokens      INTEGER NOT NULL CHECK (prompt_tokens >= 0),
        completion_tokens  INTEGER NOT NULL CHECK (completion_tokens >= 0),
        cost_usd           REAL    NOT NULL,
        latency_ms         INTEGER NOT NULL,
        attempts           INTEGER NOT NULL,
        hits               INTEGER NOT NULL DEFAULT 0,
        created_at_unix_ms INTEGER NOT NULL
    );
    CREATE INDEX calls_by_role ON calls (role);

    -- One row per call that failed for good (after retries and failover).
    CREATE TABLE failures (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        role        TEXT    NOT NULL,
        call_key    TEXT,
        model       TEXT    NOT NULL,
        label       TEXT    NOT NULL,
        message     TEXT    NOT NULL,
        attempts    INTEGER NOT NULL,
        elapsed_ms  INTEGER NOT NULL,
        item        TEXT,
        at_unix_ms  INTEGER NOT NULL
    );
    CREATE INDEX failures_by_role_label ON failures (role, label);

    -- Pipeline work items, so that a run can resume where it stopped.
    CREATE TABLE items (
        stage              TEXT    NOT NULL,
        item_id            TEXT    NOT NULL,
        state              TEXT    NOT NULL
            CHECK (state IN ('pending', 'running', 'done', 'failed', 'dropped')),
        payload_json       TEXT    NOT NULL,
        attempts           INTEGER NOT NULL,
        error              TEXT,
        updated_at_unix_ms INTEGER NOT NULL,
        PRIMARY KEY (stage, item_id)
    );
    CREATE INDEX items_by_stage_state ON items (stage, state);

    -- Run metadata: configuration hash, stop reason, and the like.
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    );
    "#,
];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Set the connection's pragmas: WAL, `synchronous = NORMAL`, busy timeout, foreign keys.
///
/// With WAL and `NORMAL`, a commit is durable against a process crash (SIGKILL) the
/// moment it returns; against power loss the last few commits may be lost, but the
/// database is never corrupt.
pub(crate) fn configure(conn: &Connection, db: &Path) -> Result<(), StoreError> {
    let open_err = |source| StoreError::Open { path: db.to_path_buf(), source: Box::new(source) };
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    // `journal_mode` answers with the mode now in force; a file system without
    // shared memory support keeps the old one, which is still crash-safe.
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(open_err)?;
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;").map_err(open_err)?;
    Ok(())
}

/// Bring the database to [`SCHEMA_VERSION`], in one transaction.
pub(crate) fn migrate(conn: &mut Connection, db: &Path) -> Result<(), StoreError> {
    let sql_err = |source| StoreError::Sqlite {
        path: db.to_path_buf(),
        op: "migrate the schema",
        subject: Some(format!("to version {SCHEMA_VERSION}")),
        source: Box::new(source),
    };
    let found = user_version(conn).map_err(sql_err)?;
    check_not_newer(found, db)?;
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    // IMMEDIATE takes the write lock first, so two processes opening the same fresh
    // directory cannot both migrate; the version is read again under the lock.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err)?;
    let found = user_version(&tx).map_err(sql_err)?;
    check_not_newer(found, db)?;
    for sql in &MIGRATIONS[found as usize..] {
        tx.execute_batch(sql).map_err(sql_err)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sql_err)?;
    tx.commit().map_err(sql_err)
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

fn check_not_newer(found: i64, db: &Path) -> Result<(), StoreError> {
    if found < 0 {
        return Err(StoreError::Corrupt {
            path: db.to_path_buf(),
            what: "schema version".into(),
            reason: format!("user_version is {found}"),
        });
    }
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew { path: db.to_path_buf(), found, supported: SCHEMA_VERSION });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_set_the_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        let db = Path::new(":memory:");
        migrate(&mut conn, db).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        // A second run is a no-op, not a "table already exists" error.
        migrate(&mut conn, db).unwrap();
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(tables, ["calls", "failures", "items", "meta"]);
    }

    #[test]
    fn no_column_is_meant_for_headers_or_secrets() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        let columns: Vec<String> = conn
            .prepare(
                "SELECT m.name || '.' || p.name FROM sqlite_master m, pragma_table_info(m.name) p \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(columns.contains(&"calls.request_json".to_string()), "{columns:?}");
        for column in &columns {
            for word in ["header", "auth", "secret", "api_key", "password"] {
                assert!(!column.contains(word), "column {column} looks like it holds {word}");
            }
        }
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        let err = migrate(&mut conn, Path::new("/r/sagert.sqlite")).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { found, .. } if found == SCHEMA_VERSION + 1), "{err}");
        assert!(err.to_string().contains("newer than this sagert understands"), "{err}");
    }
}
