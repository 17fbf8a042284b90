//! [`OpenAiBackend`]: endpoint choice, limits, retries and failover around one
//! logical call.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sagert_backend::{
    BackendError, BoxFuture, Capabilities, ChatBackend, ChatRequest, ChatResponse, Choice, FailureKind, Usage,
};

use crate::client::{self, AttemptError};
use crate::endpoint::{Endpoint, EndpointStats};
use crate::settings::{EndpointSettings, RetryPolicy, StructuredMode};
use crate::structured;
use crate::wire::{StructuredAsk, WireRequest};

/// A chat backend over one or more OpenAI-compatible endpoints serving the same
/// model. See the [crate docs](crate) for what it does per call.
pub struct OpenAiBackend {
    model: String,
    endpoints: Vec<Endpoint>,
    retry: RetryPolicy,
    /// Where the next tie-breaking scan over the endpoints starts (round robin).
    next: AtomicUsize,
}

/// One logical request as sent: the caller's request, plus the schema
/// instructions that prompt-mode endpoints put into the system message.
pub(crate) struct Call<'a> {
    pub request: &'a ChatRequest,
    /// [`sagert_backend::json::schema_instructions`] of the request's schema; empty
    /// when it has none.
    pub instructions: &'a str,
}

impl Call<'_> {
    fn prompt_estimate(&self, ask: StructuredAsk<'_>) -> u64 {
        let extra = ask.instructions().map_or(0, |i| i.len() as u64 / 4 + 4);
        self.request.estimated_prompt_tokens() + extra
    }

    /// Tokens to reserve under a tokens-per-minute limit before sending.
    fn reservation(&self, ask: StructuredAsk<'_>) -> u64 {
        let params = &self.request.params;
        let completion = u64::from(params.max_tokens.unwrap_or(0)) * u64::from(params.n.max(1));
        self.prompt_estimate(ask) + completion
    }
}

/// A successful call: the answers and everything paid for on the way.
pub(crate) struct Completion {
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Usage,
}

/// A failed attempt, with what the retry loop needs to know about it.
struct Failed {
    error: AttemptError,
    /// The attempt carried `response_format`.
    sent_response_format: bool,
    /// The endpoint's structured mode when the attempt was made.
    sent_mode: StructuredMode,
    /// Tokens the attempt was probably billed for (a 2xx whose body was unusable).
    paid: Usage,
}

impl OpenAiBackend {
    /// A backend for `model` over `endpoints`.
    ///
    /// Fails with [`BackendError::Invalid`] when there is no endpoint, when two
    /// share a name, when a base URL does not parse as an http(s) URL without
    /// credentials, when a concurrency or per-minute limit is 0, or when the model
    /// name is empty for an endpoint that does not name its own.
    pub fn new(
        model: impl Into<String>,
        endpoints: Vec<EndpointSettings>,
        retry: RetryPolicy,
    ) -> Result<Self, BackendError> {
        let model = model.into();
        if endpoints.is_empty() {
            return Err(BackendError::Invalid(format!("model `{model}` has no endpoint")));
        }
        let endpoints = endpoints.into_iter().map(Endpoint::new).collect::<Result<Vec<_>, _>>()?;
        for (i, endpoint) in endpoints.iter().enumerate() {
            if endpoints[..i].iter().any(|e| e.name == endpoint.name) {
                return Err(BackendError::Invalid(format!(
                    "endpoint name `{}` is used twice",
                    endpoint.name
                )));
            }
            if model.trim().is_empty() && endpoint.model.is_none() {
                return Err(BackendError::Invalid(format!(
                    "endpoint `{}`: no model name (the role's model is empty and the endpoint sets none)",
                    endpoint.name
                )));
            }
        }
        Ok(OpenAiBackend { model, endpoints, retry, next: AtomicUsize::new(0) })
    }

    /// What each endpoint has done so far, in the order given to [`Self::new`].
    pub fn endpoint_stats(&self) -> Vec<EndpointStats> {
        self.endpoints.iter().map(Endpoint::stats).collect()
    }

    /// Choose an endpoint: among those not cooling down, the one with the most free
    /// request slots, ties broken round robin; when all are cooling down, wait for
    /// the first to come back.
    async fn pick(&self) -> &Endpoint {
        let n = self.endpoints.len();
        loop {
            let now = Instant::now();
            let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
            let mut best: Option<(&Endpoint, usize)> = None;
            let mut soonest: Option<Instant> = None;
            for k in 0..n {
                let endpoint = &self.endpoints[(start + k) % n];
                match endpoint.cooling_until(now) {
                    Some(until) => soonest = Some(soonest.map_or(until, |s| s.min(until))),
                    None => {
                        let free = endpoint.free_slots();
                        if best.is_none_or(|(_, most)| free > most) {
                            best = Some((endpoint, free));
                        }
                    }
                }
            }
            match (best, soonest) {
                (Some((endpoint, _)), _) => return endpoint,
                (None, Some(until)) => tokio::time::sleep_until(until.into()).await,
                (None, None) => unreachable!("an endpoint is either cooling down or not"),
            }
        }
    }

