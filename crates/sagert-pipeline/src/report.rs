//! The run report: per-stage counts, failures with reasons, tokens and cost,
//! dedup rates, diversity and coverage. Written as `RUN_DIR/report.md` and
//! kept in the store (meta key [`REPORT_META_KEY`]) for `sagert status`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sagert_store::{ItemState, Store};
use serde::{Deserialize, Serialize};

use crate::assemble::{Coverage, DedupStats};
use crate::run::StepUsage;
use crate::PipelineError;

/// The store's metadata key that holds the last report (JSON).
pub const REPORT_META_KEY: &str = "generate_report";

/// One stage's line of the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageRow {
    /// The stage.
    pub stage: String,
    /// Items done.
    pub done: u64,
    /// Items failed (tried again by the next run).
    pub failed: u64,
    /// Items dropped (failed validation, duplicates, over quota).
    pub dropped: u64,
    /// Items left pending (a budget stop).
    pub pending: u64,
    /// Tokens and calls of the stage's done items.
    pub usage: StepUsage,
}

/// Diversity of the final prompts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Diversity {
    /// Distinct unigrams over all unigrams.
    pub distinct_1: f64,
    /// Distinct bigrams over all bigrams.
    pub distinct_2: f64,
    /// Sampled Self-BLEU-4 (lower is more diverse); absent below 2 prompts.
    pub self_bleu: Option<f64>,
    /// Prompts the Self-BLEU sample held.
    pub self_bleu_sample: u64,
    /// Mean pairwise embedding cosine distance per leaf path.
    pub embedding_distance: BTreeMap<String, Option<f64>>,
}

/// The whole report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The run's name.
    pub run_name: String,
    /// The judge's name.
    pub judge: String,
    /// One row per stage, in pipeline order.
    pub stages: Vec<StageRow>,
    /// Failure and drop reasons per stage: reason (up to its first `:`) → count.
    pub failures: Reasons,
    /// Per role: calls paid, cache hits, tokens, cost (from the call store).
    pub roles: Vec<RoleRow>,
    /// Dedup.
    pub dedup: DedupStats,
    /// Pairs removed by the balance quotas.
    pub balanced_out: u64,
    /// Diversity of the exported prompts.
    pub diversity: Diversity,
    /// Coverage of the leaf × type grid.
    pub coverage: Coverage,
    /// Rows per split.
    pub splits: BTreeMap<String, u64>,
    /// Where the dataset was written, if it was.
    pub dataset_dir: Option<String>,
    /// Set when the budget stopped the run.
    pub stopped_by_budget: Option<String>,
}

/// One role's spend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoleRow {
    /// The role.
    pub role: String,
    /// Distinct calls paid for.
    pub calls: u64,
    /// Answers from the call store.
    pub cache_hits: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cost in US dollars.
    pub cost_usd: f64,
    /// Calls that failed for good.
    pub failures: u64,
}

/// Failure and drop reasons per stage: reason → count.
pub type Reasons = BTreeMap<String, BTreeMap<String, u64>>;

/// Per-stage rows and failure reasons from the store's items.
pub fn stage_rows(store: &Store, stages: &[&str]) -> Result<(Vec<StageRow>, Reasons), PipelineError> {
    let mut rows = Vec::new();
    let mut failures = BTreeMap::new();
    for &stage in stages {
        let mut row = StageRow { stage: stage.to_string(), ..StageRow::default() };
        let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
        for item in store.items(stage, None)? {
            match item.state {
                ItemState::Done => {
                    row.done += 1;
                    if let Some(u) = item.payload.get("usage") {
                        if let Ok(u) = serde_json::from_value::<StepUsage>(u.clone()) {
                            row.usage.prompt_tokens += u.prompt_tokens;
                            row.usage.completion_tokens += u.completion_tokens;
                            row.usage.calls += u.calls;
                            row.usage.cached_calls += u.cached_calls;
                        }
                    }
                }
                ItemState::Failed => row.failed += 1,
                ItemState::Dropped => row.dropped += 1,
                ItemState::Pending | ItemState::Running => row.pending += 1,
            }
            if let Some(e) = &item.error {
                if matches!(item.state, ItemState::Failed | ItemState::Dropped) {
                    *reasons.entry(reason_key(e)).or_default() += 1;
                }
            }
        }
        if !reasons.is_empty() {
            failures.insert(stage.to_string(), reasons);
        }
        rows.push(row);
    }
    Ok((rows, failures))
}

/// A reason's group: the text before its first `:` (`failed validation:
/// chosen_unsafe` keeps its checks), ids and numbers stripped.
fn reason_key(reason: &str) -> String {
    if let Some(rest) = reason.strip_prefix("failed validation: ") {
        let checks = rest.split(" (after").next().unwrap_or(rest);
        return format!("failed validation: {checks}");
    }
    if let Some(i) = reason.find(" duplicate of ") {
        return reason[..i + " duplicate".len()].to_string();
    }
    if reason.starts_with("over the quota") {
        return "over the quota".into();
    }
    reason.split(':').next().unwrap_or(reason).trim().to_string()
}

