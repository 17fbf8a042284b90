//! The validated taxonomy: macro, micro and leaf categories, and the queries on them.

use std::path::Path;
use std::sync::OnceLock;

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::error::edit_distance;
use crate::{MappingTarget, TaxonomyError};

/// The built-in taxonomy's source, as embedded in the binary.
pub const BUILTIN_SOURCE: &str = include_str!("../data/alert-sage.toml");

/// The file name the built-in taxonomy reports as its origin.
pub const BUILTIN_ORIGIN: &str = "alert-sage.toml";

/// A harm taxonomy: macro categories, each with micro categories, each with leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Taxonomy {
    /// Short name, e.g. `alert-sage`.
    pub name: String,
    /// Version string as written in the file (empty when absent).
    pub version: String,
    /// One-line description (empty when absent).
    pub description: String,
    /// Macro categories in file order.
    pub macros: Vec<MacroCategory>,
    /// The file name the taxonomy was loaded from.
    pub origin: String,
}

/// A top-level category such as ALERT's `crime`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MacroCategory {
    /// Id, unique in the taxonomy.
    pub id: String,
    /// Human name.
    pub name: String,
    /// One-line description.
    pub description: String,
    /// Micro categories in file order.
    pub micros: Vec<MicroCategory>,
}

/// A second-level category such as ALERT's `crime_cyber`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MicroCategory {
    /// Id, unique in its macro category (ALERT's micro key).
    pub id: String,
    /// Human name.
    pub name: String,
    /// One-line description.
    pub description: String,
    /// Categories of neighbouring taxonomies this one corresponds to.
    pub mappings: Mappings,
    /// Leaf categories in file order.
    pub leaves: Vec<Leaf>,
}

/// A micro category's mappings to neighbouring taxonomies; empty lists mean unmapped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Mappings {
    /// PKU-SafeRLHF categories ([`crate::PKU_CATEGORIES`]).
    pub pku: Vec<String>,
    /// HarmBench semantic categories ([`crate::HARMBENCH_CATEGORIES`]).
    pub harmbench: Vec<String>,
    /// MLCommons hazard codes ([`crate::MLCOMMONS_HAZARDS`]).
    pub mlcommons: Vec<String>,
}

/// A leaf category: the unit later stages expand into topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leaf {
    /// Id, unique in its micro category.
    pub id: String,
    /// Human name.
    pub name: String,
    /// One-line neutral description of the harm area.
    pub description: String,
}

/// A leaf together with the categories above it.
///
/// Serialises as a flat record (`path`, `alert_label`, the three ids, the leaf's name
/// and description), not as the whole parent categories.
#[derive(Debug, Clone, Copy)]
pub struct LeafRef<'a> {
    /// The leaf's macro category.
    pub macro_cat: &'a MacroCategory,
    /// The leaf's micro category.
    pub micro: &'a MicroCategory,
    /// The leaf itself.
    pub leaf: &'a Leaf,
}

impl MicroCategory {
    /// ALERT's label for this micro category: `{macro}_{micro}`, e.g. `crime_cyber`.
    pub fn alert_label(&self, macro_id: &str) -> String {
        format!("{macro_id}_{}", self.id)
    }
}

impl Mappings {
    /// The list for one target.
    pub fn get(&self, target: MappingTarget) -> &[String] {
        match target {
            MappingTarget::Pku => &self.pku,
            MappingTarget::Harmbench => &self.harmbench,
            MappingTarget::Mlcommons => &self.mlcommons,
        }
    }
}

impl LeafRef<'_> {
    /// The leaf's path, `macro/micro/leaf`.
    pub fn path(&self) -> String {
        format!("{}/{}/{}", self.macro_cat.id, self.micro.id, self.leaf.id)
    }

    /// The path of the leaf's micro category, `macro/micro`.
    pub fn micro_path(&self) -> String {
        format!("{}/{}", self.macro_cat.id, self.micro.id)
    }

    /// ALERT's label of the leaf's micro category, e.g. `crime_cyber`.
    pub fn alert_label(&self) -> String {
        self.micro.alert_label(&self.macro_cat.id)
    }
}

