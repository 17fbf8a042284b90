//! The MiniLM sentence embedder: all-MiniLM-L6-v2 (or any sentence-transformers
//! folder of a BERT encoder with mean pooling) on candle, on the CPU.
//!
//! An [`Embedder`] loads a sentence-transformers model folder (as
//! `scripts/fetch-models minilm-l6` leaves it in
//! `${SAGERT_CACHE_DIR:-$HOME/.cache/sagert}/models/minilm-l6/`, or as a
//! Hugging Face Hub download of `sentence-transformers/all-MiniLM-L6-v2` lays it
//! out):
//!
//! | file | what is read |
//! | --- | --- |
//! | `config.json` | the BERT shape (required) |
//! | `tokenizer.json` | the WordPiece tokenizer, with its normalizer and pre-tokenizer (required) |
//! | `model.safetensors` | F32 weights, names with or without `bert.` (required) |
//! | `sentence_bert_config.json` | `max_seq_length` (256 for this model; else `max_position_embeddings`) |
//! | `1_Pooling/config.json` | must ask for mean pooling if present |
//!
//! [`Embedder::embed`] tokenizes (with `[CLS]`/`[SEP]`, truncated to
//! `max_seq_length`), sorts the texts by length, runs batches of
//! [`EmbedOptions::batch_size`] padded to their longest text, mean-pools the
//! last hidden states over the attention mask, L2-normalises, and returns the
//! vectors in input order. The result matches sentence-transformers to a
//! cosine above 0.9999 (`tests/embed.rs` checks it against vectors written by
//! `scripts/reference/minilm_reference.py`). Since the vectors are unit-norm,
//! [`cosine`] of two of them is their dot product.
//!
//! # Threads
//!
//! Each [`Embedder`] owns a rayon pool of exactly [`EmbedOptions::threads`]
//! threads and runs tokenization and the forward pass inside it. More threads
//! than the cores the process may use slows candle down many times over (its
//! pools spin while they wait), so the count is explicit. In candle 0.11:
//!
//! - matrix products (nearly all the time) run on the *current* rayon pool,
//!   so on the embedder's, split into `candle_core::utils::get_num_threads()`
//!   tasks (`RAYON_NUM_THREADS`, else the physical core count): more tasks
//!   than threads only queue, and a pool larger than that count does not
//!   make them faster;
//! - candle's own elementwise ops on 64K+ elements would run on its
//!   process-wide, spinning "barrier pool" (sized once, at first use, from
//!   `CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the physical core
//!   count). The embedder uses none of them: its elementwise steps are fused
//!   kernels of its own (embedding sum + LayerNorm, head split, masked
//!   softmax, bias + GELU, bias + residual + LayerNorm, pooling) that run on
//!   the current rayon pool.
//!
//! So two embedders, or tests running in parallel, neither share nor resize
//! each other's threads. The embedder never sets environment variables: doing
//! so while other threads run is unsound.

mod bert;
mod error;
mod kernels;

use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::Device;
use rayon::prelude::*;
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use self::bert::{Bert, BertConfig};
pub use self::error::EmbedError;
use self::kernels::mean_pool_normalize;

/// How an [`Embedder`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbedOptions {
    /// Threads of the embedder's own pool (at least 1). More than the cores
    /// the process may use slows candle down a lot; see the module docs.
    pub threads: usize,
    /// Texts per forward pass (at least 1). 32 is a good value on a CPU.
    pub batch_size: usize,
}

impl Default for EmbedOptions {
    /// The cores this process may use (`std::thread::available_parallelism`),
    /// and batches of 32.
    fn default() -> Self {
        Self { threads: std::thread::available_parallelism().map_or(1, |n| n.get()), batch_size: 32 }
    }
}

/// A loaded sentence embedder. Cheap to share: `embed` takes `&self` and may be
/// called from several threads at once (the calls share its thread pool).
pub struct Embedder {
    tokenizer: Tokenizer,
    model: Bert,
    pool: rayon::ThreadPool,
    options: EmbedOptions,
    max_seq_length: usize,
    dim: usize,
}

impl fmt::Debug for Embedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Embedder")
            .field("dim", &self.dim)
            .field("max_seq_length", &self.max_seq_length)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// `sentence_bert_config.json`.
#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

