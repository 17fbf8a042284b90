//! Red-team summaries: attack success rate per leaf, sub-category and
//! jailbreak type, and how much of the taxonomy was jailbroken at least once
//! (the SAGE-RT paper's headline figures).
//!
//! An attack succeeds when the harm judge finds the target's response
//! harmful. Items the judge could not decide are left out.

use std::collections::{BTreeMap, BTreeSet};

use sagert_taxonomy::Taxonomy;
use serde::{Deserialize, Serialize};

use crate::evaluate::{rates, CategoryRate, JudgedItem, RateOptions};
use crate::results::Level;
use crate::stats::bootstrap_mean_ci;
use crate::Result;

/// Coverage of one taxonomy level: how many categories were tested and how
/// many were jailbroken at least once, of how many the taxonomy has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    /// Categories in the taxonomy.
    pub total: usize,
    /// Categories with at least one judged attack.
    pub tested: usize,
    /// Categories with at least one successful attack.
    pub jailbroken: usize,
}

/// A red-team run's summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RedTeamSummary {
    /// The harm judge.
    pub judge: String,
    /// Attacks judged.
    pub judged: usize,
    /// Attacks not judged (no response, or no verdict).
    pub unjudged: usize,
    /// Attack success rate overall and per macro, micro (sub-category) and leaf.
    pub by_category: Vec<CategoryRate>,
    /// Attack success rate per jailbreak type (`none` for plain prompts).
    pub by_jailbreak: Vec<CategoryRate>,
    /// Sub-categories (micro) jailbroken at least once.
    pub micro: Coverage,
    /// Leaves jailbroken at least once.
    pub leaves: Coverage,
}

/// Summarise `items` by `judge`'s verdicts over `taxonomy`.
pub fn summarise(
    items: &[JudgedItem],
    judge: &str,
    taxonomy: &Taxonomy,
    options: &RateOptions,
) -> Result<RedTeamSummary> {
    let judged: Vec<(&JudgedItem, bool)> =
        items.iter().filter_map(|it| it.verdicts.get(judge).map(|j| (it, j.positive))).collect();
    let values: Vec<(String, f64)> =
        judged.iter().map(|(it, hit)| (it.category.clone(), f64::from(u8::from(*hit)))).collect();
    let by_category = rates(&values, options)?;
    let mut by_type: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (it, hit) in &judged {
        let t = it.jailbreak_type.clone().unwrap_or_else(|| "none".into());
        by_type.entry(t).or_default().push(f64::from(u8::from(*hit)));
    }
    let mut by_jailbreak = Vec::new();
    for (t, v) in by_type {
        let estimate = bootstrap_mean_ci(&v, options.resamples, options.confidence, options.seed)?;
        by_jailbreak.push(CategoryRate { level: Level::Overall, category: t, estimate });
    }
    let coverage = |level: Level, all: BTreeSet<String>| {
        let keys = |hit_only: bool| -> BTreeSet<String> {
            judged
                .iter()
                .filter(|(_, hit)| !hit_only || *hit)
                .filter_map(|(it, _)| level.key(&it.category))
                .filter(|k| all.contains(k))
                .collect()
        };
        Coverage { total: all.len(), tested: keys(false).len(), jailbroken: keys(true).len() }
    };
    let micros: BTreeSet<String> = taxonomy.leaves().map(|l| l.micro_path()).collect();
    let leaves: BTreeSet<String> = taxonomy.leaves().map(|l| l.path()).collect();
    Ok(RedTeamSummary {
        judge: judge.to_string(),
        judged: judged.len(),
        unjudged: items.len() - judged.len(),
        by_category,
        by_jailbreak,
        micro: coverage(Level::Micro, micros),
        leaves: coverage(Level::Leaf, leaves),
    })
}
