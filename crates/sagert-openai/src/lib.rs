//! An OpenAI-compatible HTTP chat backend: rate limits, retries, failover and
//! structured output over `/v1/chat/completions`.
//!
//! [`OpenAiBackend`] implements [`sagert_backend::ChatBackend`] for one model served
//! by one or more endpoints (OpenAI, vLLM, Ollama, llama.cpp's server, ...). It is
//! built from plain settings ([`EndpointSettings`], [`RetryPolicy`]) and knows nothing
//! of configuration files, the call store or budgets: `sagert-config` describes the
//! endpoints, the CLI maps them to these settings, and `sagert-engine` wraps the
//! backend with caching, budgets and cost accounting. `sagert-mock` is the
//! fault-injecting server its tests and benchmark run against.
//!
//! # One call
//!
//! 1. **Choose an endpoint**: among those not cooling down, the one with the most
//!    free request slots, ties broken round robin. When all are cooling down, wait
//!    for the first to come back.
//! 2. **Wait for the endpoint's limits**: a slot of its `concurrency`, then its
//!    requests-per-minute and tokens-per-minute buckets. The token bucket reserves
//!    the estimated prompt tokens plus `max_tokens × n`, and is corrected with the
//!    real usage when the answer comes.
//! 3. **Send** `model`, `messages`, the sampling parameters that are set, and for a
//!    request with a schema either `response_format: json_schema` (modes `auto` and
//!    `json_schema`) or the schema instructions in the system message (mode
//!    `prompt`), all within the per-attempt timeout.
//! 4. **On failure**: 429, 5xx, connection errors, timeouts, truncated bodies and
//!    malformed JSON are retried with exponential backoff and full jitter; the
//!    endpoint cools down (longer after each consecutive failure, or for the
//!    server's `retry-after-ms` / `Retry-After`, capped at ten minutes) so that the
//!    retry goes elsewhere. Other 4xx answers are final, and so is a 429 that says
//!    the account's quota is spent (`insufficient_quota`), except that an `auto`
//!    endpoint that rejects `response_format`
//!    switches to prompt mode for good and the request is resent at once. A call
//!    that fails for good is a [`sagert_backend::BackendError::Request`] naming the
//!    endpoints tried, the last failure's kind and message, the attempts and the
//!    time taken.
//! 5. **Structured output**: each choice is parsed with
//!    [`sagert_backend::json::extract_json`] and checked with
//!    [`sagert_backend::json::validate`]; a failing choice gets one repair round,
//!    then the call fails with [`sagert_backend::BackendError::Structured`]. The
//!    returned text is the compact JSON of the value.
//!
//! Usage sums every attempt that was paid for: the successful one, repair rounds,
//! and the estimated prompt of 2xx answers whose body was unusable. A response
//! without usage gets an estimate (counted in [`EndpointStats::usage_estimated`]).
//!
//! API keys are [`sagert_backend::Secret`]s: they print as `****`, the header that
//! carries them is marked sensitive, and a server message that echoes one has it
//! replaced before it reaches an error.

mod backend;
mod client;
mod endpoint;
mod limits;
mod settings;
mod structured;
mod wire;

pub use backend::OpenAiBackend;
pub use endpoint::EndpointStats;
pub use settings::{EndpointSettings, RetryPolicy, StructuredMode, MAX_RETRY_AFTER};