impl PartialEq for LeafRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.macro_cat.id == other.macro_cat.id
            && self.micro.id == other.micro.id
            && self.leaf.id == other.leaf.id
    }
}

impl Serialize for LeafRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("LeafRef", 7)?;
        s.serialize_field("path", &self.path())?;
        s.serialize_field("alert_label", &self.alert_label())?;
        s.serialize_field("macro", &self.macro_cat.id)?;
        s.serialize_field("micro", &self.micro.id)?;
        s.serialize_field("leaf", &self.leaf.id)?;
        s.serialize_field("name", &self.leaf.name)?;
        s.serialize_field("description", &self.leaf.description)?;
        s.end()
    }
}

impl Taxonomy {
    /// The built-in ALERT-based taxonomy (6 macro, 32 micro, 285 leaf categories).
    ///
    /// # Panics
    ///
    /// Never in practice: the embedded file is checked by this crate's tests.
    pub fn builtin() -> Taxonomy {
        static BUILTIN: OnceLock<Taxonomy> = OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                Taxonomy::parse(BUILTIN_SOURCE, BUILTIN_ORIGIN)
                    .unwrap_or_else(|err| panic!("the built-in taxonomy is invalid: {err}"))
            })
            .clone()
    }

    /// Reads and validates a taxonomy file.
    pub fn from_path(path: &Path) -> Result<Taxonomy, TaxonomyError> {
        let source = std::fs::read_to_string(path)
            .map_err(|source| TaxonomyError::Io { path: path.to_path_buf(), source })?;
        let origin =
            path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
        Taxonomy::parse(&source, &origin)
    }

    /// Parses and validates a taxonomy from TOML text; `origin` names the file in errors.
    pub fn parse(source: &str, origin: &str) -> Result<Taxonomy, TaxonomyError> {
        crate::parse::parse(source, origin)
    }

    /// Every leaf, in file order.
    pub fn leaves(&self) -> impl Iterator<Item = LeafRef<'_>> {
        self.macros.iter().flat_map(|macro_cat| {
            macro_cat.micros.iter().flat_map(move |micro| {
                micro.leaves.iter().map(move |leaf| LeafRef { macro_cat, micro, leaf })
            })
        })
    }

    /// Number of micro categories.
    pub fn micro_count(&self) -> usize {
        self.macros.iter().map(|m| m.micros.len()).sum()
    }

    /// Number of leaf categories.
    pub fn leaf_count(&self) -> usize {
        self.macros.iter().flat_map(|m| &m.micros).map(|u| u.leaves.len()).sum()
    }

    /// The leaves under a category.
    ///
    /// `prefix` is empty (everything), a macro id (`crime`), a micro path
    /// (`crime/cyber`), a leaf path (`crime/cyber/account_takeover`) or an ALERT label
    /// (`crime_cyber`). Matching ignores ASCII case and surrounding `/`. A prefix that
    /// matches nothing gives [`TaxonomyError::UnknownCategory`] with close matches.
    pub fn select(&self, prefix: &str) -> Result<Vec<LeafRef<'_>>, TaxonomyError> {
        let wanted = normalise(prefix);
        if wanted.is_empty() {
            return Ok(self.leaves().collect());
        }
        let parts: Vec<&str> = wanted.split('/').collect();
        let selected: Vec<LeafRef<'_>> = match parts.as_slice() {
            [single] => {
                self.leaves().filter(|l| l.macro_cat.id == *single || l.alert_label() == *single).collect()
            }
            [macro_id, micro_id] => {
                self.leaves().filter(|l| l.macro_cat.id == *macro_id && l.micro.id == *micro_id).collect()
            }
            [_, _, _] => self.leaves().filter(|l| l.path() == wanted).collect(),
            _ => Vec::new(),
        };
        if selected.is_empty() {
            return Err(TaxonomyError::UnknownCategory {
                prefix: prefix.to_string(),
                suggestions: self.suggest(&wanted),
            });
        }
        Ok(selected)
    }

    /// Each micro category's mapping to `target`: (micro path, ALERT label, categories).
    pub fn mapping(&self, target: MappingTarget) -> Vec<(String, String, Vec<String>)> {
        self.macros
            .iter()
            .flat_map(|macro_cat| {
                macro_cat.micros.iter().map(move |micro| {
                    (
                        format!("{}/{}", macro_cat.id, micro.id),
                        micro.alert_label(&macro_cat.id),
                        micro.mappings.get(target).to_vec(),
                    )
                })
            })
            .collect()
    }

    /// Up to five category names close to `wanted`, best first; a micro category is
    /// offered once, as whichever of its path and ALERT label is closer.
    fn suggest(&self, wanted: &str) -> Vec<String> {
        // (name to offer, path of the node it names)
        let mut candidates: Vec<(String, String)> = Vec::new();
        for macro_cat in &self.macros {
            candidates.push((macro_cat.id.clone(), macro_cat.id.clone()));
            for micro in &macro_cat.micros {
                let micro_path = format!("{}/{}", macro_cat.id, micro.id);
                candidates.push((micro_path.clone(), micro_path.clone()));
                candidates.push((micro.alert_label(&macro_cat.id), micro_path.clone()));
                for leaf in &micro.leaves {
                    let leaf_path = format!("{micro_path}/{}", leaf.id);
                    candidates.push((leaf_path.clone(), leaf_path));
                }
            }
        }
        let last = |s: &str| s.rsplit('/').next().unwrap_or_default().to_string();
        let wanted_last = last(wanted);
        let whole_limit = (wanted.chars().count() / 4).max(2);
        let tail_limit = (wanted_last.chars().count() / 4).max(1);
        let mut scored: Vec<(usize, String, String)> = candidates
            .into_iter()
            .filter_map(|(name, node)| {
                let name_last = last(&name);
                let whole = edit_distance(wanted, &name);
                let tail = edit_distance(&wanted_last, &name_last);
                let contains = wanted_last.chars().count() >= 3 && name_last.contains(wanted_last.as_str());
                let score = if whole <= whole_limit || tail <= tail_limit {
                    whole.min(tail)
                } else if contains {
                    tail_limit + 1
                } else {
                    return None;
                };
                Some((score, name, node))
            })
            .collect();
        scored.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.len().cmp(&b.1.len())).then(a.1.cmp(&b.1)));
        let mut offered_nodes: Vec<String> = Vec::new();
        let mut suggestions = Vec::new();
        for (_, name, node) in scored {
            if !offered_nodes.contains(&node) {
                offered_nodes.push(node);
                suggestions.push(name);
            }
        }
        suggestions.truncate(5);
        suggestions
    }
}

