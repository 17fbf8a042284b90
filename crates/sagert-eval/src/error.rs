//! The crate's error type.

use std::path::PathBuf;

/// What went wrong in an import, a judgement or a metric, with the file, line
/// and field it concerns.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A record is malformed: `file:line: field `name`: message`.
    #[error("{}:{line}: field `{field}`: {message}", file.display())]
    Record { file: PathBuf, line: usize, field: String, message: String },
    /// A record cannot be parsed at all (bad JSON, CSV or YAML): `file:line: message`.
    #[error("{}:{line}: {message}", file.display())]
    Syntax { file: PathBuf, line: usize, message: String },
    /// A file as a whole is unusable (empty, unknown format, missing columns).
    #[error("{}: {message}", file.display())]
    File { file: PathBuf, message: String },
    /// An argument or option is invalid (an unknown kind, a bad field map).
    #[error("{0}")]
    Invalid(String),
    /// A judge cannot be built or cannot run (a model failed to load, a backend
    /// failed for good); one item's unusable verdict is not this error.
    #[error("judge `{judge}`: {message}")]
    Judge { judge: String, message: String },
    /// Writing an output or the run store failed in the engine layer.
    #[error(transparent)]
    Engine(#[from] sagert_engine::EngineError),
    /// A metric cannot be computed from its inputs (no samples, mismatched lengths).
    #[error("{metric}: {message}")]
    Metric { metric: String, message: String },
}

impl EvalError {
    /// A closure mapping an I/O error on `path` into [`EvalError::Io`].
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> EvalError {
        let path = path.into();
        move |source| EvalError::Io { path, source }
    }
}

/// The crate's result type.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;
