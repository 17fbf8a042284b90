//! One endpoint at run time: its HTTP client, limits, health and counters.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use reqwest::Url;
use sagert_backend::{BackendError, FailureKind, Secret};
use tokio::sync::Semaphore;

use crate::limits::TokenBucket;
use crate::settings::{EndpointSettings, RetryPolicy, StructuredMode};

/// What one endpoint has done so far, for status reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// The endpoint's name.
    pub name: String,
    /// How structured output is asked of it now (`prompt` after an `auto` fallback).
    pub structured_mode: StructuredMode,
    /// Requests sent to it.
    pub requests: u64,
    /// Requests that returned a usable response.
    pub ok: u64,
    /// Failed requests by [`FailureKind::label`] (`server_503`, `timeout`, ...).
    pub failures: BTreeMap<String, u64>,
    /// Requests sent to it that retried an earlier failed attempt (made here or on
    /// another endpoint).
    pub retries: u64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Responses without token usage, whose usage was estimated.
    pub usage_estimated: u64,
    /// Whether it is cooling down after a failure now.
    pub cooling_down: bool,
}

#[derive(Default)]
struct Health {
    consecutive_failures: u32,
    cooldown_until: Option<Instant>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    ok: AtomicU64,
    retries: AtomicU64,
    in_flight: AtomicU64,
    usage_estimated: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
}

/// An endpoint at run time.
pub(crate) struct Endpoint {
    pub(crate) name: String,
    /// `<base_url>/chat/completions`.
    pub(crate) url: Url,
    /// The model name to send instead of the backend's, if any.
    pub(crate) model: Option<String>,
    /// `Bearer <key>`, marked sensitive so that `http` never prints it.
    pub(crate) authorization: Option<HeaderValue>,
    /// Kept only to scrub the key from server messages.
    api_key: Option<Secret>,
    pub(crate) client: reqwest::Client,
    pub(crate) timeout: Duration,
    pub(crate) concurrency: usize,
    pub(crate) permits: Semaphore,
    pub(crate) requests_per_minute: Option<TokenBucket>,
    pub(crate) tokens_per_minute: Option<TokenBucket>,
    configured_mode: StructuredMode,
    fallback: AtomicU8,
    health: Mutex<Health>,
    counters: Counters,
}

fn invalid(name: &str, what: impl fmt::Display) -> BackendError {
    BackendError::Invalid(format!("endpoint `{name}`: {what}"))
}

