//! `sagert models list|fetch`

use std::io::IsTerminal;
use std::path::PathBuf;
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
                    println!("{:<24} {:<12} {}\n{:<24} {}", m.name, status, m.description, "", sources(m));
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
    }
    Ok(ExitCode::SUCCESS)
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
