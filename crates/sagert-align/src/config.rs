//! The alignment configuration (`align.toml`): one section per concern, every
//! key defaulted, unknown keys refused with their path and line.
//!
//! ```toml
//! [run]
//! output_dir = "runs/align"
//! seed = 42
//!
//! [model]
//! path = "smollm2-135m-instruct"   # a registry name, a .gguf file or a transformers directory
//!
//! [data]
//! train = "runs/quickstart/dataset"
//! limit = 200
//!
//! [objective]
//! type = "dpo"
//! beta = 0.1
//!
//! [lora]
//! rank = 16
//!
//! [train]
//! batch_size = 4
//! lr = 5e-5
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::Truncation;
use crate::error::{AlignError, Result};
use crate::lora::LoraConfig;
use crate::loss::Objective;
use crate::optim::Schedule;

/// The whole alignment configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlignConfig {
    pub run: RunSection,
    pub model: ModelSection,
    pub data: DataSection,
    pub objective: Objective,
    pub lora: LoraConfig,
    pub train: TrainSection,
    pub export: ExportSection,
}

impl Default for AlignConfig {
    fn default() -> Self {
        AlignConfig {
            run: RunSection::default(),
            model: ModelSection::default(),
            data: DataSection::default(),
            objective: Objective::Dpo {
                beta: 0.1,
                variant: crate::loss::DpoVariant::Sigmoid,
                label_smoothing: 0.0,
            },
            lora: LoraConfig::default(),
            train: TrainSection::default(),
            export: ExportSection::default(),
        }
    }
}

/// `[run]`: where the run lives and its seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// The run directory (its store, checkpoints, logs and exports). A sweep puts
    /// one directory per cell under it.
    pub output_dir: PathBuf,
    /// Seeds the subset draw, the LoRA initialisation, the data order and dropout.
    pub seed: u64,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection { output_dir: PathBuf::from("runs/align"), seed: 42 }
    }
}

/// `[model]`: the base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// A model registry name (`sagert models list`), a `.gguf` file (dequantised
    /// to a transformers directory once, in the model cache) or a transformers
    /// directory.
    pub path: String,
    /// The frozen base's dtype: `f32` or `bf16`. Adapters, norms and the loss are
    /// always f32.
    pub dtype: String,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection { path: "smollm2-135m-instruct".into(), dtype: "f32".into() }
    }
}

/// `[data]`: the preference data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// The training data: a JSONL or Parquet file in TRL's standard or
    /// conversational form, a dataset directory sagert wrote, or a run directory.
    /// May name one of `datasets`.
    pub train: String,
    /// The split read from a dataset directory.
    pub split: String,
    /// Held-out data for evaluation (default: the `eval_split` of `train` when it
    /// has one).
    pub eval: Option<String>,
    /// The held-out split.
    pub eval_split: String,
    /// Use at most this many training pairs: a seeded sample stratified by
    /// category; smaller limits are subsets of larger ones.
    pub limit: Option<usize>,
    /// Evaluate on at most this many held-out pairs (same sampling).
    pub eval_limit: usize,
    /// Keep at most this many prompt tokens (see [`Truncation`] for the rule).
    pub max_prompt_length: usize,
    /// Prompt and completion together at most this many tokens.
    pub max_length: usize,
    /// Named datasets for sweeps (`--datasets sage,pku`).
    pub datasets: BTreeMap<String, String>,
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            train: String::new(),
            split: "train".into(),
            eval: None,
            eval_split: "test".into(),
            limit: None,
            eval_limit: 64,
            max_prompt_length: Truncation::default().max_prompt_length,
            max_length: Truncation::default().max_length,
            datasets: BTreeMap::new(),
        }
    }
}

impl DataSection {
    /// The truncation limits.
    pub fn truncation(&self) -> Truncation {
        Truncation { max_prompt_length: self.max_prompt_length, max_length: self.max_length }
    }

