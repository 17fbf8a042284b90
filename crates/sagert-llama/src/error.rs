//! The crate's error type.

use std::path::PathBuf;
use std::time::Duration;

use sagert_backend::{BackendError, FailureKind};

/// What went wrong in the embedded backend, with the path, stage or request
/// size that it concerns.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlamaError {
    /// The options cannot work together (for example fewer batch tokens than
    /// parallel sequences).
    #[error("invalid llama options: {0}")]
    Options(String),
    /// The model file does not exist.
    #[error("model file {path} does not exist (run scripts/fetch-models)")]
    ModelMissing {
        /// The path given to [`crate::LlamaBackend::load`].
        path: PathBuf,
    },
    /// llama.cpp's process-wide initialisation failed.
    #[error("initialising llama.cpp failed: {0}")]
    Init(String),
    /// llama.cpp could not load the model file.
    #[error("loading model {path} failed: {message}")]
    Load {
        /// The model file.
        path: PathBuf,
        /// llama.cpp's reason.
        message: String,
    },
    /// llama.cpp could not create the inference context (KV cache, buffers).
    #[error("creating the llama.cpp context for {path} ({context_tokens} tokens, {sequences} sequences) failed: {message}")]
    Context {
        /// The model file.
        path: PathBuf,
        /// Total context size asked for.
        context_tokens: u32,
        /// Parallel sequences asked for.
        sequences: usize,
        /// llama.cpp's reason.
        message: String,
    },
    /// The model's GGUF metadata has no `tokenizer.chat_template`.
    #[error(
        "model {path} has no chat template (GGUF key `tokenizer.chat_template`); chat requests need one"
    )]
    NoChatTemplate {
        /// The model file.
        path: PathBuf,
    },
    /// The chat template does not compile or does not render for a conversation.
    #[error("chat template {stage} failed: {message}")]
    Template {
        /// `compile` or `render`.
        stage: &'static str,
        /// minijinja's message, with the template line where it has one.
        message: String,
    },
    /// A request that cannot be served as asked (prompt too long for the
    /// context, too many choices, zero `max_tokens`).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// `llama_decode` failed for a batch; the requests in that batch fail.
    #[error("llama_decode failed on a batch of {tokens} tokens over {sequences} sequences: {message}")]
    Decode {
        /// Tokens in the failed batch.
        tokens: usize,
        /// Sequences in the failed batch.
        sequences: usize,
        /// llama.cpp's reason.
        message: String,
    },
    /// A constrained choice's grammar matcher and its sampled tokens disagree
    /// (a token the mask forbade, or a mask for the wrong vocabulary): a bug,
    /// so the choice fails.
    #[error("constrained decoding failed: {0}")]
    Constraint(String),
    /// The engine thread is gone (it panicked, or the backend is shutting down).
    #[error("the llama engine thread stopped: {0}")]
    EngineStopped(String),
}

impl LlamaError {
    /// The [`BackendError`] that callers of the backend traits see.
    ///
    /// Requests that are wrong in themselves become [`BackendError::Invalid`]; a
    /// model without a chat template is [`BackendError::Unsupported`]; failures
    /// of the engine become [`BackendError::Request`] with kind `Server(500)`, one
    /// attempt, endpoint `llama.cpp:<model id>`.
    pub fn into_backend_error(self, model_id: &str, elapsed: Duration) -> BackendError {
        match self {
            LlamaError::Invalid(message) => BackendError::Invalid(message),
            LlamaError::Template { .. } => BackendError::Invalid(self.to_string()),
            LlamaError::NoChatTemplate { .. } => {
                BackendError::Unsupported { backend: model_id.to_string(), what: self.to_string() }
            }
            other => BackendError::Request {
                endpoint: format!("llama.cpp:{model_id}"),
                kind: FailureKind::Server(500),
                attempts: 1,
                elapsed,
                message: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_context_and_map_to_backend_errors() {
        let e = LlamaError::Decode { tokens: 12, sequences: 3, message: "no KV slot".into() };
        assert!(e.to_string().contains("12 tokens over 3 sequences"), "{e}");
        let b = e.into_backend_error("smol", Duration::from_millis(5));
        assert_eq!(b.label(), "server_500");
        assert!(b.to_string().contains("llama.cpp:smol"), "{b}");

        let b = LlamaError::Invalid("prompt too long".into()).into_backend_error("smol", Duration::ZERO);
        assert!(matches!(b, BackendError::Invalid(m) if m == "prompt too long"));

        let e = LlamaError::NoChatTemplate { path: "/m/x.gguf".into() };
        assert!(e.to_string().contains("/m/x.gguf") && e.to_string().contains("tokenizer.chat_template"));
        assert_eq!(e.into_backend_error("smol", Duration::ZERO).label(), "unsupported");
    }
}
