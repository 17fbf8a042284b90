//! The rows a study or an evaluation produces: one per cell × metric × category.
//!
//! `results.parquet` and `results.jsonl` hold these rows, and the HTML report
//! is drawn from them alone.

use serde::{Deserialize, Serialize};

/// The level of a category key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// All items (category `all`).
    Overall,
    /// The macro category (`crime`).
    Macro,
    /// The micro category (`crime/cyber`).
    Micro,
    /// The leaf (`crime/cyber/malware`).
    Leaf,
}

impl Level {
    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Level::Overall => "overall",
            Level::Macro => "macro",
            Level::Micro => "micro",
            Level::Leaf => "leaf",
        }
    }

    /// The key of taxonomy path `path` (`macro/micro/leaf`, or a shorter
    /// prefix) at this level: `all` overall, else the path's first one, two or
    /// three segments; `None` when the path is shorter than the level asks
    /// (a micro path has no leaf key).
    pub fn key(self, path: &str) -> Option<String> {
        let take = match self {
            Level::Overall => return Some("all".to_string()),
            Level::Macro => 1,
            Level::Micro => 2,
            Level::Leaf => 3,
        };
        let parts: Vec<&str> = path.split('/').collect();
        (parts.len() >= take && parts[..take].iter().all(|p| !p.is_empty())).then(|| parts[..take].join("/"))
    }
}

/// One measured value: a metric of one cell over one category, with its
/// bootstrap 95% confidence interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// The cell's name (`base`, `sage-n200`, ...).
    pub cell: String,
    /// The base model.
    pub base_model: String,
    /// The alignment dataset (`""` for the base model).
    pub dataset: String,
    /// Training pairs (0 for the base model).
    pub size: u64,
    /// The alignment method (`dpo`, `simpo`, `orpo`; `none` for the base model).
    pub method: String,
    /// The metric (`harmful_rate`, `over_refusal`, `toxicity`, `acc`, `acc_norm`, `perplexity`, ...).
    pub metric: String,
    /// The evaluation set the metric was measured on.
    pub eval_set: String,
    /// The category level.
    pub level: Level,
    /// The category key (`all` overall).
    pub category: String,
    /// The value.
    pub value: f64,
    /// Lower end of the 95% confidence interval.
    pub lo: f64,
    /// Upper end of the 95% confidence interval.
    pub hi: f64,
    /// Items measured.
    pub n: u64,
    /// The judge that produced the verdicts, if the metric is judged.
    pub judge: Option<String>,
    /// The judge's measured accuracy against human labels, if calibrated.
    pub judge_accuracy: Option<f64>,
    /// The judge's measured Cohen's kappa against human labels, if calibrated.
    pub judge_kappa: Option<f64>,
}

/// What identifies a cell of a study (or one evaluated model).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellInfo {
    /// The cell's name.
    pub cell: String,
    /// The base model.
    pub base_model: String,
    /// The alignment dataset (`""` for none).
    pub dataset: String,
    /// Training pairs (0 for none).
    pub size: u64,
    /// The alignment method (`none` for none).
    pub method: String,
}

/// The judge behind a judged metric, with its measured agreement if calibrated.
#[derive(Clone, Debug, PartialEq)]
pub struct JudgeInfo {
    /// The judge's name.
    pub name: String,
    /// Its accuracy against human labels.
    pub accuracy: Option<f64>,
    /// Its Cohen's kappa against human labels.
    pub kappa: Option<f64>,
}

impl CellInfo {
    /// One row per category rate of `metric` on `eval_set`.
    pub fn rows(
        &self,
        metric: &str,
        eval_set: &str,
        rates: &[crate::evaluate::CategoryRate],
        judge: Option<&JudgeInfo>,
    ) -> Vec<ResultRow> {
        rates
            .iter()
            .map(|r| ResultRow {
                cell: self.cell.clone(),
                base_model: self.base_model.clone(),
                dataset: self.dataset.clone(),
                size: self.size,
                method: self.method.clone(),
                metric: metric.to_string(),
                eval_set: eval_set.to_string(),
                level: r.level,
                category: r.category.clone(),
                value: r.estimate.value,
                lo: r.estimate.lo,
                hi: r.estimate.hi,
                n: r.estimate.n as u64,
                judge: judge.map(|j| j.name.clone()),
                judge_accuracy: judge.and_then(|j| j.accuracy),
                judge_kappa: judge.and_then(|j| j.kappa),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_by_level() {
        assert_eq!(Level::Overall.key("crime/cyber/malware").as_deref(), Some("all"));
        assert_eq!(Level::Macro.key("crime/cyber/malware").as_deref(), Some("crime"));
        assert_eq!(Level::Micro.key("crime/cyber/malware").as_deref(), Some("crime/cyber"));
        assert_eq!(Level::Leaf.key("crime/cyber/malware").as_deref(), Some("crime/cyber/malware"));
        assert_eq!(Level::Leaf.key("crime/cyber"), None);
        assert_eq!(Level::Micro.key("unmapped"), None);
        assert_eq!(Level::Macro.key("unmapped").as_deref(), Some("unmapped"));
    }
}
