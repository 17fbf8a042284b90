//! The offline toxicity scorer: the Jigsaw classifier of the PyPI package
//! toxic-comment-classifier 0.3.0 (a Keras BiLSTM), ported to candle.
//!
//! A [`ToxicityScorer`] scores texts on the six Jigsaw labels ([`LABELS`]),
//! each an independent sigmoid in `[0, 1]`. It loads a folder with two files
//! that `scripts/convert-toxicity.py` makes, once, from the package's
//! `model.weights.h5` and `tokenizer.pickle` (`scripts/fetch-models toxicity`
//! puts all four in `${SAGERT_CACHE_DIR:-$HOME/.cache/sagert}/models/toxicity/`):
//!
//! | file | contents |
//! | --- | --- |
//! | `toxicity.safetensors` | F32 weights in the Keras layout (kernels `[in, out]`, LSTM gates `i, f, c, o`), names and metadata documented in the script |
//! | `tokenizer.json` | the Keras tokenizer's settings and `word_index` (the 19,999 most frequent words), plus `maxlen` 100, padding and truncating `"pre"` |
//!
//! # Model
//!
//! `Embedding(20000, 50) -> Bidirectional(LSTM(50, return_sequences)) ->
//! GlobalMaxPooling1D -> Dense(50, relu) -> Dense(6, sigmoid)`, no masking:
//! the Keras model is built without `mask_zero`, so the padding zeros in front
//! of a short text run through both LSTM directions and take part in the max
//! pool, and the scores depend on them (an empty text scores `toxic` 0.07).
//! Texts are tokenized by [`KerasTokenizer`], a reimplementation of the Keras
//! `Tokenizer` and `pad_sequences`: sequences longer than 100 words keep their
//! *last* 100. `model.rs` explains how the forward pass is arranged.
//!
//! The scores match the original Keras model (Keras 3, as the package runs it)
//! to about 1e-6; `tests/toxicity.rs` checks them against
//! `tests/fixtures/toxicity_reference.json`, which
//! `scripts/reference/toxicity_reference.py` writes.
//!
//! # Threads
//!
//! Each scorer owns a rayon pool of exactly [`ToxicityOptions::threads`]
//! threads, and [`ToxicityScorer::score`] runs inside it: the texts are
//! sorted by length (a batch skips the padding all its texts share) and cut
//! into batches of at most [`ToxicityOptions::batch_size`] that run in
//! parallel, one per thread, and candle's matrix products run on that pool
//! too. candle's other pool (the process-wide "barrier pool", which spins and
//! is sized once from `CANDLE_NUM_THREADS`, `RAYON_NUM_THREADS` or the core
//! count) serves only elementwise operations on 64K+ elements; batches of up
//! to 160 texts stay below that, so the default of 128 keeps the scorer off
//! it. Nothing here sets environment variables. More threads than cores slows
//! candle down many times over: the default is the cores this process may use.
//!
//! Neighbours: [`crate::embed`], the MiniLM sentence embedder, on the same
//! conventions.

mod model;
mod tokenizer;

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use model::BiLstm;
pub use model::WEIGHTS_FORMAT;
pub use tokenizer::{KerasTokenizer, Side, TokenizerConfig, KERAS_FILTERS, TOKENIZER_FORMAT};

/// The Jigsaw labels, in the model's output order.
pub const LABELS: [&str; 6] = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"];

/// The converted weights' file name in the model folder.
pub const WEIGHTS_FILE: &str = "toxicity.safetensors";
/// The converted tokenizer's file name in the model folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The original Keras files that `scripts/convert-toxicity.py` reads.
pub const ORIGINAL_FILES: [&str; 2] = ["model.weights.h5", "tokenizer.pickle"];

/// Batches above this many texts would send elementwise operations to
/// candle's spinning barrier pool (2 x 160 x 200 < 64K elements).
const MAX_BATCH: usize = 160;

