//! Counts over a taxonomy: per level, per category and per mapping target.

use serde::Serialize;

use crate::{MappingTarget, Taxonomy};

/// Counts over a whole taxonomy; see [`Taxonomy::stats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaxonomyStats {
    /// The taxonomy's name.
    pub name: String,
    /// The taxonomy's version.
    pub version: String,
    /// The file it was loaded from.
    pub origin: String,
    /// Number of macro categories.
    pub macros: usize,
    /// Number of micro categories.
    pub micros: usize,
    /// Number of leaf categories.
    pub leaves: usize,
    /// Fewest leaves in any micro category.
    pub min_leaves_per_micro: usize,
    /// Most leaves in any micro category.
    pub max_leaves_per_micro: usize,
    /// Per macro category, in file order.
    pub per_macro: Vec<MacroStats>,
    /// Per micro category, in file order.
    pub per_micro: Vec<MicroStats>,
    /// Per mapping target, in [`MappingTarget::ALL`] order.
    pub coverage: Vec<MappingCoverage>,
}

/// Counts for one macro category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MacroStats {
    /// The macro id.
    pub id: String,
    /// Its micro categories.
    pub micros: usize,
    /// Its leaves.
    pub leaves: usize,
}

/// Counts for one micro category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MicroStats {
    /// `macro/micro`.
    pub path: String,
    /// ALERT label, `macro_micro`.
    pub alert_label: String,
    /// Its leaves.
    pub leaves: usize,
}

/// How much of the taxonomy maps to one target, and how much of the target is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappingCoverage {
    /// The target.
    pub target: MappingTarget,
    /// Micro categories with at least one mapping to the target.
    pub mapped_micros: usize,
    /// All micro categories.
    pub total_micros: usize,
    /// Target categories that at least one micro category maps to.
    pub used_categories: usize,
    /// All target categories.
    pub total_categories: usize,
    /// Target categories no micro category maps to, in the target's order.
    pub unused_categories: Vec<String>,
}

impl MappingCoverage {
    fn compute(tax: &Taxonomy, target: MappingTarget) -> MappingCoverage {
        let micros = tax.macros.iter().flat_map(|m| &m.micros);
        let mapped_micros = micros.clone().filter(|u| !u.mappings.get(target).is_empty()).count();
        let categories = target.categories();
        let unused_categories: Vec<String> = categories
            .iter()
            .filter(|category| !micros.clone().any(|u| u.mappings.get(target).iter().any(|v| v == *category)))
            .map(|category| category.to_string())
            .collect();
        MappingCoverage {
            target,
            mapped_micros,
            total_micros: tax.micro_count(),
            used_categories: categories.len() - unused_categories.len(),
            total_categories: categories.len(),
            unused_categories,
        }
    }
}

impl Taxonomy {
    /// Counts per level, leaves per macro and micro category, and mapping coverage.
    pub fn stats(&self) -> TaxonomyStats {
        let per_macro = self
            .macros
            .iter()
            .map(|m| MacroStats {
                id: m.id.clone(),
                micros: m.micros.len(),
                leaves: m.micros.iter().map(|u| u.leaves.len()).sum(),
            })
            .collect();
        let per_micro: Vec<MicroStats> = self
            .macros
            .iter()
            .flat_map(|m| {
                m.micros.iter().map(move |u| MicroStats {
                    path: format!("{}/{}", m.id, u.id),
                    alert_label: u.alert_label(&m.id),
                    leaves: u.leaves.len(),
                })
            })
            .collect();
        TaxonomyStats {
            name: self.name.clone(),
            version: self.version.clone(),
            origin: self.origin.clone(),
            macros: self.macros.len(),
            micros: self.micro_count(),
            leaves: self.leaf_count(),
            min_leaves_per_micro: per_micro.iter().map(|u| u.leaves).min().unwrap_or(0),
            max_leaves_per_micro: per_micro.iter().map(|u| u.leaves).max().unwrap_or(0),
            per_macro,
            per_micro,
            coverage: MappingTarget::ALL.into_iter().map(|t| MappingCoverage::compute(self, t)).collect(),
        }
    }
}
