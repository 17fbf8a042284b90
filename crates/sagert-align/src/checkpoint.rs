//! Checkpoints: the trainable tensors, the optimiser's moments, the step and
//! how the run's randomness is derived, written atomically under
//! `RUN_DIR/checkpoints/step-NNNNNNNN/`.
//!
//! A checkpoint directory is written under a temporary name, synced, then
//! renamed into place, and only then recorded in the run store (meta key
//! [`META_KEY`]); a kill at any point leaves the previous checkpoint intact.
//! Randomness needs no saved generator state: the data order of epoch `e` and
//! the dropout masks of step `s` are derived from the run seed and `e` or `s`,
//! so a resumed run replays exactly what an uninterrupted run would have done.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use sagert_store::Store;

use crate::error::{AlignError, Result};

/// The run-store meta key naming the newest complete checkpoint.
pub const META_KEY: &str = "align.checkpoint";

const TRAINABLE: &str = "trainable.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.json";

/// What a checkpoint records besides tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Optimiser steps taken.
    pub step: u64,
    /// The run definition's hash; a checkpoint from another definition is refused.
    pub definition: String,
    /// The run seed that derives the data order (per epoch) and the dropout
    /// masks (per step and micro-batch).
    pub seed: u64,
    /// How the randomness is derived, for readers of the checkpoint.
    pub rng: String,
    /// Metric lines written to `metrics.jsonl` up to this step.
    pub metric_lines: u64,
}

/// A loaded checkpoint.
pub struct Checkpoint {
    pub state: CheckpointState,
    pub trainable: HashMap<String, Tensor>,
    pub optimizer: HashMap<String, Tensor>,
    pub dir: PathBuf,
}

/// The directory of the checkpoint at `step`.
pub fn dir_of(run_dir: &Path, step: u64) -> PathBuf {
    run_dir.join("checkpoints").join(format!("step-{step:08}"))
}

