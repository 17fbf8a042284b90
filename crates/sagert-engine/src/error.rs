use std::path::PathBuf;

use sagert_backend::BackendError;
use sagert_store::StoreError;

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A model call failed for good.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The run store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An input file is wrong at a line.
    #[error("{file}:{line}: {field}: {message}")]
    Input {
        /// The file.
        file: String,
        /// 1-based line, 0 for the whole file.
        line: usize,
        /// The field at fault, or `-`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`cannot read`, `cannot write`).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The run directory holds state that contradicts the command.
    #[error("{0}")]
    Conflict(String),
}

impl EngineError {
    /// Whether the failure stops a run rather than one item: the budget is
    /// spent, the store failed, or the run's state is wrong. A model call that
    /// failed for good (after its retries), or answered out of form, fails only
    /// the item it was for.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, EngineError::Backend(b) if !matches!(b, BackendError::Budget(_)))
    }
}
