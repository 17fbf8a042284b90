//! The one place that knows every backend: it turns a role's configuration into
//! a backend, and a backend into the run's cached, metered client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use sagert_backend::{ChatBackend, ModelRole, SamplingParams, Secret};
use sagert_config::{EndpointConfig, EndpointKind, RunConfig, StructuredOutput};
use sagert_engine::{Ledger, Prices, RoleClient, Spent};
use sagert_llama::{LlamaBackend, LlamaOptions};
use sagert_openai::{EndpointSettings, OpenAiBackend, RetryPolicy, StructuredMode};
use sagert_store::Store;

/// Embedded engines loaded so far, by endpoint name: roles that share an
/// embedded endpoint share one loaded model.
static EMBEDDED: Mutex<Option<HashMap<String, Arc<LlamaBackend>>>> = Mutex::new(None);

/// The embedded engine of endpoint `name`, loading it (and fetching its model
/// on first use) if no role has yet.
pub fn embedded_backend(
    name: &str,
    ep: &EndpointConfig,
    role_model: &str,
) -> anyhow::Result<Arc<LlamaBackend>> {
    let mut loaded = EMBEDDED.lock().expect("embedded engines lock");
    let map = loaded.get_or_insert_with(HashMap::new);
    if let Some(b) = map.get(name) {
        return Ok(b.clone());
    }
    let model_name = ep.model.clone().unwrap_or_else(|| role_model.to_string());
    let path = match &ep.model_path {
        Some(p) => p.clone(),
        None => {
            let known = sagert_models::known(&model_name).with_context(|| {
                format!(
                    "endpoint `{name}`: `{model_name}` is not a known model (see `sagert models list`); \
                     set model_path to load a GGUF file"
                )
            })?;
            crate::cmd::model_cache()?.ensure(known.name)?.join(known.main_file())
        }
    };
    let path =
        if sagert_convert::is_hf_model_dir(&path) { converted_gguf(name, &path, ep.threads)? } else { path };
    let options = LlamaOptions {
        model_id: role_model.to_string(),
        threads: ep.threads,
        context_per_sequence: ep.context_per_sequence,
        max_sequences: ep.concurrency,
        gpu_layers: ep.gpu_layers,
        prefix_cache: ep.prefix_cache,
        kv_cache_f32: ep.kv_cache == sagert_config::KvCacheType::F32,
        // `prompt` asks for unconstrained, prompted JSON (to measure what
        // constrained decoding buys, or for models whose vocabulary trips it).
        constrained_decoding: ep.structured_output != StructuredOutput::Prompt,
        ..LlamaOptions::default()
    };
    if ep.gpu_layers > 0 && !cfg!(feature = "cuda") {
        anyhow::bail!(
            "endpoint `{name}`: gpu_layers = {} needs a GPU build: cargo build --release --features cuda",
            ep.gpu_layers
        );
    }
    let backend = LlamaBackend::load(&path, options)
        .with_context(|| format!("endpoint `{name}`: cannot load {}", path.display()))?;
    let backend = Arc::new(backend);
    map.insert(name.to_string(), backend.clone());
    Ok(backend)
}

/// A transformers directory (`model_path` with a config.json, e.g. the trainer's
/// output) as GGUF: converted once to F16 into `converted/` beside the model
/// cache, keyed by the directory's contents (`sagert_convert::source_key`: the
/// JSON files' bytes and each safetensors file's size and modification time),
/// and reused while they stay the same.
fn converted_gguf(name: &str, dir: &std::path::Path, threads: usize) -> anyhow::Result<std::path::PathBuf> {
    let cache = crate::cmd::model_cache()?;
    let root = cache.root();
    let converted = root.parent().unwrap_or(root).join("converted");
    let bar = crate::cmd::conversion_bar(&format!("endpoint `{name}`: converting {}", dir.display()));
    let progress = |p: sagert_convert::Progress<'_>| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
    };
    let options = sagert_convert::Options { threads, progress: Some(&progress) };
    let path = sagert_convert::convert_cached(dir, &converted, sagert_convert::GgufDtype::F16, &options)
        .with_context(|| format!("endpoint `{name}`: cannot convert {} to GGUF", dir.display()))?;
    bar.finish_and_clear();
    Ok(path)
}