    /// Send `call` until it succeeds, fails for good, or runs out of retries.
    pub(crate) async fn complete(&self, call: &Call<'_>) -> Result<Completion, BackendError> {
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut retries = 0u32;
        let mut tried: Vec<&str> = Vec::new();
        let mut paid = Usage::default();
        loop {
            let endpoint = self.pick().await;
            if !tried.contains(&endpoint.name.as_str()) {
                tried.push(&endpoint.name);
            }
            attempts += 1;
            let failed = match self.attempt(endpoint, call, retries > 0).await {
                Ok(mut done) => {
                    done.usage += paid;
                    return Ok(done);
                }
                Err(failed) => failed,
            };
            paid += failed.paid;
            let error = failed.error;
            endpoint.record_failure(&error.kind, error.retry_after, &self.retry);
            if error.rejects_response_format
                && failed.sent_response_format
                && (endpoint.fall_back(failed.sent_mode) || endpoint.mode() != failed.sent_mode)
            {
                // The server does not take this `response_format`: resend with the
                // next way down (json_object, then prompt) now, without counting a
                // retry. Each endpoint steps down at most twice.
                continue;
            }
            if !error.kind.is_retryable() || retries >= self.retry.max_retries {
                return Err(BackendError::Request {
                    endpoint: tried.join(", "),
                    kind: error.kind,
                    attempts,
                    elapsed: started.elapsed(),
                    message: error.message,
                });
            }
            retries += 1;
            tokio::time::sleep(self.retry.backoff(retries)).await;
        }
    }

    /// One attempt on one endpoint: wait for a slot and the rate limits, send,
    /// and account for what it used.
    async fn attempt(
        &self,
        endpoint: &Endpoint,
        call: &Call<'_>,
        is_retry: bool,
    ) -> Result<Completion, Failed> {
        let model = endpoint.model.as_deref().unwrap_or(&self.model);
        let request = call.request;
        let mode = endpoint.mode();
        let ask = match (&request.schema, mode) {
            (None, _) => StructuredAsk::None,
            (Some(_), StructuredMode::Prompt) => StructuredAsk::Prompt(call.instructions),
            (Some(schema), StructuredMode::JsonObject) => {
                StructuredAsk::JsonObject(schema, call.instructions)
            }
            (Some(schema), StructuredMode::Auto | StructuredMode::JsonSchema) => {
                StructuredAsk::ResponseFormat(schema)
            }
        };
        let body = WireRequest::new(model, &request.messages, &request.params, ask).to_bytes();

        let _permit = endpoint.permits.acquire().await.expect("endpoint semaphores are never closed");
        if let Some(bucket) = &endpoint.requests_per_minute {
            bucket.acquire(1.0).await;
        }
        let reserved = call.reservation(ask) as f64;
        if let Some(bucket) = &endpoint.tokens_per_minute {
            bucket.acquire(reserved).await;
        }
        let in_flight = endpoint.start_request(is_retry);
        let result = client::send(endpoint, body).await;
        drop(in_flight);

        match result {
            Ok(parsed) => {
                let (usage, estimated) = match parsed.usage {
                    Some(usage) => (usage, false),
                    None => {
                        let completion_tokens =
                            parsed.choices.iter().map(|c| c.text.len() as u64 / 4 + 1).sum();
                        (Usage { prompt_tokens: call.prompt_estimate(ask), completion_tokens }, true)
                    }
                };
                if let Some(bucket) = &endpoint.tokens_per_minute {
                    bucket.give_back(reserved - usage.total() as f64);
                }
                endpoint.record_success(estimated);
                Ok(Completion {
                    model: parsed.model.unwrap_or_else(|| model.to_string()),
                    choices: parsed.choices,
                    usage,
                })
            }
            Err(error) => {
                // A server that answered with an error status, or was never
                // reached, generated nothing; a timeout or a bad 2xx body may have.
                let generated = error.success_status || error.kind == FailureKind::Timeout;
                if let (Some(bucket), false) = (&endpoint.tokens_per_minute, generated) {
                    bucket.give_back(reserved);
                }
                let paid = if error.success_status {
                    Usage { prompt_tokens: call.prompt_estimate(ask), completion_tokens: 0 }
                } else {
                    Usage::default()
                };
                let sent_response_format = ask.sends_response_format();
                Err(Failed { error, sent_response_format, sent_mode: mode, paid })
            }
        }
    }

    async fn chat_plain(&self, request: &ChatRequest) -> Result<ChatResponse, BackendError> {
        let done = self.complete(&Call { request, instructions: "" }).await?;
        Ok(ChatResponse { model: done.model, choices: done.choices, usage: done.usage })
    }
}

fn check_request(request: &ChatRequest) -> Result<(), BackendError> {
    if request.messages.is_empty() {
        return Err(BackendError::Invalid("a chat request needs at least one message".into()));
    }
    if request.params.n == 0 {
        return Err(BackendError::Invalid("n must be at least 1".into()));
    }
    Ok(())
}

impl ChatBackend for OpenAiBackend {
    fn model_id(&self) -> &str {
        &self.model
    }

    /// `json_schema` is true while any endpoint still sends `response_format`
    /// (configured `auto` or `json_schema`, and not fallen back to prompt mode).
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            json_schema: self.endpoints.iter().any(|e| e.mode() != StructuredMode::Prompt),
            logprobs: false,
        }
    }

    fn chat<'a>(&'a self, request: &'a ChatRequest) -> BoxFuture<'a, Result<ChatResponse, BackendError>> {
        Box::pin(async move {
            check_request(request)?;
            match &request.schema {
                None => self.chat_plain(request).await,
                Some(schema) => structured::chat(self, request, schema).await,
            }
        })
    }
}

impl fmt::Debug for OpenAiBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiBackend")
            .field("model", &self.model)
            .field("endpoints", &self.endpoints)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}
