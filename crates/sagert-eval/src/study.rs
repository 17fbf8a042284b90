//! The study: a grid of base model × alignment datasets × sizes × methods,
//! each cell aligned and evaluated on every metric, the base model included.
//!
//! This module holds the study's configuration (`study.toml`) and its plan:
//! the cells, their names and where each lives. The command (`sagert study`)
//! aligns through `sagert-align` and evaluates through [`crate::evaluate`].
//!
//! # Layout of the output directory
//!
//! ```text
//! study.json                  the configuration the study was started with
//! align/<method>/<dataset>-n<size>/   each alignment run (resumable; export/model.gguf)
//! cells/<cell>/               each cell's evaluation: judged responses, call cache
//! cells/<cell>/results.jsonl  written last, atomically: the cell is done
//! results.jsonl, results.parquet, report.html
//! ```
//!
//! A killed study resumes: alignment runs resume from their checkpoints, done
//! cells (those with `results.jsonl`) are not redone, and a cell's model calls
//! are answered from its cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{EvalError, Result};

/// `study.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    /// `[study]`.
    #[serde(default)]
    pub study: StudySection,
    /// `[model]`: the base model.
    pub model: ModelSection,
    /// `[align]`: the alignment methods.
    #[serde(default)]
    pub align: AlignSection,
    /// `[datasets]`: alignment datasets by name (paths or dataset directories).
    #[serde(default)]
    pub datasets: BTreeMap<String, String>,
    /// `[grid]`: the training sizes.
    #[serde(default)]
    pub grid: GridSection,
    /// `[models]`: models that are already aligned, by cell name (a GGUF file,
    /// a merged model directory or a known model name), evaluated as they are.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    /// `[eval]`: what every cell is evaluated on.
    #[serde(default)]
    pub eval: EvalSection,
}

/// `[study]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StudySection {
    /// The study's name, shown in the report.
    pub name: String,
    /// The output directory.
    pub output_dir: PathBuf,
    /// Seeds the alignment runs, the prompt samples and the bootstrap.
    pub seed: u64,
}

impl Default for StudySection {
    fn default() -> Self {
        StudySection { name: "study".into(), output_dir: PathBuf::from("runs/study"), seed: 0 }
    }
}

/// `[model]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The base model: a known model name, a GGUF file or a transformers directory.
    pub base: String,
}

/// `[align]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlignSection {
    /// Alignment configurations by method name (`dpo = "align-dpo.toml"`): each
    /// gives the objective, LoRA and training settings. The study sets the
    /// model, the data, the output directory, the seed and a GGUF export.
    pub methods: BTreeMap<String, String>,
}

/// `[grid]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GridSection {
    /// Training sizes (pairs); each smaller subset is part of each larger one.
    pub sizes: Vec<usize>,
}

/// `[eval]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Red-team prompts: a file or directory (see [`crate::evaluate::read_prompts`]),
    /// or `advbench` (AdvBench as PyRIT ships it, fetched and imported once).
    pub prompts: String,
    /// Keep only prompts of this split where the set has a `split` field.
    pub split: Option<String>,
    /// At most this many red-team prompts (a seeded sample).
    pub limit: Option<usize>,
    /// Benign look-alikes for over-refusal: `builtin`, an XSTest CSV, a JSONL file, or `none`.
    pub benign: String,
    /// At most this many benign prompts.
    pub benign_limit: Option<usize>,
    /// The harm judge.
    pub harm_judge: String,
    /// The refusal judge.
    pub refusal_judge: String,
    /// LLM judges: the embedded judge model (a known name or a GGUF file);
    /// default: the base model.
    pub judge_model: Option<String>,
    /// LLM judges: a run configuration whose `judge` role to use (any
    /// backend: a vLLM or other OpenAI-compatible endpoint).
    pub judge_config: Option<String>,
    /// Score the toxicity of red-team responses.
    pub toxicity: bool,
    /// Most new tokens per response.
    pub max_tokens: u32,
    /// Multiple-choice capability tasks, if any: sagert's MC JSONL or MMLU's
    /// rows (see [`crate::mc`]).
    pub capability: Option<String>,
    /// At most this many capability items.
    pub capability_limit: Option<usize>,
    /// A held-out benign text for perplexity, if any.
    pub perplexity: Option<String>,
    /// BBQ items (the dataset's JSONL, [`crate::bbq`]), if any: each item's
    /// answer is the one the model finds most likely.
    pub bbq: Option<String>,
    /// At most this many BBQ items (a seeded sample).
    pub bbq_limit: Option<usize>,
    /// Run the counterfactual bias probe ([`crate::probe`]).
    pub bias_probe: bool,
    /// At most this many probe templates per category.
    pub probe_templates: Option<usize>,
    /// Bootstrap resamples per interval.
    pub resamples: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            prompts: "advbench".into(),
            split: Some("test".into()),
            limit: Some(100),
            benign: "builtin".into(),
            benign_limit: None,
            harm_judge: "classifier-harm".into(),
            refusal_judge: "refusal-keywords".into(),
            judge_model: None,
            judge_config: None,
            toxicity: true,
            max_tokens: 128,
            capability: None,
            capability_limit: None,
            perplexity: None,
            bbq: None,
            bbq_limit: None,
            bias_probe: false,
            probe_templates: None,
            resamples: 2000,
        }
    }
}