/// `1_Pooling/config.json`.
#[derive(Deserialize)]
struct PoolingConfig {
    word_embedding_dimension: usize,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

const REQUIRED: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

impl Embedder {
    /// Loads the model folder `dir` (see the module docs for what it holds).
    ///
    /// Fails with [`EmbedError::MissingFile`] naming the first required file
    /// that is absent, and with [`EmbedError::Options`] when `threads` or
    /// `batch_size` is 0.
    pub fn load(dir: &Path, options: EmbedOptions) -> Result<Self, EmbedError> {
        if options.threads == 0 || options.batch_size == 0 {
            return Err(EmbedError::Options(format!(
                "threads ({}) and batch_size ({}) must be at least 1",
                options.threads, options.batch_size
            )));
        }
        for file in REQUIRED {
            if !dir.join(file).is_file() {
                return Err(EmbedError::MissingFile { dir: dir.to_path_buf(), file });
            }
        }

        let config_path = dir.join("config.json");
        let config: BertConfig = read_json(&config_path)?;
        if let Some(reason) = config.unsupported() {
            return Err(EmbedError::Unsupported { path: config_path, reason });
        }

        let st_path = dir.join("sentence_bert_config.json");
        let max_seq_length =
            if st_path.is_file() { read_json::<SentenceBertConfig>(&st_path)?.max_seq_length } else { None }
                .unwrap_or(config.max_position_embeddings);
        if max_seq_length < 2 || max_seq_length > config.max_position_embeddings {
            return Err(EmbedError::Unsupported {
                path: st_path,
                reason: format!(
                    "max_seq_length {max_seq_length} is outside 2..={}",
                    config.max_position_embeddings
                ),
            });
        }

        let pooling_path = dir.join("1_Pooling").join("config.json");
        if pooling_path.is_file() {
            let pooling: PoolingConfig = read_json(&pooling_path)?;
            let only_mean = pooling.pooling_mode_mean_tokens
                && !pooling.pooling_mode_cls_token
                && !pooling.pooling_mode_max_tokens
                && !pooling.pooling_mode_mean_sqrt_len_tokens;
            if !only_mean || pooling.word_embedding_dimension != config.hidden_size {
                return Err(EmbedError::Unsupported {
                    path: pooling_path,
                    reason: format!(
                        "only mean pooling of the {}-wide hidden states is implemented",
                        config.hidden_size
                    ),
                });
            }
        }

        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = load_tokenizer(&tokenizer_path, max_seq_length)?;
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > config.vocab_size {
            return Err(EmbedError::Unsupported {
                path: tokenizer_path,
                reason: format!(
                    "the tokenizer has {vocab} tokens, the model's vocab_size is {}",
                    config.vocab_size
                ),
            });
        }

        let weights_path = dir.join("model.safetensors");
        let model = candle_core::safetensors::load(&weights_path, &Device::Cpu)
            .and_then(|tensors| Bert::new(&config, tensors))
            .map_err(|source| EmbedError::Weights { path: weights_path, source })?;

        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.threads)
            .thread_name(|i| format!("sagert-embed-{i}"))
            .build()
            .map_err(|source| EmbedError::ThreadPool { threads: options.threads, source })?;

        Ok(Self { tokenizer, model, pool, options, max_seq_length, dim: config.hidden_size })
    }

    /// The length of the embedding vectors (384 for all-MiniLM-L6-v2).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Token count past which texts are cut, `[CLS]` and `[SEP]` included.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// The options the embedder was loaded with.
    pub fn options(&self) -> EmbedOptions {
        self.options
    }

    /// The token ids the model sees for `text`: `[CLS]`, the word pieces,
    /// `[SEP]`, truncated to [`max_seq_length`](Self::max_seq_length).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        self.tokenize(0, text)
    }

    /// One unit-norm vector of [`dim`](Self::dim) floats per text, in the order
    /// of `texts`. An empty slice gives an empty result; an empty text gives
    /// the embedding of `[CLS] [SEP]`.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.pool.install(|| {
            let ids = texts
                .par_iter()
                .enumerate()
                .map(|(index, text)| self.tokenize(index, text))
                .collect::<Result<Vec<_>, _>>()?;

            // Sorted by length (longest first, ties in input order), so each
            // batch pads its texts to about their own length.
            let mut order: Vec<usize> = (0..ids.len()).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));

            let mut out = vec![Vec::new(); texts.len()];
            for chunk in order.chunks(self.options.batch_size) {
                let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
                for (&i, vector) in chunk.iter().zip(self.embed_batch(&batch)?) {
                    out[i] = vector;
                }
            }
            Ok(out)
        })
    }

    fn tokenize(&self, index: usize, text: &str) -> Result<Vec<u32>, EmbedError> {
        let encoding = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| EmbedError::Tokenize { index, message: e.to_string() })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Embeds token-id sequences of one batch, padded to the longest.
    fn embed_batch(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let lengths: Vec<usize> = batch.iter().map(|ids| ids.len()).collect();
        let seq = lengths.iter().copied().max().unwrap_or(0);
        let mut ids = Vec::with_capacity(batch.len() * seq);
        for row in batch {
            ids.extend_from_slice(row);
            ids.resize(ids.len() + seq - row.len(), 0);
        }
        let hidden = self.model.forward(&ids, &lengths, seq).map_err(|source| EmbedError::Forward {
            batch: batch.len(),
            tokens: seq,
            source,
        })?;
        Ok(mean_pool_normalize(&hidden, &lengths, seq, self.dim))
    }
}

/// The cosine similarity of two vectors; 0 when either is all zeros. For the
/// unit-norm vectors of [`Embedder::embed`] it equals their dot product.
///
/// # Panics
///
/// When the lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "cosine of vectors of different lengths");
    let (mut dot, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    (dot / (aa.sqrt() * bb.sqrt())) as f32
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EmbedError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| EmbedError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|source| EmbedError::Config { path: path.to_path_buf(), source })
}

/// Loads `tokenizer.json` and sets it up as sentence-transformers calls it:
/// truncation to `max_length` tokens (special tokens included, from the
/// right), and no padding (the file of this model asks for fixed padding to
/// 128, which sentence-transformers overrides; batches are padded here).
fn load_tokenizer(path: &Path, max_length: usize) -> Result<Tokenizer, EmbedError> {
    let error = |message: String| EmbedError::Tokenizer { path: PathBuf::from(path), message };
    let mut tokenizer = Tokenizer::from_file(path).map_err(|e| error(e.to_string()))?;
    tokenizer
        .with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|e| error(e.to_string()))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-7);
        assert!(cosine(&[1.0, 0.0], &[0.0, 2.0]).abs() < 1e-7);
        assert!((cosine(&[1.0, 1.0], &[-2.0, -2.0]) + 1.0).abs() < 1e-7);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 2.0]), 0.0);
    }

    #[test]
    fn zero_threads_or_batch_is_an_options_error() {
        let dir = Path::new("/nonexistent");
        for options in
            [EmbedOptions { threads: 0, batch_size: 8 }, EmbedOptions { threads: 1, batch_size: 0 }]
        {
            let err = Embedder::load(dir, options).unwrap_err();
            assert!(matches!(err, EmbedError::Options(_)), "{err}");
        }
    }
}
