//! The crate's error type.

use std::path::PathBuf;

/// What went wrong in alignment, with the file, line, field or tensor it concerns.
#[derive(Debug, thiserror::Error)]
pub enum AlignError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A dataset record is malformed: `file:line: field: message`.
    #[error("{}:{line}: field `{field}`: {message}", file.display())]
    Data { file: PathBuf, line: usize, field: String, message: String },
    /// A dataset file as a whole is unusable (empty, unknown format, no such split).
    #[error("{}: {message}", file.display())]
    Dataset { file: PathBuf, message: String },
    /// The alignment configuration is invalid.
    #[error("{}: {message}", file.display())]
    Config { file: PathBuf, message: String },
    /// The model directory or its files are unusable.
    #[error("{}: {message}", path.display())]
    Model { path: PathBuf, message: String },
    /// Model weights do not fit the model (missing, unexpected or mis-shaped tensors).
    #[error("model weights: {0}")]
    Weights(String),
    /// Rendering the model's chat template failed.
    #[error("chat template: {0}")]
    Template(String),
    /// Tokenizing failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A preference loss cannot be computed from the inputs it was given.
    #[error("loss: {0}")]
    Loss(String),
    /// A tensor operation failed.
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
    /// Converting between GGUF and transformers formats failed.
    #[error(transparent)]
    Convert(#[from] sagert_convert::ConvertError),
    /// The run store failed.
    #[error(transparent)]
    Store(#[from] sagert_store::StoreError),
    /// A checkpoint cannot be read or does not match the run.
    #[error("{}: checkpoint: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    /// Training diverged (a non-finite loss or gradient).
    #[error("step {step}: {message}")]
    Diverged { step: u64, message: String },
    /// The run was interrupted (Ctrl-C); the last checkpoint is kept.
    #[error("interrupted at step {step}; the run resumes from its last checkpoint")]
    Interrupted { step: u64 },
}

impl AlignError {
    /// A closure mapping an I/O error on `path` into [`AlignError::Io`].
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AlignError {
        let path = path.into();
        move |source| AlignError::Io { path, source }
    }

    /// A [`AlignError::Data`] for `file:line`, field `field`.
    pub fn data(
        file: impl Into<PathBuf>,
        line: usize,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> AlignError {
        AlignError::Data { file: file.into(), line, field: field.into(), message: message.into() }
    }
}

/// The crate's result type.
pub type Result<T, E = AlignError> = std::result::Result<T, E>;