/// Write a checkpoint atomically, record it in the store, and keep only the
/// newest `keep` checkpoints.
pub fn save(
    store: &Store,
    run_dir: &Path,
    state: &CheckpointState,
    trainable: &HashMap<String, Tensor>,
    optimizer: &HashMap<String, Tensor>,
    keep: usize,
) -> Result<PathBuf> {
    let dir = dir_of(run_dir, state.step);
    let parent = dir.parent().expect("checkpoint dir has a parent");
    fs::create_dir_all(parent).map_err(AlignError::io(parent))?;
    let tmp = parent.join(format!(".step-{:08}.tmp-{}", state.step, std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(AlignError::io(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(AlignError::io(&tmp))?;
    candle_core::safetensors::save(trainable, tmp.join(TRAINABLE))?;
    candle_core::safetensors::save(optimizer, tmp.join(OPTIMIZER))?;
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    fs::write(tmp.join(STATE), json).map_err(AlignError::io(tmp.join(STATE)))?;
    for name in [TRAINABLE, OPTIMIZER, STATE] {
        let f = fs::File::open(tmp.join(name)).map_err(AlignError::io(tmp.join(name)))?;
        f.sync_all().map_err(AlignError::io(tmp.join(name)))?;
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(AlignError::io(&dir))?;
    }
    fs::rename(&tmp, &dir).map_err(AlignError::io(&dir))?;
    if let Ok(d) = fs::File::open(parent) {
        let _ = d.sync_all();
    }
    store.set_meta(META_KEY, &dir.file_name().expect("named").to_string_lossy())?;
    prune(parent, keep)?;
    Ok(dir)
}

/// Remove all but the newest `keep` checkpoints, and stale temporaries.
fn prune(parent: &Path, keep: usize) -> Result<()> {
    let mut steps = Vec::new();
    for entry in fs::read_dir(parent).map_err(AlignError::io(parent))? {
        let entry = entry.map_err(AlignError::io(parent))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".step-") {
            let _ = fs::remove_dir_all(entry.path());
        } else if let Some(n) = name.strip_prefix("step-").and_then(|n| n.parse::<u64>().ok()) {
            steps.push((n, entry.path()));
        }
    }
    steps.sort();
    let excess = steps.len().saturating_sub(keep);
    for (_, path) in steps.into_iter().take(excess) {
        fs::remove_dir_all(&path).map_err(AlignError::io(&path))?;
    }
    Ok(())
}

/// The newest complete checkpoint of the run, if any: the one the store
/// names, else the highest-numbered directory with all three files.
pub fn latest(store: &Store, run_dir: &Path, device: &Device) -> Result<Option<Checkpoint>> {
    let parent = run_dir.join("checkpoints");
    let mut candidates = Vec::new();
    if let Some(name) = store.meta(META_KEY)? {
        candidates.push(parent.join(name));
    }
    if parent.is_dir() {
        let mut found: Vec<PathBuf> = fs::read_dir(&parent)
            .map_err(AlignError::io(&parent))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("step-")))
            .collect();
        found.sort();
        found.reverse();
        candidates.extend(found);
    }
    for dir in candidates {
        if [TRAINABLE, OPTIMIZER, STATE].iter().all(|f| dir.join(f).is_file()) {
            return load(&dir, device).map(Some);
        }
    }
    Ok(None)
}

/// Read the checkpoint in `dir`.
pub fn load(dir: &Path, device: &Device) -> Result<Checkpoint> {
    let bad = |message: String| AlignError::Checkpoint { path: dir.to_path_buf(), message };
    let bytes = fs::read(dir.join(STATE)).map_err(AlignError::io(dir.join(STATE)))?;
    let state: CheckpointState = serde_json::from_slice(&bytes).map_err(|e| bad(format!("{STATE}: {e}")))?;
    let trainable = candle_core::safetensors::load(dir.join(TRAINABLE), device)
        .map_err(|e| bad(format!("{TRAINABLE}: {e}")))?;
    let optimizer = candle_core::safetensors::load(dir.join(OPTIMIZER), device)
        .map_err(|e| bad(format!("{OPTIMIZER}: {e}")))?;
    Ok(Checkpoint { state, trainable, optimizer, dir: dir.to_path_buf() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> CheckpointState {
        CheckpointState { step, definition: "d".into(), seed: 1, rng: "r".into(), metric_lines: step }
    }

    #[test]
    fn save_latest_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let dev = Device::Cpu;
        let t = |v: f32| HashMap::from([("w".to_string(), Tensor::new(&[v, 2.0], &dev).unwrap())]);
        assert!(latest(&store, dir.path(), &dev).unwrap().is_none());
        for step in [5, 10, 15] {
            save(&store, dir.path(), &state(step), &t(step as f32), &t(0.5), 2).unwrap();
        }
        let c = latest(&store, dir.path(), &dev).unwrap().unwrap();
        assert_eq!(c.state, state(15));
        assert_eq!(c.trainable["w"].to_vec1::<f32>().unwrap(), vec![15.0, 2.0]);
        assert!(!dir_of(dir.path(), 5).exists());
        assert!(dir_of(dir.path(), 10).exists());
    }

    #[test]
    fn incomplete_newest_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let dev = Device::Cpu;
        let t = HashMap::from([("w".to_string(), Tensor::new(&[1f32], &dev).unwrap())]);
        save(&store, dir.path(), &state(3), &t, &t, 3).unwrap();
        // A later directory without its state file (as a kill mid-write would
        // leave had we not renamed atomically) is not taken.
        let broken = dir_of(dir.path(), 9);
        fs::create_dir_all(&broken).unwrap();
        fs::write(broken.join(TRAINABLE), b"x").unwrap();
        store.set_meta(META_KEY, "step-00000009").unwrap();
        assert_eq!(latest(&store, dir.path(), &dev).unwrap().unwrap().state.step, 3);
    }
}
