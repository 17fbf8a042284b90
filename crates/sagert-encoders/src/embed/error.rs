//! The errors of the sentence embedder.

use std::path::PathBuf;

/// Why the embedder could not load or embed.
///
/// Named `EmbedError` (not `EncoderError`) so that it sits beside the toxicity
/// scorer's errors in this crate without a clash.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// A file the model folder must hold is not there.
    #[error(
        "{file} is missing from the model folder {dir} (a sentence-transformers folder \
         needs config.json, tokenizer.json and model.safetensors; \
         scripts/fetch-models minilm-l6 fetches them)"
    )]
    MissingFile {
        /// The model folder.
        dir: PathBuf,
        /// The missing file, relative to `dir`.
        file: &'static str,
    },

    /// A file exists but could not be read.
    #[error("reading {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// A JSON configuration file does not parse or lacks a field.
    #[error("parsing {path}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },

    /// The model's configuration asks for something this embedder does not implement.
    #[error("unsupported model in {path}: {reason}")]
    Unsupported {
        /// The configuration file that says so.
        path: PathBuf,
        /// What is not supported.
        reason: String,
    },

    /// `tokenizer.json` could not be loaded or configured.
    #[error("loading the tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// The tokenizers crate's message.
        message: String,
    },

    /// The weights are missing a tensor, have a wrong shape or do not read.
    #[error("loading the weights {path}")]
    Weights {
        /// The safetensors file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: candle_core::Error,
    },

    /// [`EmbedOptions`](super::EmbedOptions) are out of range.
    #[error("invalid embedder options: {0}")]
    Options(String),

    /// The embedder's thread pool could not be started.
    #[error("starting a pool of {threads} threads")]
    ThreadPool {
        /// The thread count asked for.
        threads: usize,
        /// The cause.
        #[source]
        source: rayon::ThreadPoolBuildError,
    },

    /// One text could not be tokenized.
    #[error("tokenizing text {index}: {message}")]
    Tokenize {
        /// The text's index in the input.
        index: usize,
        /// The tokenizers crate's message.
        message: String,
    },

    /// The forward pass failed.
    #[error("embedding a batch of {batch} texts of up to {tokens} tokens")]
    Forward {
        /// Texts in the batch.
        batch: usize,
        /// The padded length of the batch.
        tokens: usize,
        /// The cause.
        #[source]
        source: candle_core::Error,
    },
}
