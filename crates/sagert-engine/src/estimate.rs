//! `sagert generate --dry-run`: calls, tokens and cost that a configuration
//! implies, per stage, before any call is made.
//!
//! The formula, with L the number of selected leaves and the stage settings of
//! the configuration (per-call token sizes are the constants below; a role's
//! `max_tokens` caps the completion sizes):
//!
//! | stage | role | calls | items out |
//! |---|---|---|---|
//! | expand | expander | L x rounds | topics T = L x rounds x topics_per_round |
//! | seed_instructions | generator | T | T x per_topic |
//! | raw_text | generator | T x formats x samples_per_topic | raw texts R = calls |
//! | extract | generator | R x jailbreak types | queries Q0 = R x types x per_type |
//! | diversify | generator | Q0 x epochs | queries Q = Q0 x (1 + epochs) |
//! | chosen | safe_responder | Q x g (n = chosen_candidates per call) | |
//! | rejected | unsafe_responder | Q x g (n = rejected_candidates per call) | |
//! | validate | judge | Q x (1 + chosen_candidates + rejected_candidates) x g | |
//!
//! where g = 1 + f + f^2 + ... + f^max_regenerations is the expected number of
//! generations per item when a share f (`expected_failure_rate`) of items fail
//! validation and are regenerated. Extraction prompts carry the raw text, so
//! their prompt size includes a raw text's completion size. Dedup and balance
//! make no model calls.

use sagert_backend::ModelRole;
use sagert_config::RunConfig;
use serde::Serialize;

use crate::ledger::Prices;

/// Prompt and completion tokens assumed per call (completion per candidate).
struct Sizes {
    prompt: u64,
    completion: u64,
}

const EXPAND: Sizes = Sizes { prompt: 300, completion: 30 }; // completion per topic asked for
const SEED: Sizes = Sizes { prompt: 250, completion: 60 }; // completion per instruction
const RAW_TEXT: Sizes = Sizes { prompt: 300, completion: 700 };
const EXTRACT: Sizes = Sizes { prompt: 350, completion: 80 }; // + raw text; completion per query
const DIVERSIFY: Sizes = Sizes { prompt: 250, completion: 90 };
const RESPONSE: Sizes = Sizes { prompt: 200, completion: 350 };
const JUDGE: Sizes = Sizes { prompt: 600, completion: 40 };

/// One stage's line of the estimate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageEstimate {
    /// Stage name.
    pub stage: &'static str,
    /// The role that serves it.
    pub role: ModelRole,
    /// The role's model, or `-` when the role is not configured.
    pub model: String,
    /// Model calls.
    pub calls: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// US dollars at the configured price.
    pub cost_usd: f64,
}

/// The whole estimate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// Leaves selected from the taxonomy.
    pub leaves: u64,
    /// Topics after expansion.
    pub topics: u64,
    /// Raw texts.
    pub raw_texts: u64,
    /// Queries after diversification (before validation, dedup and balance).
    pub queries: u64,
    /// Per stage.
    pub stages: Vec<StageEstimate>,
    /// Sum over stages.
    pub total: StageTotals,
    /// Budget limits the estimate would cross, as sentences.
    pub over_budget: Vec<String>,
}

/// Totals of an [`Estimate`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StageTotals {
    /// Model calls.
    pub calls: u64,
    /// Prompt plus completion tokens.
    pub tokens: u64,
    /// US dollars.
    pub cost_usd: f64,
}

