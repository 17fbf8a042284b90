//! The run configuration of sagert.
//!
//! One TOML file describes a run: model roles and their endpoints, stage
//! settings, budgets, seed and output directory ([`RunConfig`]). It is parsed
//! with serde; an unknown key is an error that names the key's path and line
//! ([`ConfigError::Parse`]), and checks across fields collect every problem
//! with its line ([`ConfigError::Invalid`]).
//!
//! Precedence is decided in one place, [`resolve`]: command-line flags over the
//! environment variables of [`env`](mod@env) over the file over defaults.
//!
//! This crate knows nothing of HTTP or the store: `sagert` maps the endpoints
//! onto `sagert-openai`'s settings, and `sagert-engine` reads budgets and prices.

pub mod env;
mod error;
mod model;
mod parse;
mod settings;

pub use error::{ConfigError, Problem};
pub use model::*;
pub use parse::{parse, read_file, LoadedConfig};
pub use settings::{load, resolve, Overrides};

/// A commented example configuration that documents every key
/// (`sagert config example`).
pub const EXAMPLE: &str = include_str!("../example.toml");
