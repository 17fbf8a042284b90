//! One module per command.

mod align;
mod batch;
mod chat;
mod config;
mod encode;
mod evaluate;
mod generate;
mod import;
mod judge;
mod models;
mod serve;

pub(crate) use models::{conversion_bar, model_cache};
mod status;
mod study;
mod taxonomy;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use sagert_config::{LoadedConfig, Overrides};
use sagert_taxonomy::Taxonomy;

use crate::cli::{Cli, Command};

/// Run the parsed command.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Config(c) => config::run(c),
        Command::Taxonomy(c) => taxonomy::run(c),
        Command::Generate(a) => generate::run(a),
        Command::Export(a) => generate::export(a),
        Command::Align(a) => align::run(a),
        Command::Import(a) => import::run(a),
        Command::Judge(c) => judge::run(c),
        Command::Eval(a) => evaluate::eval(a),
        Command::Redteam(a) => evaluate::redteam(a),
        Command::Study(a) => study::run(a),
        Command::Batch(a) => batch::run(a),
        Command::Status(a) => status::run(a),
        Command::Models(c) => models::run(c),
        Command::Chat(a) => chat::run(a),
        Command::Embed(a) => encode::embed(a),
        Command::Toxicity(a) => encode::toxicity(a),
        Command::Classify(a) => encode::classify(a),
        Command::Serve(a) => serve::run(a),
    }
}

/// Load a configuration with the environment and these overrides applied.
pub(crate) fn load_config(path: &Path, cli: &Overrides) -> anyhow::Result<LoadedConfig> {
    Ok(sagert_config::load(Some(path), |k| std::env::var(k).ok(), cli)?)
}

/// The configuration's taxonomy, with every `select` prefix checked; errors
/// name the config file and line.
pub(crate) fn selected_taxonomy(loaded: &LoadedConfig) -> anyhow::Result<(Taxonomy, usize)> {
    let tax = match &loaded.config.taxonomy.path {
        Some(p) => Taxonomy::from_path(p)
            .with_context(|| format!("{}:{}: taxonomy.path", loaded.file, loaded.line_of("taxonomy.path")))?,
        None => Taxonomy::builtin(),
    };
    let select = &loaded.config.taxonomy.select;
    let leaves = if select.is_empty() {
        tax.leaves().count()
    } else {
        let mut paths = std::collections::BTreeSet::new();
        for (i, prefix) in select.iter().enumerate() {
            let picked = tax.select(prefix).with_context(|| {
                format!(
                    "{}:{}: taxonomy.select[{i}]",
                    loaded.file,
                    loaded.line_of(&format!("taxonomy.select.{i}"))
                )
            })?;
            paths.extend(picked.iter().map(|l| l.path()));
        }
        paths.len()
    };
    Ok((tax, leaves))
}

/// Run an async command body on a runtime with the machine's cores.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    Ok(runtime()?.block_on(f))
}

/// The async runtime a command runs its calls on.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}