/// Estimate a generation run over `leaves` selected leaves.
pub fn estimate(config: &RunConfig, leaves: u64, prices: &Prices) -> Estimate {
    let st = &config.stages;
    let cap = |role: ModelRole, per_candidate: u64| -> u64 {
        match config.roles.get(role).and_then(|r| r.max_tokens) {
            Some(max) => per_candidate.min(u64::from(max)),
            None => per_candidate,
        }
    };
    let f = st.validate.expected_failure_rate;
    let generations: f64 = (0..=st.validate.max_regenerations).map(|k| f.powi(k as i32)).sum();
    let g = |x: u64| (x as f64 * generations).round() as u64;

    let rounds = u64::from(st.expand.rounds);
    let per_round = u64::from(st.expand.topics_per_round);
    let topics = leaves * rounds * per_round;
    let raw_texts = topics * st.raw_text.formats.len() as u64 * u64::from(st.raw_text.samples_per_topic);
    let types = st.extract.jailbreak_types.len() as u64;
    let q0 = raw_texts * types * u64::from(st.extract.per_type);
    let queries = q0 * (1 + u64::from(st.diversify.epochs));
    let chosen_n = u64::from(st.responses.chosen_candidates);
    let rejected_n = u64::from(st.responses.rejected_candidates);
    let raw_completion = cap(ModelRole::Generator, RAW_TEXT.completion);

    let mut stages = Vec::new();
    let mut push = |stage: &'static str, role: ModelRole, calls: u64, prompt: u64, completion: u64| {
        let model = config.roles.get(role).map(|r| r.model.clone()).unwrap_or_else(|| "-".into());
        let usage =
            sagert_backend::Usage { prompt_tokens: calls * prompt, completion_tokens: calls * completion };
        stages.push(StageEstimate {
            stage,
            role,
            cost_usd: prices.cost(&model, usage),
            model,
            calls,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        });
    };
    push(
        "expand",
        ModelRole::Expander,
        leaves * rounds,
        EXPAND.prompt,
        cap(ModelRole::Expander, EXPAND.completion * per_round),
    );
    push(
        "seed_instructions",
        ModelRole::Generator,
        topics,
        SEED.prompt,
        cap(ModelRole::Generator, SEED.completion * u64::from(st.seed_instructions.per_topic)),
    );
    push("raw_text", ModelRole::Generator, raw_texts, RAW_TEXT.prompt, raw_completion);
    push(
        "extract",
        ModelRole::Generator,
        raw_texts * types,
        EXTRACT.prompt + raw_completion,
        cap(ModelRole::Generator, EXTRACT.completion * u64::from(st.extract.per_type)),
    );
    push(
        "diversify",
        ModelRole::Generator,
        q0 * u64::from(st.diversify.epochs),
        DIVERSIFY.prompt,
        cap(ModelRole::Generator, DIVERSIFY.completion),
    );
    push(
        "chosen",
        ModelRole::SafeResponder,
        g(queries),
        RESPONSE.prompt,
        cap(ModelRole::SafeResponder, RESPONSE.completion) * chosen_n,
    );
    push(
        "rejected",
        ModelRole::UnsafeResponder,
        g(queries),
        RESPONSE.prompt,
        cap(ModelRole::UnsafeResponder, RESPONSE.completion) * rejected_n,
    );
    push(
        "validate",
        ModelRole::Judge,
        g(queries * (1 + chosen_n + rejected_n)),
        JUDGE.prompt,
        cap(ModelRole::Judge, JUDGE.completion),
    );

    let total = StageTotals {
        calls: stages.iter().map(|s| s.calls).sum(),
        tokens: stages.iter().map(|s| s.prompt_tokens + s.completion_tokens).sum(),
        cost_usd: stages.iter().map(|s| s.cost_usd).sum(),
    };
    let b = &config.budget;
    let mut over_budget = Vec::new();
    if let Some(max) = b.max_requests.filter(|&m| total.calls > m) {
        over_budget.push(format!("{} calls exceed max_requests = {max}", total.calls));
    }
    if let Some(max) = b.max_tokens.filter(|&m| total.tokens > m) {
        over_budget.push(format!("{} tokens exceed max_tokens = {max}", total.tokens));
    }
    if let Some(max) = b.max_cost_usd.filter(|&m| total.cost_usd > m) {
        over_budget.push(format!("${:.2} exceeds max_cost_usd = {max}", total.cost_usd));
    }
    Estimate { leaves, topics, raw_texts, queries, stages, total, over_budget }
}