/// The backend configured for `role`.
pub fn role_backend(config: &RunConfig, role: ModelRole) -> anyhow::Result<Arc<dyn ChatBackend>> {
    let Some(rc) = config.roles.get(role) else {
        bail!("the configuration has no [roles.{role}] section; this command needs one");
    };
    let mut endpoints = Vec::with_capacity(rc.endpoints.len());
    for name in &rc.endpoints {
        let ep = config
            .endpoints
            .get(name)
            .with_context(|| format!("roles.{role}: no endpoint named `{name}`"))?;
        if ep.kind == EndpointKind::Embedded {
            if rc.endpoints.len() > 1 {
                bail!("roles.{role}: an embedded endpoint (`{name}`) must be the role's only endpoint");
            }
            return Ok(embedded_backend(name, ep, &rc.model)?);
        }
        let api_key = match &ep.api_key_env {
            Some(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(Secret::new(v)),
                _ => bail!("endpoint `{name}` reads its API key from ${var}, which is not set"),
            },
            None => None,
        };
        let mut s = EndpointSettings::new(name.clone(), ep.base_url.clone());
        s.api_key = api_key;
        s.model = ep.model.clone();
        s.concurrency = ep.concurrency;
        s.requests_per_minute = ep.requests_per_minute;
        s.tokens_per_minute = ep.tokens_per_minute;
        s.timeout = Duration::from_secs_f64(ep.timeout_secs);
        s.connect_timeout = Duration::from_secs_f64(ep.connect_timeout_secs);
        s.structured_output = match ep.structured_output {
            StructuredOutput::Auto => StructuredMode::Auto,
            StructuredOutput::JsonSchema => StructuredMode::JsonSchema,
            StructuredOutput::JsonObject => StructuredMode::JsonObject,
            StructuredOutput::Prompt => StructuredMode::Prompt,
        };
        endpoints.push(s);
    }
    let retry = RetryPolicy {
        max_retries: config.retry.max_retries,
        base_delay: Duration::from_millis(config.retry.base_delay_ms),
        max_delay: Duration::from_millis(config.retry.max_delay_ms),
    };
    let backend = OpenAiBackend::new(rc.model.clone(), endpoints, retry)
        .with_context(|| format!("cannot set up the backend of role {role}"))?;
    Ok(Arc::new(backend))
}

/// The most calls a role's endpoints take in flight together.
pub fn role_concurrency(config: &RunConfig, role: ModelRole) -> usize {
    config
        .roles
        .get(role)
        .map(|rc| rc.endpoints.iter().filter_map(|e| config.endpoints.get(e)).map(|e| e.concurrency).sum())
        .unwrap_or(1)
        .max(1)
}

/// The run's ledger, starting from what the store says was already spent.
pub fn ledger(config: &RunConfig, store: &Store) -> anyhow::Result<Arc<Ledger>> {
    let mut already = Spent::default();
    for r in store.role_stats()? {
        already.requests += r.calls + r.failures;
        already.tokens += r.prompt_tokens + r.completion_tokens;
        already.cost_usd += r.cost_usd;
    }
    Ok(Arc::new(Ledger::new(config.budget.clone(), Prices(config.prices.clone()), already)))
}

/// The cached, metered client of `role`.
pub fn role_client(
    config: &RunConfig,
    role: ModelRole,
    store: Arc<Store>,
    ledger: Arc<Ledger>,
) -> anyhow::Result<Arc<RoleClient>> {
    let backend = role_backend(config, role)?;
    let rc = config.roles.get(role).expect("role_backend checked the role");
    let defaults = SamplingParams {
        temperature: rc.temperature,
        top_p: rc.top_p,
        max_tokens: rc.max_tokens,
        seed: Some(config.run.seed),
        ..SamplingParams::default()
    };
    Ok(Arc::new(RoleClient::new(role, backend, store, ledger, defaults)))
}
