//! `sagert models list|fetch|convert`

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::anyhow;
use sagert_config::env;
use sagert_models::{ModelCache, Source, KNOWN_MODELS};

use crate::cli::ModelsCommand;

/// The model cache as the environment sets it up.
pub(crate) fn model_cache() -> anyhow::Result<ModelCache> {
    let root = ModelCache::default_root(std::env::var_os(env::CACHE_DIR).map(PathBuf::from));
    let sources = Source::parse_order(&std::env::var(env::MODEL_SOURCE).unwrap_or_default())
        .map_err(|e| anyhow!("{}: {e}", env::MODEL_SOURCE))?;
    let python = std::env::var(env::PYTHON).unwrap_or_else(|_| "python3".into());
    Ok(ModelCache::new(root)
        .with_sources(sources)
        .with_python(python)
        .with_progress(std::io::stderr().is_terminal()))
}

pub(crate) fn run(command: ModelsCommand) -> anyhow::Result<ExitCode> {
    let cache = model_cache()?;
    match command {
        ModelsCommand::List { json } => {
            if json {
                let rows: Vec<serde_json::Value> = KNOWN_MODELS
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "name": m.name, "kind": m.kind, "description": m.description,
                            "status": cache.status(m), "dir": cache.dir(m),
                            "pypi": m.pypi, "hub": m.hub,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("model cache: {}\n", cache.root().display());
                for m in KNOWN_MODELS {
                    let status = match cache.status(m) {
                        sagert_models::CacheStatus::Ready => "cached".to_string(),
                        sagert_models::CacheStatus::Partial { present, expected } => {
                            format!("partial ({present}/{expected} files, unverified)")
                        }
                        sagert_models::CacheStatus::Missing => "not cached".to_string(),
                    };
                    let name = match m.kind {
                        sagert_models::ModelKind::Dataset => format!("{} (data)", m.name),
                        _ => m.name.to_string(),
                    };
                    println!("{name:<24} {status:<12} {}\n{:<24} {}", m.description, "", sources(m));
                }
            }
        }
        ModelsCommand::Fetch { names } => {
            let names: Vec<String> = if names.is_empty() {
                KNOWN_MODELS.iter().map(|m| m.name.to_string()).collect()
            } else {
                names
            };
            for name in &names {
                let dir = cache.ensure(name)?;
                println!("{name}: {}", dir.display());
            }
        }
        ModelsCommand::Convert { src, out, dtype, threads } => convert(&src, &out, &dtype, threads)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar for a conversion on a terminal (hidden otherwise).
pub(crate) fn conversion_bar(what: &str) -> indicatif::ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} tensors {elapsed}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// `sagert models convert`: the direction follows the source.
fn convert(src: &Path, out: &Path, dtype: &str, threads: usize) -> anyhow::Result<()> {
    let bar = conversion_bar(&format!("converting {}", src.display()));
    let progress = |p: sagert_convert::Progress<'_>| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
    };
    let options = sagert_convert::Options { threads, progress: Some(&progress) };
    let started = std::time::Instant::now();
    let summary = if src.is_dir() {
        let dtype: sagert_convert::GgufDtype = dtype.parse().map_err(|e: String| anyhow!(e))?;
        sagert_convert::hf_to_gguf(src, out, dtype, &options)?
    } else if src.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        let dtype: sagert_convert::HfDtype = dtype.parse().map_err(|e: String| anyhow!(e))?;
        sagert_convert::gguf_to_hf(src, out, dtype, &options)?
    } else {
        anyhow::bail!(
            "{}: expected a transformers directory (with config.json) or a .gguf file",
            src.display()
        );
    };
    bar.finish_and_clear();
    println!(
        "{} -> {}: {} tensors, {:.1} MB, {:.1}s",
        src.display(),
        out.display(),
        summary.tensors,
        summary.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    if !summary.skipped.is_empty() {
        println!("left out (no counterpart): {}", summary.skipped.join(", "));
    }
    Ok(())
}

fn sources(m: &sagert_models::KnownModel) -> String {
    let mut s = Vec::new();
    if let Some(p) = m.pypi {
        s.push(format!("pypi {}", p.requirement));
    }
    if let Some(h) = m.hub {
        s.push(format!("hub {}@{}", h.repo, h.revision));
    }
    s.join(", ")
}
