//! The harm taxonomy that every SAGE stage is conditioned on.
//!
//! SAGE starts from ALERT's 6 macro and 32 micro harm categories and extends each micro
//! category with leaf categories; later stages expand each leaf into concrete topics,
//! write raw texts and extract red-team queries per topic (see `shared/design/SAGE.md`).
//! This crate holds that taxonomy and nothing that talks to a model:
//!
//! - the built-in taxonomy ([`Taxonomy::builtin`], 6 macro / 32 micro / 285 leaf
//!   categories), kept as data in `data/alert-sage.toml` and embedded at compile time;
//! - loading and validating user taxonomies in the same format ([`Taxonomy::from_path`],
//!   [`Taxonomy::parse`]), reporting every problem with its file, line and node id;
//! - queries: all leaves, a selection by path prefix or ALERT label
//!   ([`Taxonomy::select`]), counts ([`Taxonomy::stats`]) and each micro category's
//!   mapping to PKU-SafeRLHF, HarmBench and MLCommons ([`Taxonomy::mapping`]);
//! - plain-text renderers for the command line ([`render_tree`], [`render_stats`],
//!   [`render_mapping`]).
//!
//! A node's path is `macro/micro/leaf` (`crime/cyber/account_takeover`); a micro
//! category's ALERT label is `macro_micro` (`crime_cyber`). The generation pipeline
//! (`sagert-engine`) walks [`Taxonomy::leaves`]; the `sagert` binary prints the renderers'
//! output or the serialised model (`--json`).
//!
//! ```
//! use sagert_taxonomy::{MappingTarget, Taxonomy};
//!
//! let tax = Taxonomy::builtin();
//! let cyber = tax.select("crime_cyber").unwrap();
//! assert_eq!(cyber[0].path(), "crime/cyber/account_takeover");
//! assert_eq!(cyber[0].micro.mappings.get(MappingTarget::Pku), ["Cybercrime"]);
//! ```

mod error;
mod model;
mod parse;
mod render;
mod stats;
mod targets;
mod validate;

pub use error::{Problem, TaxonomyError};
pub use model::{
    Leaf, LeafRef, MacroCategory, Mappings, MicroCategory, Taxonomy, BUILTIN_ORIGIN, BUILTIN_SOURCE,
};
pub use render::{render_mapping, render_stats, render_tree};
pub use stats::{MacroStats, MappingCoverage, MicroStats, TaxonomyStats};
pub use targets::{MappingTarget, HARMBENCH_CATEGORIES, MLCOMMONS_HAZARDS, PKU_CATEGORIES};
