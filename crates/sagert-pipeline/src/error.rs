use std::path::PathBuf;

use sagert_engine::EngineError;
use sagert_store::StoreError;

/// Why a pipeline operation failed. One item's failure is not an error: it is
/// recorded in the store and the run goes on.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The run store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine failed (a file, a budget, a conflict).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`cannot read`, `cannot write`).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A prompt template does not parse or render.
    #[error("template `{name}`: {message}")]
    Template {
        /// The template's name (its file name).
        name: String,
        /// What is wrong, with the line where minijinja knows it.
        message: String,
    },
    /// A Parquet file could not be written or read.
    #[error("{path}: parquet: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An encoder (embedder, classifier) failed.
    #[error("{what}: {message}")]
    Encoder {
        /// Which encoder.
        what: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The configuration or the run directory does not allow the operation.
    #[error("{0}")]
    Invalid(String),
}

impl PipelineError {
    /// An [`PipelineError::Io`] for `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PipelineError {
        let path = path.into();
        move |source| PipelineError::Io { op, path, source }
    }
}
