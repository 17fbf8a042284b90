use std::fmt;
use std::path::PathBuf;

/// Why a run-store operation failed.
///
/// Every variant names the database file, and where it applies the operation and
/// the call key, stage or item it was about, so that a message printed with `{:#}`
/// reads on its own, for example
/// `cannot store call 3fa2c1d09b4e… in run store runs/x/sagert.sqlite: database is locked`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The run directory could not be created or read.
    #[error("cannot create run directory {}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// `open_existing` found no run store in the directory.
    #[error("{} is not a run directory: it holds no {}", path.display(), crate::DB_FILE)]
    NotARunDir {
        /// The directory that was given.
        path: PathBuf,
    },

    /// The database file could not be opened or set up.
    #[error("cannot open run store {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's error (boxed: it is large, and errors travel in every `Result`).
        source: Box<rusqlite::Error>,
    },

    /// The database was written by a newer sagert, with a schema this one does not know.
    #[error(
        "run store {} has schema version {found}, newer than this sagert understands (up to {supported}); \
         use a newer sagert for this run directory",
        path.display()
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// The `user_version` found in the file.
        found: i64,
        /// The newest version this build can read.
        supported: i64,
    },

    /// A statement failed.
    #[error("cannot {op}{} in run store {}: {source}", Subject(subject), path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What was being done, as a verb phrase (`store call`, `read items`).
        op: &'static str,
        /// What it was done to (a short call key, `stage/item`), if anything.
        subject: Option<String>,
        /// SQLite's error (boxed: it is large, and errors travel in every `Result`).
        source: Box<rusqlite::Error>,
    },

    /// A row that exists but does not deserialize: a bad role name, bad JSON.
    #[error("run store {} holds a corrupt {what}: {reason}", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// Which row or column (`response of call 3fa2c1d09b4e…`).
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A value could not be serialized before it was stored.
    #[error("cannot serialize {what} for the run store: {source}")]
    Serialize {
        /// What was being serialized (`request of call 3fa2c1d09b4e…`).
        what: String,
        /// serde_json's error.
        source: serde_json::Error,
    },
}

/// Formats an optional subject as ` subject`, or nothing.
struct Subject<'a>(&'a Option<String>);

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, " {s}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_file_the_operation_and_the_subject() {
        let e = StoreError::Sqlite {
            path: PathBuf::from("/x/sagert.sqlite"),
            op: "store call",
            subject: Some("3fa2c1d09b4e…".into()),
            source: Box::new(rusqlite::Error::InvalidQuery),
        };
        let s = e.to_string();
        assert!(s.starts_with("cannot store call 3fa2c1d09b4e… in run store /x/sagert.sqlite: "), "{s}");

        let e = StoreError::Sqlite {
            path: PathBuf::from("/x/sagert.sqlite"),
            op: "read role statistics",
            subject: None,
            source: Box::new(rusqlite::Error::InvalidQuery),
        };
        assert!(e.to_string().starts_with("cannot read role statistics in run store /x/sagert.sqlite: "));

        let e = StoreError::NotARunDir { path: PathBuf::from("/tmp/empty") };
        assert_eq!(e.to_string(), "/tmp/empty is not a run directory: it holds no sagert.sqlite");
    }
}