/// Per-role rows from the call store.
pub fn role_rows(store: &Store) -> Result<Vec<RoleRow>, PipelineError> {
    Ok(store
        .role_stats()?
        .into_iter()
        .map(|r| RoleRow {
            role: r.role.to_string(),
            calls: r.calls,
            cache_hits: r.cache_hits,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cost_usd: r.cost_usd,
            failures: r.failures,
        })
        .collect())
}

/// Escape text for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

impl RunReport {
    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Generation report: {}\n", cell(&self.run_name));
        if let Some(reason) = &self.stopped_by_budget {
            let _ = writeln!(
                s,
                "**Stopped by the budget** ({}). Run the same command with a larger budget to go on; \
                 nothing done so far is lost.\n",
                cell(reason)
            );
        }
        if let Some(dir) = &self.dataset_dir {
            let splits: Vec<String> = self.splits.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ =
                writeln!(s, "Dataset: `{}` ({}). Judge: `{}`.\n", dir, splits.join(", "), cell(&self.judge));
        }
        s.push_str("## Stages\n\n| stage | done | failed | dropped | pending | calls | cached | prompt tokens | completion tokens |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.stages {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.stage,
                r.done,
                r.failed,
                r.dropped,
                r.pending,
                r.usage.calls,
                r.usage.cached_calls,
                r.usage.prompt_tokens,
                r.usage.completion_tokens
            );
        }
        s.push_str("\n## Failures and drops\n\n");
        if self.failures.is_empty() {
            s.push_str("None.\n");
        } else {
            s.push_str("| stage | reason | count |\n|---|---|---:|\n");
            for (stage, reasons) in &self.failures {
                for (reason, n) in reasons {
                    let _ = writeln!(s, "| {stage} | {} | {n} |", cell(reason));
                }
            }
        }
        s.push_str("\n## Models, tokens and cost\n\n| role | calls paid | cache hits | prompt tokens | completion tokens | cost (USD) | failed calls |\n|---|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.roles {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.4} | {} |",
                r.role, r.calls, r.cache_hits, r.prompt_tokens, r.completion_tokens, r.cost_usd, r.failures
            );
        }
        let d = &self.dedup;
        let _ = writeln!(
            s,
            "\n## Dedup\n\n{} validated pairs; removed {} exact, {} MinHash-LSH and {} embedding near duplicates; \
             {} kept. Duplicate rate before dedup {}, after {}. {} more removed by the balance quotas.",
            d.before,
            d.exact,
            d.minhash,
            d.embedding,
            d.after,
            pct(d.duplicate_rate_before),
            pct(d.duplicate_rate_after),
            self.balanced_out
        );
        let v = &self.diversity;
        let _ = writeln!(
            s,
            "\n## Diversity of the exported prompts\n\n- distinct-1: {:.3}\n- distinct-2: {:.3}\n- Self-BLEU-4 (sample of {}): {}\n",
            v.distinct_1,
            v.distinct_2,
            v.self_bleu_sample,
            v.self_bleu.map_or("n/a".into(), |b| format!("{b:.3}"))
        );
        s.push_str("| leaf | mean pairwise embedding distance |\n|---|---:|\n");
        for (leaf, dist) in &v.embedding_distance {
            let _ = writeln!(s, "| {leaf} | {} |", dist.map_or("n/a".into(), |d| format!("{d:.3}")));
        }
        let c = &self.coverage;
        let quota = c.quota.map_or("no quota".to_string(), |q| format!("quota {q} per cell"));
        let _ = writeln!(
            s,
            "\n## Coverage\n\n{} of {} leaf × jailbreak-type cells filled; {} at the quota ({quota}).\n",
            c.filled, c.cells, c.at_quota
        );
        if let Some(types) = c.counts.values().next().map(|row| row.keys().cloned().collect::<Vec<_>>()) {
            let _ = writeln!(s, "| leaf | {} |", types.join(" | "));
            let _ = writeln!(s, "|---|{}", "---:|".repeat(types.len()));
            for (leaf, row) in &c.counts {
                let cells: Vec<String> =
                    types.iter().map(|t| row.get(t).copied().unwrap_or(0).to_string()).collect();
                let _ = writeln!(s, "| {leaf} | {} |", cells.join(" | "));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_group_without_ids() {
        assert_eq!(reason_key("raw text too short: 12 words, at least 20 needed"), "raw text too short");
        assert_eq!(
            reason_key("failed validation: chosen_unsafe, rejected_safe (after 3 attempts)"),
            "failed validation: chosen_unsafe, rejected_safe"
        );
        assert_eq!(reason_key("minhash duplicate of a/b/c#t01/blog/0/direct/q0/e0"), "minhash duplicate");
    }

    #[test]
    fn markdown_escapes_cells_and_shows_every_section() {
        let mut r = RunReport { run_name: "x|y".into(), ..RunReport::default() };
        r.stages.push(StageRow { stage: "expand".into(), done: 2, ..StageRow::default() });
        r.failures.insert("extract".into(), [("malformed | output".to_string(), 3)].into());
        let md = r.to_markdown();
        assert!(md.contains("x\\|y") && md.contains("malformed \\| output | 3"));
        for h in ["## Stages", "## Failures", "## Models", "## Dedup", "## Diversity", "## Coverage"] {
            assert!(md.contains(h), "{h}");
        }
    }
}
