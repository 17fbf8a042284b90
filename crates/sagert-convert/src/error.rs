//! The crate's error type.

use std::path::PathBuf;

/// What went wrong in a conversion, with the file (or tensor) it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (config.json, tokenizer.json, ...) does not parse.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A GGUF or safetensors file is malformed or cannot be read.
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    /// The model or tokenizer is of a kind this crate does not convert.
    #[error("{}: unsupported {what}", path.display())]
    Unsupported { path: PathBuf, what: String },
    /// A field, metadata key or tensor the conversion needs is absent or has the
    /// wrong type.
    #[error("{}: {what}", path.display())]
    Missing { path: PathBuf, what: String },
    /// An operation on one tensor failed (shape, dtype).
    #[error("tensor `{name}`: {message}")]
    Tensor { name: String, message: String },
    /// Building the tokenizer failed.
    #[error("{}: tokenizer: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },
    /// The output directory exists and is not empty.
    #[error("{}: output directory exists and is not empty; remove it or choose another", path.display())]
    OutputExists { path: PathBuf },
    /// The conversion's thread pool could not be built.
    #[error("thread pool: {0}")]
    Threads(String),
}

impl ConvertError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ConvertError {
        let path = path.into();
        move |source| ConvertError::Io { path, source }
    }

    pub(crate) fn missing(path: impl Into<PathBuf>, what: impl Into<String>) -> ConvertError {
        ConvertError::Missing { path: path.into(), what: what.into() }
    }

    pub(crate) fn unsupported(path: impl Into<PathBuf>, what: impl Into<String>) -> ConvertError {
        ConvertError::Unsupported { path: path.into(), what: what.into() }
    }

    pub(crate) fn tensor(name: &str) -> impl FnOnce(candle_core::Error) -> ConvertError + '_ {
        move |e| ConvertError::Tensor { name: name.to_string(), message: e.to_string() }
    }
}