/// What can go wrong loading or running the toxicity scorer.
#[derive(Debug, thiserror::Error)]
pub enum ToxicityError {
    /// A converted file is missing; `hint` says how to make it.
    #[error("toxicity model file {} is missing; {hint}", path.display())]
    MissingFile { path: PathBuf, hint: String },
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid toxicity tokenizer {origin}: {reason}")]
    Tokenizer { origin: String, reason: String },
    #[error("invalid toxicity weights {}: {reason}", path.display())]
    Weights { path: PathBuf, reason: String },
    #[error("invalid toxicity options: {0}")]
    Options(String),
    #[error("toxicity scorer: building its thread pool")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
    #[error("toxicity scorer: {stage}")]
    Candle {
        stage: &'static str,
        #[source]
        source: candle_core::Error,
    },
}

/// The six Jigsaw scores of one text, each in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ToxicityScores {
    pub toxic: f32,
    pub severe_toxic: f32,
    pub obscene: f32,
    pub threat: f32,
    pub insult: f32,
    pub identity_hate: f32,
}

impl ToxicityScores {
    /// From the scores in [`LABELS`] order.
    pub fn from_array(s: [f32; 6]) -> Self {
        let [toxic, severe_toxic, obscene, threat, insult, identity_hate] = s;
        ToxicityScores { toxic, severe_toxic, obscene, threat, insult, identity_hate }
    }

    /// The scores in [`LABELS`] order.
    pub fn to_array(&self) -> [f32; 6] {
        [self.toxic, self.severe_toxic, self.obscene, self.threat, self.insult, self.identity_hate]
    }

    /// `(label, score)` pairs in [`LABELS`] order.
    pub fn labels(&self) -> [(&'static str, f32); 6] {
        let s = self.to_array();
        std::array::from_fn(|i| (LABELS[i], s[i]))
    }

    /// The highest of the six scores.
    pub fn max(&self) -> f32 {
        self.to_array().into_iter().fold(f32::NEG_INFINITY, f32::max)
    }

    /// The label with the highest score, and that score (the first on ties).
    pub fn max_label(&self) -> (&'static str, f32) {
        self.labels().into_iter().fold(("", f32::NEG_INFINITY), |best, x| if x.1 > best.1 { x } else { best })
    }

    /// The mean of the six scores: the package's "overall toxicity"
    /// (`ToxicCommentClassifier.predict`).
    pub fn mean(&self) -> f32 {
        self.to_array().iter().sum::<f32>() / 6.0
    }
}

/// How a [`ToxicityScorer`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToxicityOptions {
    /// Threads of the scorer's own pool (at least 1). More than the cores the
    /// process may use slows candle down a lot; see the module docs.
    pub threads: usize,
    /// Texts per forward pass, 1 to 160 (above that candle's elementwise
    /// operations go to its spinning pool; see the module docs).
    pub batch_size: usize,
}

impl Default for ToxicityOptions {
    /// The cores this process may use (`std::thread::available_parallelism`),
    /// and batches of 128.
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        ToxicityOptions { threads, batch_size: 128 }
    }
}

/// The toxicity classifier, loaded; see the module docs.
#[derive(Debug)]
pub struct ToxicityScorer {
    tokenizer: KerasTokenizer,
    model: BiLstm,
    pool: rayon::ThreadPool,
    options: ToxicityOptions,
}

impl ToxicityScorer {
    /// Loads the converted model folder with [`ToxicityOptions::default`].
    pub fn load(dir: &Path) -> Result<Self, ToxicityError> {
        Self::load_with(dir, ToxicityOptions::default())
    }