    /// The path of a dataset given by name (one of `datasets`) or path.
    pub fn resolve(&self, name_or_path: &str) -> String {
        self.datasets.get(name_or_path).cloned().unwrap_or_else(|| name_or_path.to_string())
    }
}

/// `[train]`: the optimisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Train every weight instead of LoRA adapters (small models only: the
    /// optimiser keeps two f32 copies of each weight).
    pub full_finetune: bool,
    /// Passes over the training data.
    pub epochs: u32,
    /// Stop after this many optimiser steps (default: all epochs).
    pub max_steps: Option<u64>,
    /// Pairs per micro-batch (each pair is two sequences).
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW's betas, epsilon and decoupled weight decay.
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Learning-rate schedule after warmup.
    pub schedule: Schedule,
    /// Warmup as a fraction of all optimiser steps.
    pub warmup_ratio: f64,
    /// Clip the global gradient norm to this (0 turns clipping off).
    pub max_grad_norm: f64,
    /// Save a checkpoint every this many optimiser steps (and always at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept on disk (the newest).
    pub keep_checkpoints: usize,
    /// Evaluate on the held-out set every this many steps (0: before and after only).
    pub eval_every: u64,
    /// CPU threads for the tensor work (default: all cores).
    pub threads: Option<usize>,
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            full_finetune: false,
            epochs: 1,
            max_steps: None,
            batch_size: 4,
            grad_accum: 1,
            lr: 5e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            schedule: Schedule::Cosine,
            warmup_ratio: 0.1,
            max_grad_norm: 1.0,
            checkpoint_every: 50,
            keep_checkpoints: 2,
            eval_every: 0,
            threads: None,
        }
    }
}

/// `[export]`: what a finished run writes under `RUN_DIR/export/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSection {
    /// The PEFT adapter (`adapter/`; LoRA runs only).
    pub adapter: bool,
    /// The merged model as a transformers directory (`merged/`).
    pub merged: bool,
    /// A GGUF of the merged model (`model.gguf`) in this type (`f32`, `f16`,
    /// `q8_0`), or `none`.
    pub gguf: String,
}

impl Default for ExportSection {
    fn default() -> Self {
        ExportSection { adapter: true, merged: true, gguf: "f16".into() }
    }
}

impl AlignConfig {
    /// Read and check `path`.
    pub fn from_file(path: &Path) -> Result<AlignConfig> {
        let bytes = std::fs::read(path).map_err(AlignError::io(path))?;
        let source = String::from_utf8(bytes).map_err(|e| AlignError::Config {
            file: path.into(),
            message: format!("not valid UTF-8 (byte {})", e.utf8_error().valid_up_to()),
        })?;
        AlignConfig::parse(&source, path)
    }

    /// Parse and check TOML text; `file` names it in errors.
    pub fn parse(source: &str, file: &Path) -> Result<AlignConfig> {
        let de = toml::Deserializer::new(source);
        let config: AlignConfig = serde_path_to_error::deserialize(de).map_err(|err| {
            let key = err.path().to_string();
            let inner = err.into_inner();
            let line = inner.span().map(|s| line_at(source, s.start));
            let at = line.map(|l| format!("line {l}: ")).unwrap_or_default();
            AlignError::Config {
                file: file.into(),
                message: format!("{at}`{key}`: {}", inner.message().trim()),
            }
        })?;
        config.check().map_err(|message| AlignError::Config { file: file.into(), message })?;
        Ok(config)
    }

