//! `sagert status RUN_DIR`: calls, cache hits, tokens, cost and failures per
//! role, work items per stage, and why the run stopped.

use std::collections::BTreeMap;

use sagert_store::{ItemState, RoleStats, Store};
use serde::Serialize;

use crate::error::EngineError;

/// What `sagert status` shows.
#[derive(Clone, Debug, Serialize)]
pub struct RunStatus {
    /// The store's path.
    pub store: String,
    /// Per role that made or was answered any call.
    pub roles: Vec<RoleStats>,
    /// Items per stage and state.
    pub stages: BTreeMap<String, BTreeMap<ItemState, u64>>,
    /// Why the last session stopped early, if it did.
    pub stop_reason: Option<String>,
}

/// Read a run's status from its store.
pub fn run_status(store: &Store) -> Result<RunStatus, EngineError> {
    let mut stages = BTreeMap::new();
    for stage in store.stages()? {
        let counts = store.count_items(&stage)?;
        stages.insert(stage, counts);
    }
    Ok(RunStatus {
        store: store.path().display().to_string(),
        roles: store.role_stats()?,
        stages,
        stop_reason: store.meta("stop_reason")?,
    })
}

/// The status as text.
pub fn render_status(s: &RunStatus) -> String {
    let mut out = format!("run store: {}\n\n", s.store);
    out += &format!(
        "{:<17} {:>8} {:>10} {:>12} {:>12} {:>11} {:>9}\n",
        "role", "calls", "cache hits", "prompt tok", "complet tok", "cost USD", "failures"
    );
    let mut total = RoleStats {
        role: sagert_backend::ModelRole::Target,
        calls: 0,
        cache_hits: 0,
        prompt_tokens: 0,
        completion_tokens: 0,
        cost_usd: 0.0,
        failures: 0,
        failures_by_label: BTreeMap::new(),
    };
    for r in &s.roles {
        out += &format!(
            "{:<17} {:>8} {:>10} {:>12} {:>12} {:>11.4} {:>9}\n",
            r.role.as_str(),
            r.calls,
            r.cache_hits,
            r.prompt_tokens,
            r.completion_tokens,
            r.cost_usd,
            r.failures
        );
        total.calls += r.calls;
        total.cache_hits += r.cache_hits;
        total.prompt_tokens += r.prompt_tokens;
        total.completion_tokens += r.completion_tokens;
        total.cost_usd += r.cost_usd;
        total.failures += r.failures;
        for (label, n) in &r.failures_by_label {
            *total.failures_by_label.entry(format!("{}: {label}", r.role)).or_default() += n;
        }
    }
    if s.roles.is_empty() {
        out += "(no model calls yet)\n";
    } else {
        out += &format!(
            "{:<17} {:>8} {:>10} {:>12} {:>12} {:>11.4} {:>9}\n",
            "total",
            total.calls,
            total.cache_hits,
            total.prompt_tokens,
            total.completion_tokens,
            total.cost_usd,
            total.failures
        );
    }
    if !total.failures_by_label.is_empty() {
        out += "\nfailures by reason:\n";
        for (label, n) in &total.failures_by_label {
            out += &format!("  {label}: {n}\n");
        }
    }
    if !s.stages.is_empty() {
        out += "\nwork items:\n";
        for (stage, counts) in &s.stages {
            let parts: Vec<String> =
                counts.iter().map(|(state, n)| format!("{n} {}", state.as_str())).collect();
            out += &format!("  {stage}: {}\n", parts.join(", "));
        }
    }
    if let Some(reason) = &s.stop_reason {
        out += &format!("\nstopped early: {reason}\n");
    }
    out
}