    /// Loads `dir/toxicity.safetensors` and `dir/tokenizer.json`.
    ///
    /// A missing file is a [`ToxicityError::MissingFile`] whose hint says to
    /// run `scripts/convert-toxicity.py` when the original Keras files are
    /// there, and `scripts/fetch-models toxicity` otherwise.
    pub fn load_with(dir: &Path, options: ToxicityOptions) -> Result<Self, ToxicityError> {
        if options.threads == 0 || options.batch_size == 0 || options.batch_size > MAX_BATCH {
            return Err(ToxicityError::Options(format!(
                "threads ({}) must be at least 1 and batch_size ({}) from 1 to {MAX_BATCH}",
                options.threads, options.batch_size
            )));
        }
        let weights_path = dir.join(WEIGHTS_FILE);
        let tokenizer_path = dir.join(TOKENIZER_FILE);
        for path in [&weights_path, &tokenizer_path] {
            if !path.is_file() {
                return Err(missing_file(dir, path));
            }
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.threads)
            .thread_name(|i| format!("sagert-toxicity-{i}"))
            .build()?;
        let tokenizer = KerasTokenizer::from_file(&tokenizer_path)?;
        let mut model = pool.install(|| BiLstm::load(&weights_path))?;
        let max_id = tokenizer.max_id();
        if max_id as usize >= model.vocab() {
            return Err(ToxicityError::Tokenizer {
                origin: tokenizer_path.display().to_string(),
                reason: format!("word index {max_id} is beyond the embedding's {} rows", model.vocab()),
            });
        }
        pool.install(|| model.cache_padding(tokenizer.maxlen()))
            .map_err(|source| ToxicityError::Candle { stage: "caching the padding states", source })?;
        Ok(ToxicityScorer { tokenizer, model, pool, options })
    }

    /// The tokenizer (for inspecting what the model sees).
    pub fn tokenizer(&self) -> &KerasTokenizer {
        &self.tokenizer
    }

    /// The options the scorer was loaded with.
    pub fn options(&self) -> ToxicityOptions {
        self.options
    }

    /// Scores `texts`, in order. Any text is valid (an empty one too).
    pub fn score(&self, texts: &[&str]) -> Result<Vec<ToxicityScores>, ToxicityError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        // Even batches, at least one per thread when there are enough texts.
        let per_thread = texts.len().div_ceil(self.options.threads);
        let batch = per_thread.clamp(1, self.options.batch_size);
        let rows = self.pool.install(|| {
            let ids: Vec<Vec<u32>> = texts.par_iter().map(|t| self.tokenizer.encode(t)).collect();
            // Texts of similar length together: the model skips the padding
            // that all texts of a batch share.
            let mut order: Vec<usize> = (0..texts.len()).collect();
            order.sort_by_key(|&i| ids[i].iter().filter(|&&id| id != 0).count());
            let batches = order
                .par_chunks(batch)
                .map(|chunk| {
                    let batch_ids: Vec<Vec<u32>> = chunk.iter().map(|&i| ids[i].clone()).collect();
                    self.model
                        .forward(&batch_ids)
                        .map_err(|source| ToxicityError::Candle { stage: "forward", source })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut rows = vec![Vec::new(); texts.len()];
            for (&i, row) in order.iter().zip(batches.into_iter().flatten()) {
                rows[i] = row;
            }
            Ok::<_, ToxicityError>(rows)
        })?;
        Ok(rows
            .into_iter()
            .map(|row| {
                ToxicityScores::from_array(
                    row.try_into().expect("the classifier has 6 outputs (checked at load)"),
                )
            })
            .collect())
    }
}

fn missing_file(dir: &Path, path: &Path) -> ToxicityError {
    let originals = ORIGINAL_FILES.iter().all(|f| dir.join(f).is_file());
    let hint = if originals {
        format!(
            "{} has the original Keras files: convert them with `scripts/convert-toxicity.py {} {}`",
            dir.display(),
            dir.display(),
            dir.display()
        )
    } else {
        "fetch and convert the model with `scripts/fetch-models toxicity` (or convert \
         model.weights.h5 and tokenizer.pickle with `scripts/convert-toxicity.py IN_DIR OUT_DIR`)"
            .to_owned()
    };
    ToxicityError::MissingFile { path: path.to_owned(), hint }
}