    /// The checks serde cannot express, as one message listing every problem.
    pub fn check(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Err(e) = self.objective.validate() {
            problems.push(format!("objective: {e}"));
        }
        if let Err(e) = self.lora.validate() {
            problems.push(format!("lora: {e}"));
        }
        let t = &self.train;
        if t.batch_size == 0 {
            problems.push("train.batch_size: must be at least 1".into());
        }
        if t.grad_accum == 0 {
            problems.push("train.grad_accum: must be at least 1".into());
        }
        if t.epochs == 0 && t.max_steps.is_none() {
            problems.push("train.epochs: must be at least 1".into());
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            problems.push(format!("train.lr: must be positive, got {}", t.lr));
        }
        if !(0.0..1.0).contains(&t.warmup_ratio) {
            problems.push(format!("train.warmup_ratio: must be in [0, 1), got {}", t.warmup_ratio));
        }
        if t.max_grad_norm < 0.0 {
            problems.push("train.max_grad_norm: must not be negative".into());
        }
        if t.checkpoint_every == 0 {
            problems.push("train.checkpoint_every: must be at least 1".into());
        }
        if t.keep_checkpoints == 0 {
            problems.push("train.keep_checkpoints: must be at least 1".into());
        }
        if !(0.0..1.0).contains(&t.beta1) || !(0.0..1.0).contains(&t.beta2) {
            problems.push("train.beta1, train.beta2: must be in [0, 1)".into());
        }
        if t.threads == Some(0) {
            problems.push("train.threads: must be at least 1".into());
        }
        if !matches!(self.model.dtype.as_str(), "f32" | "bf16") {
            problems.push(format!("model.dtype: `{}` is not f32 or bf16", self.model.dtype));
        }
        if self.model.path.trim().is_empty() {
            problems.push("model.path: empty".into());
        }
        if !matches!(self.export.gguf.as_str(), "none" | "f32" | "f16" | "q8_0") {
            problems.push(format!("export.gguf: `{}` is not none, f32, f16 or q8_0", self.export.gguf));
        }
        if self.data.max_prompt_length >= self.data.max_length {
            problems.push(format!(
                "data.max_prompt_length ({}) must be below data.max_length ({})",
                self.data.max_prompt_length, self.data.max_length
            ));
        }
        if self.data.limit == Some(0) {
            problems.push("data.limit: must be at least 1".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// The AdamW settings at the peak learning rate.
    pub fn adamw(&self) -> crate::optim::AdamWConfig {
        let t = &self.train;
        crate::optim::AdamWConfig {
            lr: t.lr,
            beta1: t.beta1,
            beta2: t.beta2,
            eps: t.eps,
            weight_decay: t.weight_decay,
        }
    }
}

fn line_at(source: &str, offset: usize) -> usize {
    source.as_bytes()[..offset.min(source.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<AlignConfig> {
        AlignConfig::parse(s, Path::new("align.toml"))
    }

    #[test]
    fn defaults_and_overrides() {
        let c =
            parse("[data]\ntrain = \"d\"\nlimit = 50\n[objective]\ntype = \"simpo\"\n[train]\nlr = 1e-4\n")
                .unwrap();
        assert_eq!(c.data.limit, Some(50));
        assert_eq!(c.train.lr, 1e-4);
        assert_eq!(c.train.batch_size, 4);
        assert_eq!(c.objective.name(), "simpo");
        assert!(!c.objective.needs_reference());
    }

    #[test]
    fn unknown_key_named_with_line() {
        let e = parse("[train]\nbatch_size = 2\nbatchsize = 3\n").unwrap_err().to_string();
        assert!(e.contains("align.toml") && e.contains("line 3") && e.contains("batchsize"), "{e}");
    }

    #[test]
    fn invalid_values_listed() {
        let e =
            parse("[train]\nbatch_size = 0\nlr = -1.0\n[model]\ndtype = \"f8\"\n").unwrap_err().to_string();
        assert!(e.contains("train.batch_size") && e.contains("train.lr") && e.contains("model.dtype"), "{e}");
        let e = parse("[data]\nmax_prompt_length = 600\nmax_length = 512\n").unwrap_err().to_string();
        assert!(e.contains("max_prompt_length"), "{e}");
    }

    #[test]
    fn named_datasets_resolve() {
        let c = parse("[data.datasets]\nsage = \"runs/q/dataset\"\n").unwrap();
        assert_eq!(c.data.resolve("sage"), "runs/q/dataset");
        assert_eq!(c.data.resolve("other.jsonl"), "other.jsonl");
    }
}