fn normalise(prefix: &str) -> String {
    prefix.trim().trim_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_parses_and_has_the_published_shape() {
        let tax = Taxonomy::builtin();
        assert_eq!(tax.name, "alert-sage");
        assert_eq!(tax.origin, BUILTIN_ORIGIN);
        assert_eq!(tax.macros.len(), 6);
        assert_eq!(tax.micro_count(), 32);
        assert!(tax.leaf_count() >= 250, "only {} leaves", tax.leaf_count());
        assert_eq!(tax.leaves().count(), tax.leaf_count());
    }

    #[test]
    fn alert_label_and_paths() {
        let tax = Taxonomy::builtin();
        let leaf = tax.select("crime/cyber/account_takeover").unwrap()[0];
        assert_eq!(leaf.path(), "crime/cyber/account_takeover");
        assert_eq!(leaf.micro_path(), "crime/cyber");
        assert_eq!(leaf.alert_label(), "crime_cyber");
        let self_harm = &tax.macros.iter().find(|m| m.id == "self_harm").unwrap().micros[0];
        assert_eq!(self_harm.alert_label("self_harm"), "self_harm_suicide");
    }

    #[test]
    fn normalise_trims_slashes_and_case() {
        assert_eq!(normalise(" /Crime/Cyber/ "), "crime/cyber");
        assert_eq!(normalise(""), "");
    }
}
