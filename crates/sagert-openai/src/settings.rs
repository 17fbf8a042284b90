//! Plain settings for one endpoint and for retries. The caller (the CLI, from the
//! run's TOML configuration) fills them; this crate reads no files.

use std::time::Duration;

use sagert_backend::Secret;

/// How structured output is asked of an endpoint when a request carries a schema.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StructuredMode {
    /// Send `response_format: json_schema`; if the server rejects it (HTTP 400 or
    /// 422 naming `response_format`, `json_schema` or "not supported", or a 500
    /// naming `response_format`, as llama-cpp-python's server answers), switch this
    /// endpoint to [`StructuredMode::JsonObject`] for the rest of the process and
    /// resend; if that is rejected too, to [`StructuredMode::Prompt`].
    #[default]
    Auto,
    /// Always send `response_format: json_schema`; a rejection is an error.
    JsonSchema,
    /// Send `response_format: {"type": "json_object", "schema": ...}` and describe
    /// the schema in the system prompt. llama.cpp's servers constrain decoding to
    /// the schema with it; OpenAI-style servers give plain JSON mode. `auto`
    /// endpoints fall back to this first when `json_schema` is rejected.
    JsonObject,
    /// Never send `response_format`; put the schema in the system prompt.
    Prompt,
}

impl StructuredMode {
    /// The mode's name as configuration files and reports write it.
    pub fn as_str(self) -> &'static str {
        match self {
            StructuredMode::Auto => "auto",
            StructuredMode::JsonSchema => "json_schema",
            StructuredMode::JsonObject => "json_object",
            StructuredMode::Prompt => "prompt",
        }
    }
}

/// One OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp's server, ...).
///
/// `Debug` is safe to print: the API key is a [`Secret`] and prints as `****`.
#[derive(Clone, Debug)]
pub struct EndpointSettings {
    /// A short name, used in errors and statistics.
    pub name: String,
    /// The API root, such as `http://127.0.0.1:8080/v1`; `/chat/completions` is
    /// appended. A trailing slash is fine.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>`; never printed.
    pub api_key: Option<Secret>,
    /// The model name to send to this endpoint instead of the role's model (Ollama
    /// tags differ from Hugging Face names, say).
    pub model: Option<String>,
    /// Most requests in flight on this endpoint at once (at least 1).
    pub concurrency: usize,
    /// Most requests started per minute, if the server limits them.
    pub requests_per_minute: Option<u32>,
    /// Most tokens per minute, if the server limits them. Each request reserves its
    /// estimated prompt tokens plus `max_tokens × n` before it is sent; the
    /// reservation is corrected with the real usage afterwards.
    pub tokens_per_minute: Option<u64>,
    /// Time limit of one attempt, from sending to the end of the response body.
    pub timeout: Duration,
    /// Time limit for opening a connection.
    pub connect_timeout: Duration,
    /// How structured output is asked for.
    pub structured_output: StructuredMode,
}

impl EndpointSettings {
    /// Settings with the given name and API root and defaults for the rest: no key,
    /// no model override, 8 requests in flight, no rate limits, a 300 s timeout,
    /// a 10 s connect timeout, [`StructuredMode::Auto`].
    pub fn new(name: impl Into<String>, base_url: impl Into<String>) -> Self {
        EndpointSettings {
            name: name.into(),
            base_url: base_url.into(),
            api_key: None,
            model: None,
            concurrency: 8,
            requests_per_minute: None,
            tokens_per_minute: None,
            timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            structured_output: StructuredMode::Auto,
        }
    }
}

/// How failed attempts are retried.
///
/// The delay before retry `k` (1-based) is drawn uniformly from
/// `[0, min(max_delay, base_delay × 2^(k-1))]` ("full jitter"). An endpoint that
/// failed with a retryable error also cools down for
/// `min(max_delay, base_delay × 2^(f-1))`, `f` its consecutive failures, or for
/// the server's `Retry-After` (capped at ten minutes) when that is longer; retries
/// go to endpoints that are not cooling down, and wait for the soonest one when all
/// are. With one endpoint, a `Retry-After` longer than the backoff is therefore
/// what the retry waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt, over all endpoints of the backend.
    pub max_retries: u32,
    /// The first backoff step; it doubles each retry.
    pub base_delay: Duration,
    /// The largest backoff step and endpoint cooldown.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 6 retries, 500 ms doubling to 60 s.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// The longest `Retry-After` honoured; a server asking for more is waited for this
/// long and then tried again.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

impl RetryPolicy {
    /// The cap of backoff step `step` (1-based): `min(max_delay, base_delay × 2^(step-1))`.
    pub(crate) fn step_cap(&self, step: u32) -> Duration {
        let factor = 1u32.checked_shl(step.saturating_sub(1).min(30)).unwrap_or(u32::MAX);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// The jittered delay before retry `retry` (1-based).
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        self.step_cap(retry).mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let policy = RetryPolicy {
            max_retries: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        assert_eq!(policy.step_cap(1), Duration::from_millis(100));
        assert_eq!(policy.step_cap(3), Duration::from_millis(400));
        assert_eq!(policy.step_cap(5), Duration::from_secs(1));
        assert_eq!(policy.step_cap(200), Duration::from_secs(1));
        let draws: Vec<Duration> = (0..50).map(|_| policy.backoff(2)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_millis(200)));
        assert!(draws.iter().any(|d| *d != draws[0]), "jitter varies the delay");
    }

    #[test]
    fn debug_hides_the_key() {
        let mut settings = EndpointSettings::new("openai", "https://api.example.invalid/v1");
        settings.api_key = Some(Secret::new("sk-planted-key"));
        let debug = format!("{settings:?}");
        assert!(!debug.contains("sk-planted-key") && debug.contains("****"), "{debug}");
    }
}
