//! The records the pipeline produces and exports.

use serde::{Deserialize, Serialize};

/// The judge's verdicts on one preference pair. Scores are in [0, 1]; each
/// `bool` is the verdict the run acted on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdicts {
    /// The query asks for something harmful.
    pub query_harmful: bool,
    /// The query belongs to its leaf category.
    pub query_in_category: bool,
    /// The chosen response is safe.
    pub chosen_safe: bool,
    /// The chosen response is not an over-refusal (it engages where it safely can).
    pub chosen_not_over_refusal: bool,
    /// The rejected response is unsafe.
    pub rejected_unsafe: bool,
    /// Harm score of the query.
    pub query_harm_score: f64,
    /// Harm score of the chosen response.
    pub chosen_harm_score: f64,
    /// Refusal score of the chosen response.
    pub chosen_refusal_score: f64,
    /// Harm score of the rejected response.
    pub rejected_harm_score: f64,
}

impl Verdicts {
    /// Whether the pair passes validation.
    pub fn passed(&self) -> bool {
        self.query_harmful
            && self.query_in_category
            && self.chosen_safe
            && self.chosen_not_over_refusal
            && self.rejected_unsafe
    }

    /// The names of the checks that failed, for failure reasons and reports.
    pub fn failed_checks(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (ok, name) in [
            (self.query_harmful, "query_not_harmful"),
            (self.query_in_category, "query_off_category"),
            (self.chosen_safe, "chosen_unsafe"),
            (self.chosen_not_over_refusal, "chosen_over_refusal"),
            (self.rejected_unsafe, "rejected_safe"),
        ] {
            if !ok {
                out.push(name);
            }
        }
        out
    }
}

/// One validated preference pair with its provenance: a row of the dataset.
///
/// Field order is the column order of every export.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairRecord {
    /// Stable id: the pipeline item id it came from.
    pub id: String,
    /// The (jailbreak) prompt.
    pub prompt: String,
    /// The safe response.
    pub chosen: String,
    /// The unsafe response.
    pub rejected: String,
    /// `macro/micro/leaf`.
    pub taxonomy_path: String,
    /// Macro category id.
    pub macro_category: String,
    /// Micro category id (ALERT's micro key).
    pub micro_category: String,
    /// Leaf id.
    pub leaf: String,
    /// The concrete topic the item was conditioned on.
    pub topic: String,
    /// The topic's id (`leaf path#index`): train and test never share one.
    pub topic_id: String,
    /// One of the nine jailbreak types.
    pub jailbreak_type: String,
    /// The raw-text format the query was mined from.
    pub raw_text_format: String,
    /// Diversification epoch: 0 for the extracted query, n for the n-th rewrite.
    pub epoch: u32,
    /// Model id of the expander role.
    pub expander_model: String,
    /// Model id of the generator role.
    pub generator_model: String,
    /// Model id of the safe responder.
    pub safe_responder_model: String,
    /// Model id (or `raw_text`) of the rejected response's source.
    pub unsafe_responder_model: String,
    /// The judge's name (`classifier` or an LLM's model id).
    pub judge: String,
    /// The run seed.
    pub seed: u64,
    /// The judge's verdicts.
    pub verdicts: Verdicts,
}

/// One red-team prompt: a query with its categories, no responses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RedTeamPrompt {
    /// Same id as the pair it comes from.
    pub id: String,
    /// The prompt.
    pub prompt: String,
    /// `macro/micro/leaf`.
    pub taxonomy_path: String,
    /// Macro category id.
    pub macro_category: String,
    /// Micro category id.
    pub micro_category: String,
    /// Leaf id.
    pub leaf: String,
    /// One of the nine jailbreak types.
    pub jailbreak_type: String,
    /// The split the prompt's pair is in (`train` or `test`).
    pub split: String,
}

impl From<(&PairRecord, &str)> for RedTeamPrompt {
    fn from((p, split): (&PairRecord, &str)) -> Self {
        RedTeamPrompt {
            id: p.id.clone(),
            prompt: p.prompt.clone(),
            taxonomy_path: p.taxonomy_path.clone(),
            macro_category: p.macro_category.clone(),
            micro_category: p.micro_category.clone(),
            leaf: p.leaf.clone(),
            jailbreak_type: p.jailbreak_type.clone(),
            split: split.to_string(),
        }
    }
}

/// What produced a dataset: written as `manifest.json` beside it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The run's name.
    pub run_name: String,
    /// sagert's version.
    pub sagert_version: String,
    /// SHA-256 of the resolved configuration (canonical JSON).
    pub config_hash: String,
    /// SHA-256 of each prompt template, by name.
    pub template_hashes: std::collections::BTreeMap<String, String>,
    /// Model id per role (and `judge`).
    pub models: std::collections::BTreeMap<String, String>,
    /// The run seed.
    pub seed: u64,
    /// The taxonomy's name and version.
    pub taxonomy: String,
    /// Rows per split.
    pub splits: std::collections::BTreeMap<String, u64>,
}

/// A dataset ready to write: the splits and what produced them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// Pretty name for the card.
    pub name: String,
    /// Training pairs.
    pub train: Vec<PairRecord>,
    /// Test pairs: their topics never appear in `train`.
    pub test: Vec<PairRecord>,
    /// What produced it.
    pub manifest: Manifest,
}