/// The estimate as a table.
pub fn render_estimate(e: &Estimate) -> String {
    let mut out = format!(
        "dry run: {} leaves -> {} topics -> {} raw texts -> {} queries (before validation, dedup, balance)\n\n",
        e.leaves, e.topics, e.raw_texts, e.queries
    );
    out += &format!(
        "{:<18} {:<17} {:<24} {:>10} {:>14} {:>14} {:>11}\n",
        "stage", "role", "model", "calls", "prompt tok", "completion tok", "cost USD"
    );
    for s in &e.stages {
        out += &format!(
            "{:<18} {:<17} {:<24} {:>10} {:>14} {:>14} {:>11.4}\n",
            s.stage,
            s.role.as_str(),
            truncate(&s.model, 24),
            s.calls,
            s.prompt_tokens,
            s.completion_tokens,
            s.cost_usd
        );
    }
    out += &format!(
        "{:<18} {:<17} {:<24} {:>10} {:>29} {:>11.4}\n",
        "total",
        "",
        "",
        e.total.calls,
        format!("{} tokens", e.total.tokens),
        e.total.cost_usd
    );
    if e.over_budget.is_empty() {
        out += "\nwithin the configured budget\n";
    } else {
        for line in &e.over_budget {
            out += &format!("\nover budget: {line}; the run would stop there, with everything so far saved");
        }
        out.push('\n');
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('~');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sagert_config::{parse, Price};

    #[test]
    fn counts_follow_the_documented_formula() {
        let cfg = parse(
            "[stages.expand]\nrounds = 2\ntopics_per_round = 3\n[stages.raw_text]\nformats = [\"blog\", \"article\"]\n\
             [stages.extract]\njailbreak_types = [\"direct\", \"role_play\", \"coding_task\"]\n\
             [stages.diversify]\nepochs = 1\n[stages.validate]\nexpected_failure_rate = 0.0\n\
             [stages.responses]\nchosen_candidates = 2\nrejected_candidates = 1\n",
            "t",
        )
        .unwrap();
        let e = estimate(&cfg, 5, &Prices::default());
        assert_eq!(e.topics, 30);
        assert_eq!(e.raw_texts, 60);
        assert_eq!(e.queries, 60 * 3 * 2);
        let calls: Vec<u64> = e.stages.iter().map(|s| s.calls).collect();
        assert_eq!(calls, vec![10, 30, 60, 180, 180, 360, 360, 360 * 4]);
        assert_eq!(e.total.calls, calls.iter().sum::<u64>());
        assert_eq!(e.total.cost_usd, 0.0);
    }

    #[test]
    fn regeneration_prices_and_budget() {
        let mut cfg = parse(
            "[roles.judge]\nmodel = \"j\"\nendpoints = [\"e\"]\nmax_tokens = 10\n[endpoints.e]\nbase_url = \"http://x/v1\"\n\
             [budget]\nmax_requests = 5\n[stages.validate]\nexpected_failure_rate = 0.5\nmax_regenerations = 2\n",
            "t",
        )
        .unwrap();
        cfg.prices.insert("j".into(), Price { input_per_mtok: 1.0, output_per_mtok: 1.0 });
        let prices = Prices(cfg.prices.clone());
        let e = estimate(&cfg, 1, &prices);
        let judge = e.stages.iter().find(|s| s.stage == "validate").unwrap();
        let q = e.queries as f64;
        assert_eq!(judge.calls, (q * 4.0 * 1.75).round() as u64);
        assert_eq!(judge.completion_tokens, judge.calls * 10, "max_tokens caps the completion");
        assert!((judge.cost_usd - (judge.prompt_tokens + judge.completion_tokens) as f64 / 1e6).abs() < 1e-9);
        assert_eq!(e.over_budget.len(), 1);
        assert!(render_estimate(&e).contains("over budget"));
    }
}