impl StudyConfig {
    /// Read `path`; relative paths in it are taken from the file's directory.
    pub fn from_file(path: &Path) -> Result<StudyConfig> {
        let text = std::fs::read_to_string(path).map_err(EvalError::io(path))?;
        let mut config = StudyConfig::parse(&text, path)?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        config.resolve_paths(dir);
        Ok(config)
    }

    /// Parse and check a configuration's text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<StudyConfig> {
        let config: StudyConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| text[..s.start].matches('\n').count() + 1);
            EvalError::Syntax { file: file.to_path_buf(), line, message: e.message().to_string() }
        })?;
        config.check().map_err(|message| EvalError::File { file: file.to_path_buf(), message })?;
        Ok(config)
    }

    /// What is wrong with the configuration, if anything.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.model.base.trim().is_empty() {
            return Err("model.base is empty".into());
        }
        let aligning = !self.datasets.is_empty() || !self.align.methods.is_empty();
        if aligning && (self.datasets.is_empty() || self.align.methods.is_empty()) {
            return Err("aligning needs both [datasets] and [align.methods]".into());
        }
        if !self.datasets.is_empty() && self.grid.sizes.is_empty() {
            return Err("grid.sizes is empty: give the training sizes".into());
        }
        if self.grid.sizes.contains(&0) {
            return Err("grid.sizes: a size must be at least 1".into());
        }
        for name in self.datasets.keys().chain(self.align.methods.keys()).chain(self.models.keys()) {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(format!("`{name}`: names may use only letters, digits, `-` and `_`"));
            }
        }
        if self.models.contains_key("base") {
            return Err("[models]: `base` is the base model's cell; name the model otherwise".into());
        }
        if self.eval.resamples < 100 {
            return Err("eval.resamples: use at least 100".into());
        }
        if self.eval.max_tokens == 0 {
            return Err("eval.max_tokens must be at least 1".into());
        }
        Ok(())
    }

    fn resolve_paths(&mut self, dir: &Path) {
        let fix = |p: &mut String| {
            let path = Path::new(p.as_str());
            if path.is_relative() && (p.contains('/') || p.contains('.')) {
                *p = dir.join(path).to_string_lossy().into_owned();
            }
        };
        for p in
            self.datasets.values_mut().chain(self.align.methods.values_mut()).chain(self.models.values_mut())
        {
            fix(p);
        }
        fix(&mut self.model.base);
        if self.eval.prompts != "advbench" {
            fix(&mut self.eval.prompts);
        }
        if !matches!(self.eval.benign.as_str(), "builtin" | "none") {
            fix(&mut self.eval.benign);
        }
        for p in
            [&mut self.eval.capability, &mut self.eval.perplexity, &mut self.eval.bbq].into_iter().flatten()
        {
            fix(p);
        }
        if self.study.output_dir.is_relative() {
            self.study.output_dir = dir.join(&self.study.output_dir);
        }
    }

    /// The cells, base first, then each method × dataset × size, then the
    /// already-aligned models.
    pub fn cells(&self) -> Vec<Cell> {
        let mut out = vec![Cell { name: "base".into(), kind: CellKind::Base }];
        let several_methods = self.align.methods.len() > 1;
        for method in self.align.methods.keys() {
            for dataset in self.datasets.keys() {
                for &size in &self.grid.sizes {
                    let name = if several_methods {
                        format!("{method}-{dataset}-n{size}")
                    } else {
                        format!("{dataset}-n{size}")
                    };
                    let kind = CellKind::Aligned { method: method.clone(), dataset: dataset.clone(), size };
                    out.push(Cell { name, kind });
                }
            }
        }
        for (name, model) in &self.models {
            out.push(Cell { name: name.clone(), kind: CellKind::Given { model: model.clone() } });
        }
        out
    }
}

