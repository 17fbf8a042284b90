//! The cached, metered client of one role: the only way the pipeline calls a
//! model.
//!
//! A request is keyed by a content hash ([`sagert_store::cache_key`]); a key
//! already in the store is answered from it, free, with no request sent.
//! Otherwise the call reserves its worst case in the [`Ledger`], goes to the
//! backend, and its response is stored in one transaction before it is
//! returned. Concurrent identical requests are sent once (single flight).
//! Failures are recorded with their reason and returned; they are not cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sagert_backend::{BackendError, ChatBackend, ChatRequest, ChatResponse, ModelRole, SamplingParams};
use sagert_store::{cache_key, CallRecord, FailureRecord, Store};

use crate::error::EngineError;
use crate::ledger::{Ledger, DEFAULT_MAX_TOKENS};

/// A response and where it came from.
#[derive(Clone, Debug)]
pub struct CallOutcome {
    /// The answer.
    pub response: ChatResponse,
    /// Answered from the store, without a request.
    pub cached: bool,
    /// The content hash the call is stored under.
    pub key: String,
}

/// The cached, metered client of one role.
pub struct RoleClient {
    role: ModelRole,
    backend: Arc<dyn ChatBackend>,
    store: Arc<Store>,
    ledger: Arc<Ledger>,
    defaults: SamplingParams,
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl RoleClient {
    /// A client for `role` over `backend`. `defaults` fill the sampling
    /// parameters a request leaves unset (the role's configured temperature,
    /// top_p, max_tokens and the run's seed).
    pub fn new(
        role: ModelRole,
        backend: Arc<dyn ChatBackend>,
        store: Arc<Store>,
        ledger: Arc<Ledger>,
        defaults: SamplingParams,
    ) -> Self {
        RoleClient { role, backend, store, ledger, defaults, in_flight: Mutex::new(HashMap::new()) }
    }

    /// The role this client serves.
    pub fn role(&self) -> ModelRole {
        self.role
    }

    /// The model id of the backend.
    pub fn model_id(&self) -> &str {
        self.backend.model_id()
    }

    /// The request as it will be sent and keyed: unset parameters filled from
    /// the role's defaults.
    pub fn complete_request(&self, request: &ChatRequest) -> ChatRequest {
        let mut r = request.clone();
        let p = &mut r.params;
        let d = &self.defaults;
        p.temperature = p.temperature.or(d.temperature);
        p.top_p = p.top_p.or(d.top_p);
        p.max_tokens = p.max_tokens.or(d.max_tokens);
        p.seed = p.seed.or(d.seed);
        if p.stop.is_empty() {
            p.stop = d.stop.clone();
        }
        r
    }

    /// Answer `request`, from the store if it has been answered before.
    /// `item` names the work item, for failure records.
    pub async fn chat(&self, request: &ChatRequest, item: Option<&str>) -> Result<CallOutcome, EngineError> {
        let request = self.complete_request(request);
        let model = self.backend.model_id().to_string();
        let key = cache_key(&model, &request);
        if let Some(hit) = self.store.get_call(&key)? {
            return Ok(CallOutcome { response: hit.response, cached: true, key: key.0 });
        }

        // Single flight: one request per key at a time; the others wait, then
        // find the answer in the store.
        let gate = {
            let mut map = self.in_flight.lock().expect("in-flight lock");
            map.entry(key.0.clone()).or_default().clone()
        };
        let result = {
            let _guard = gate.lock().await;
            match self.store.get_call(&key)? {
                Some(hit) => Ok(CallOutcome { response: hit.response, cached: true, key: key.0.clone() }),
                None => self.call_and_store(&model, &request, &key, item).await,
            }
        };
        {
            let mut map = self.in_flight.lock().expect("in-flight lock");
            if Arc::strong_count(&gate) <= 2 {
                map.remove(&key.0);
            }
        }
        result
    }

    async fn call_and_store(
        &self,
        model: &str,
        request: &ChatRequest,
        key: &sagert_store::CallKey,
        item: Option<&str>,
    ) -> Result<CallOutcome, EngineError> {
        let max_completion = request.params.max_tokens.map(u64::from).unwrap_or(DEFAULT_MAX_TOKENS)
            * u64::from(request.params.n.max(1));
        let reservation = self
            .ledger
            .reserve(model, request.estimated_prompt_tokens(), max_completion)
            .map_err(BackendError::Budget)?;
        let started = Instant::now();
        match self.backend.chat(request).await {
            Ok(response) => {
                let cost_usd = self.ledger.settle(reservation, model, response.usage);
                let record = CallRecord {
                    key: key.clone(),
                    role: self.role,
                    model: model.to_string(),
                    endpoint: response.model.clone(),
                    request: request.clone(),
                    response: response.clone(),
                    latency_ms: started.elapsed().as_millis() as u64,
                    attempts: 1,
                    cost_usd,
                };
                self.store.put_call(&record)?;
                Ok(CallOutcome { response, cached: false, key: key.0.clone() })
            }
            Err(err) => {
                self.ledger.release(reservation);
                let attempts = match &err {
                    BackendError::Request { attempts, .. } => *attempts,
                    _ => 1,
                };
                self.store.record_failure(&FailureRecord {
                    role: self.role,
                    key: Some(key.clone()),
                    model: model.to_string(),
                    label: err.label(),
                    message: err.to_string(),
                    attempts,
                    elapsed_ms: started.elapsed().as_millis() as u64,
                    item: item.map(str::to_string),
                    at_unix_ms: now_ms(),
                })?;
                Err(err.into())
            }
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