impl Endpoint {
    /// Check the settings and build the endpoint and its HTTP client.
    pub(crate) fn new(settings: EndpointSettings) -> Result<Self, BackendError> {
        let name = settings.name;
        if name.trim().is_empty() {
            return Err(BackendError::Invalid("an endpoint has an empty name".into()));
        }
        let base = settings.base_url.trim().trim_end_matches('/');
        let url = Url::parse(&format!("{base}/chat/completions"))
            .map_err(|e| invalid(&name, format_args!("base_url `{base}` does not parse: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(&name, format_args!("base_url `{base}` is not an http(s) URL")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(&name, "base_url carries credentials; put the key in api_key instead"));
        }
        if settings.concurrency == 0 {
            return Err(invalid(&name, "concurrency must be at least 1"));
        }
        if settings.requests_per_minute == Some(0) || settings.tokens_per_minute == Some(0) {
            return Err(invalid(&name, "a per-minute limit of 0 would never send anything"));
        }
        if settings.timeout.is_zero() {
            return Err(invalid(&name, "timeout must be above zero"));
        }
        let authorization = match &settings.api_key {
            None => None,
            Some(key) => {
                // The error of `from_str` holds no part of the key; say nothing of it.
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                    .map_err(|_| invalid(&name, "api_key holds characters not allowed in an HTTP header"))?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .pool_max_idle_per_host(settings.concurrency)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sagert/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid(&name, format_args!("cannot build an HTTP client: {e}")))?;
        Ok(Endpoint {
            url,
            model: settings.model.filter(|m| !m.trim().is_empty()),
            authorization,
            api_key: settings.api_key.filter(|k| !k.expose().is_empty()),
            client,
            timeout: settings.timeout,
            concurrency: settings.concurrency,
            permits: Semaphore::new(settings.concurrency),
            requests_per_minute: settings.requests_per_minute.map(|l| TokenBucket::per_minute(f64::from(l))),
            tokens_per_minute: settings.tokens_per_minute.map(|l| TokenBucket::per_minute(l as f64)),
            configured_mode: settings.structured_output,
            fallback: AtomicU8::new(0),
            health: Mutex::new(Health::default()),
            counters: Counters::default(),
            name,
        })
    }

    /// How structured output is asked of this endpoint now.
    pub(crate) fn mode(&self) -> StructuredMode {
        match self.fallback.load(Ordering::Relaxed) {
            0 => self.configured_mode,
            1 => StructuredMode::JsonObject,
            _ => StructuredMode::Prompt,
        }
    }

    /// Step an `auto` endpoint down from `rejected` (the mode a rejected request
    /// was sent in) to the next way of asking: json_object, then prompt. Returns
    /// false when it is not an `auto` endpoint, is already in prompt mode, or
    /// another request already stepped it down from `rejected`.
    pub(crate) fn fall_back(&self, rejected: StructuredMode) -> bool {
        if self.configured_mode != StructuredMode::Auto {
            return false;
        }
        let (from, to) = match rejected {
            StructuredMode::Auto | StructuredMode::JsonSchema => (0, 1),
            StructuredMode::JsonObject => (1, 2),
            StructuredMode::Prompt => return false,
        };
        self.fallback.compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// When this endpoint's cooldown ends, if it is cooling down at `now`.
    pub(crate) fn cooling_until(&self, now: Instant) -> Option<Instant> {
        self.health().cooldown_until.filter(|until| *until > now)
    }

    /// Free request slots now.
    pub(crate) fn free_slots(&self) -> usize {
        self.permits.available_permits()
    }

    /// Replace the API key in a server message, should a server echo it.
    pub(crate) fn scrub(&self, message: String) -> String {
        match &self.api_key {
            Some(key) if message.contains(key.expose()) => message.replace(key.expose(), "****"),
            _ => message,
        }
    }

    /// Count a request about to be sent; the guard counts it out of flight.
    pub(crate) fn start_request(&self, is_retry: bool) -> InFlight<'_> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        if is_retry {
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
        }
        self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.counters.in_flight)
    }

    /// A usable response: the endpoint is healthy again.
    pub(crate) fn record_success(&self, usage_estimated: bool) {
        self.counters.ok.fetch_add(1, Ordering::Relaxed);
        if usage_estimated {
            self.counters.usage_estimated.fetch_add(1, Ordering::Relaxed);
        }
        let mut health = self.health();
        health.consecutive_failures = 0;
        health.cooldown_until = None;
    }

    /// A failed request. A retryable failure puts the endpoint in a cooldown of
    /// `policy.step_cap(consecutive failures)`, with equal jitter, or the server's
    /// `Retry-After` when that is longer.
    pub(crate) fn record_failure(
        &self,
        kind: &FailureKind,
        retry_after: Option<Duration>,
        policy: &RetryPolicy,
    ) {
        {
            let mut failures = self.counters.failures.lock().unwrap_or_else(|p| p.into_inner());
            *failures.entry(kind.label()).or_insert(0) += 1;
        }
        if !kind.is_retryable() {
            return;
        }
        let mut health = self.health();
        health.consecutive_failures = health.consecutive_failures.saturating_add(1);
        let step = policy.step_cap(health.consecutive_failures);
        // Equal jitter: between half and all of the step, so that requests that
        // failed together do not all come back at the same instant.
        let cooldown = (step / 2 + (step / 2).mul_f64(fastrand::f64())).max(retry_after.unwrap_or_default());
        let until = Instant::now() + cooldown;
        health.cooldown_until = Some(health.cooldown_until.map_or(until, |old| old.max(until)));
    }

    pub(crate) fn stats(&self) -> EndpointStats {
        let c = &self.counters;
        EndpointStats {
            name: self.name.clone(),
            structured_mode: self.mode(),
            requests: c.requests.load(Ordering::Relaxed),
            ok: c.ok.load(Ordering::Relaxed),
            failures: c.failures.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            retries: c.retries.load(Ordering::Relaxed),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            usage_estimated: c.usage_estimated.load(Ordering::Relaxed),
            cooling_down: self.cooling_until(Instant::now()).is_some(),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .field("concurrency", &self.concurrency)
            .field("structured_mode", &self.mode())
            .finish_non_exhaustive()
    }
}

/// Counts a request out of flight when dropped, also when its future is cancelled.
pub(crate) struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> EndpointSettings {
        EndpointSettings::new("e", url)
    }

    #[test]
    fn urls_are_checked_and_joined() {
        let e = Endpoint::new(settings("http://127.0.0.1:8080/v1/")).unwrap();
        assert_eq!(e.url.as_str(), "http://127.0.0.1:8080/v1/chat/completions");
        let e = Endpoint::new(settings("https://api.example.invalid/v1")).unwrap();
        assert_eq!(e.url.as_str(), "https://api.example.invalid/v1/chat/completions");
        for bad in ["", "127.0.0.1:8080", "ftp://host/v1", "http://user:pw@host/v1", "not a url"] {
            assert!(Endpoint::new(settings(bad)).is_err(), "{bad}");
        }
        let mut zero = settings("http://h/v1");
        zero.concurrency = 0;
        assert!(Endpoint::new(zero).unwrap_err().to_string().contains("concurrency"));
    }

    #[test]
    fn cooldown_grows_and_resets() {
        let policy = RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        };
        let e = Endpoint::new(settings("http://h/v1")).unwrap();
        let now = Instant::now();
        assert!(e.cooling_until(now).is_none());
        e.record_failure(&FailureKind::Client(400), None, &policy);
        assert!(e.cooling_until(Instant::now()).is_none(), "a client error says nothing of health");
        for _ in 0..4 {
            e.record_failure(&FailureKind::Server(500), None, &policy);
        }
        // The 4th consecutive failure cools for 400..800 ms.
        let left = e.cooling_until(Instant::now()).unwrap() - Instant::now();
        assert!(left > Duration::from_millis(350) && left <= Duration::from_millis(800), "{left:?}");
        e.record_failure(&FailureKind::RateLimited, Some(Duration::from_secs(5)), &policy);
        assert!(e.cooling_until(Instant::now()).unwrap() - Instant::now() > Duration::from_secs(4));
        e.record_success(false);
        assert!(e.cooling_until(Instant::now()).is_none());
        let stats = e.stats();
        assert_eq!(stats.failures.get("server_500"), Some(&4));
        assert_eq!(stats.failures.get("client_400"), Some(&1));
        assert_eq!(stats.ok, 1);
    }
}
