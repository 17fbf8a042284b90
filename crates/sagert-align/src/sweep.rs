//! Runs and sweeps: turning a configuration (and `--datasets`/`--sizes`) into
//! training jobs.
//!
//! One dataset and one size is a single run in `run.output_dir`. A grid gives
//! one cell per (dataset, size) in `run.output_dir/<dataset>-n<size>/`, each
//! with its own store, checkpoints, exports and `manifest.json`, and its own
//! seed (derived from `run.seed` and the cell's name). The subset draw's seed is
//! `run.seed` for every cell, so a dataset's smaller subsets are subsets of its
//! larger ones; the reference log-probabilities are cached in the root's store
//! and shared by all cells.

use std::path::{Path, PathBuf};

use crate::config::AlignConfig;
use crate::data;
use crate::error::{AlignError, Result};
use crate::train::{derive_seed, Progress, TrainJob};

/// What to run, beyond the configuration.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The base model as a transformers directory.
    pub base_dir: PathBuf,
    /// Dataset names (from `[data.datasets]`) or paths; empty: `data.train`.
    pub datasets: Vec<String>,
    /// Subset sizes; empty: `data.limit`.
    pub sizes: Vec<usize>,
    pub progress: Progress,
}

/// A short, path-safe name for a dataset given by name or path.
fn dataset_label(name_or_path: &str) -> String {
    let p = Path::new(name_or_path);
    let base = match p.file_name().map(|n| n.to_string_lossy().into_owned()) {
        Some(n) if n == "dataset" || n == "trl" || n == "trl-chat" => {
            p.parent().and_then(|q| q.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or(n)
        }
        Some(n) => n.trim_end_matches(".jsonl").trim_end_matches(".parquet").to_string(),
        None => name_or_path.to_string(),
    };
    base.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// The held-out data for a dataset: `data.eval` when set, else the dataset's
/// own `eval_split` when it has one.
fn eval_for(config: &AlignConfig, train: &Path) -> Option<PathBuf> {
    if let Some(e) = &config.data.eval {
        return Some(PathBuf::from(config.data.resolve(e)));
    }
    // A dataset directory (or run) with a held-out split.
    match data::read_preferences(train, &config.data.eval_split) {
        Ok(pairs) if !pairs.is_empty() && train.is_dir() => Some(train.to_path_buf()),
        _ => None,
    }
}

/// The jobs of `plan`: one, or one per cell of the grid.
pub fn jobs(config: &AlignConfig, plan: &Plan) -> Result<Vec<TrainJob>> {
    let datasets: Vec<String> =
        if plan.datasets.is_empty() { vec![config.data.train.clone()] } else { plan.datasets.clone() };
    if datasets.iter().any(|d| d.trim().is_empty()) {
        return Err(AlignError::Config {
            file: PathBuf::from("align.toml"),
            message: "no training data: set data.train or pass --datasets".into(),
        });
    }
    let sizes: Vec<Option<usize>> = if plan.sizes.is_empty() {
        vec![config.data.limit]
    } else {
        plan.sizes.iter().map(|&s| Some(s)).collect()
    };
    let root = config.run.output_dir.clone();
    let grid = datasets.len() > 1 || sizes.len() > 1;
    let mut out = Vec::new();
    for name in &datasets {
        let path = PathBuf::from(config.data.resolve(name));
        let label = dataset_label(name);
        let eval = eval_for(config, &path);
        for size in &sizes {
            let cell = match size {
                Some(n) => format!("{label}-n{n}"),
                None => format!("{label}-all"),
            };
            let (run_dir, seed) = if grid {
                (root.join(&cell), derive_seed(config.run.seed, &format!("cell/{cell}")))
            } else {
                (root.clone(), config.run.seed)
            };
            out.push(TrainJob {
                config: config.clone(),
                base_dir: plan.base_dir.clone(),
                train: path.clone(),
                train_name: label.clone(),
                eval: eval.clone(),
                limit: *size,
                run_dir,
                cache_dir: root.clone(),
                seed,
                sample_seed: config.run.seed,
                progress: plan.progress,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(dataset_label("runs/quickstart/dataset"), "quickstart");
        assert_eq!(dataset_label("data/pku train.jsonl"), "pku_train");
        assert_eq!(dataset_label("sage"), "sage");
    }

    #[test]
    fn grid_cells_have_own_dirs_and_seeds() {
        let mut c = AlignConfig::default();
        c.run.output_dir = PathBuf::from("/tmp/sweep-x");
        c.data.datasets.insert("a".into(), "/nonexistent/a.jsonl".into());
        let plan = Plan {
            base_dir: PathBuf::from("/m"),
            datasets: vec!["a".into(), "b.jsonl".into()],
            sizes: vec![50, 200],
            progress: Progress::Quiet,
        };
        let jobs = jobs(&c, &plan).unwrap();
        assert_eq!(jobs.len(), 4);
        let dirs: Vec<String> = jobs.iter().map(|j| j.run_dir.display().to_string()).collect();
        assert_eq!(
            dirs,
            ["/tmp/sweep-x/a-n50", "/tmp/sweep-x/a-n200", "/tmp/sweep-x/b-n50", "/tmp/sweep-x/b-n200"]
        );
        assert_eq!(jobs[0].train, PathBuf::from("/nonexistent/a.jsonl"));
        assert!(jobs.iter().all(|j| j.sample_seed == 42 && j.cache_dir == Path::new("/tmp/sweep-x")));
        let mut seeds: Vec<u64> = jobs.iter().map(|j| j.seed).collect();
        seeds.dedup();
        assert_eq!(seeds.len(), 4);
    }

    #[test]
    fn single_run_uses_output_dir() {
        let mut c = AlignConfig::default();
        c.data.train = "/nonexistent/t.jsonl".into();
        let plan = Plan {
            base_dir: PathBuf::from("/m"),
            datasets: vec![],
            sizes: vec![],
            progress: Progress::Quiet,
        };
        let jobs = jobs(&c, &plan).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].run_dir, c.run.output_dir);
        assert_eq!(jobs[0].seed, 42);
        c.data.train.clear();
        assert!(super::jobs(&c, &plan).is_err());
    }
}
