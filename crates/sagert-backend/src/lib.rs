//! The model-backend layer of sagert.
//!
//! This crate defines what every model backend offers, and nothing about how:
//!
//! - [`ChatBackend`]: chat completion with sampling parameters and an optional JSON
//!   schema for structured output. A call returns text, finish reason and token usage.
//! - [`LogProbScorer`]: the sum and mean log-probability of a completion given a
//!   prompt, which the embedded backend implements.
//! - [`ModelRole`]: the roles a run's configuration assigns to models.
//! - [`Secret`]: an API key that never prints.
//! - [`json`]: tolerant extraction of JSON from model text and a validator for the
//!   JSON-schema subset sagert uses, shared by every backend that cannot constrain
//!   its decoding.
//!
//! It must not depend on an HTTP client, an async runtime or a tensor library: the
//! HTTP backend lives in `sagert-openai`, the cached and metered client in
//! `sagert-engine`, and the call store in `sagert-store`.

mod error;
pub mod json;
mod role;
mod secret;
mod types;

pub use error::{BackendError, FailureKind};
pub use role::{ModelRole, UnknownRole};
pub use secret::Secret;
pub use types::{
    Capabilities, ChatMessage, ChatRequest, ChatResponse, ChatRole, Choice, FinishReason, JsonSchema,
    SamplingParams, ScoreRequest, ScoreResult, Usage,
};

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future, so that the traits below stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A model that answers chat-completion requests.
///
/// Implementations are shared between many concurrent tasks, so they take `&self`
/// and are `Send + Sync`. Rate limits, retries and failover belong inside the
/// implementation; caching and budgets belong to `sagert-engine`, above it.
pub trait ChatBackend: Send + Sync {
    /// The model identifier this backend serves, as it goes into cache keys and
    /// reports (for example `gpt-4o-mini` or `smollm2-135m-instruct`).
    fn model_id(&self) -> &str;

    /// What the backend can do natively.
    fn capabilities(&self) -> Capabilities;

    /// Answer one chat-completion request.
    fn chat<'a>(&'a self, request: &'a ChatRequest) -> BoxFuture<'a, Result<ChatResponse, BackendError>>;
}

/// A model that scores completions by their log-probability.
pub trait LogProbScorer: Send + Sync {
    /// The model identifier, as for [`ChatBackend::model_id`].
    fn model_id(&self) -> &str;

    /// Score a batch of (prompt, completion) pairs; results are in input order.
    fn score<'a>(
        &'a self,
        requests: &'a [ScoreRequest],
    ) -> BoxFuture<'a, Result<Vec<ScoreResult>, BackendError>>;
}