/// One cell of the study.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    /// Its name: `base`, `<dataset>-n<size>` (with one method) or
    /// `<method>-<dataset>-n<size>`, or a `[models]` name.
    pub name: String,
    /// What it is.
    pub kind: CellKind,
}

/// What a cell evaluates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CellKind {
    /// The base model as it is.
    Base,
    /// The base aligned with `method` on `size` pairs of `dataset`.
    Aligned {
        /// The method's name.
        method: String,
        /// The dataset's name.
        dataset: String,
        /// Training pairs.
        size: usize,
    },
    /// A model that is already aligned.
    Given {
        /// Its path or name.
        model: String,
    },
}

impl Cell {
    /// The cell's evaluation directory under the study's output directory.
    pub fn dir(&self, output_dir: &Path) -> PathBuf {
        output_dir.join("cells").join(&self.name)
    }

    /// Whether the cell's evaluation is done (its `results.jsonl` exists).
    pub fn is_done(&self, output_dir: &Path) -> bool {
        self.dir(output_dir).join("results.jsonl").is_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[study]
name = "t"
output_dir = "out"

[model]
base = "smollm2-135m-instruct"

[align.methods]
dpo = "align.toml"

[datasets]
sage = "data/sage"
other = "data/other"

[grid]
sizes = [4, 8]

[models]
given = "m.gguf"

[eval]
limit = 10
"#;

    #[test]
    fn cells_in_order() {
        let c = StudyConfig::parse(EXAMPLE, Path::new("study.toml")).unwrap();
        let names: Vec<String> = c.cells().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["base", "other-n4", "other-n8", "sage-n4", "sage-n8", "given"]);
        assert_eq!(c.eval.limit, Some(10));
        assert_eq!(c.eval.harm_judge, "classifier-harm");
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let err = |text: &str| StudyConfig::parse(text, Path::new("s.toml")).unwrap_err().to_string();
        let e = err(&EXAMPLE.replace("sizes = [4, 8]", "sizes = []"));
        assert!(e.contains("grid.sizes is empty"), "{e}");
        let e = err(&EXAMPLE.replace("limit = 10", "limt = 10"));
        assert!(e.contains("s.toml:") && e.contains("limt"), "{e}");
        let e = err(&EXAMPLE.replace("given =", "base ="));
        assert!(e.contains("`base` is the base model's cell"), "{e}");
        let e = err(&EXAMPLE.replace("[align.methods]\ndpo = \"align.toml\"", ""));
        assert!(e.contains("needs both"), "{e}");
    }

    #[test]
    fn relative_paths_are_taken_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("study.toml");
        std::fs::write(&file, EXAMPLE).unwrap();
        let c = StudyConfig::from_file(&file).unwrap();
        assert_eq!(c.datasets["sage"], dir.path().join("data/sage").to_string_lossy());
        assert_eq!(c.model.base, "smollm2-135m-instruct", "a registry name is not a path");
        assert_eq!(c.study.output_dir, dir.path().join("out"));
        assert_eq!(c.eval.prompts, "advbench");
    }
}
