//! Conversion between Hugging Face transformers checkpoints (safetensors,
//! `config.json`, `tokenizer.json`) and GGUF for llama-family models, and the
//! tokenizer of a GGUF model as a [`tokenizers::Tokenizer`].
//!
//! The alignment trainer exports merged models as transformers directories; the
//! embedded engine (`sagert-llama`, llama.cpp) loads only GGUF. This crate
//! converts both ways by itself, with candle's GGUF reader and writer:
//!
//! - [`gguf_to_hf`]: dequantizes every tensor (F32, F16 or BF16 out), renames it
//!   ([`names`]), undoes llama.cpp's q/k row permutation, and writes
//!   `model.safetensors`, `config.json`, `tokenizer.json`,
//!   `tokenizer_config.json` (with the chat template) and
//!   `generation_config.json`.
//! - [`hf_to_gguf`]: `LlamaForCausalLM` and `MistralForCausalLM` (GGUF
//!   architecture `llama`) and `Qwen2ForCausalLM` (`qwen2`) to F32, F16 or Q8_0,
//!   with the hyperparameter keys llama.cpp reads, the `tokenizer.ggml.*` keys
//!   (pre-tokenizer name included) and the chat template; single or sharded
//!   safetensors. Norms and biases stay F32, as in llama.cpp's converter.
//! - [`tokenizer_from_gguf`]: the tokenizer the trainer uses when it starts from
//!   a GGUF model, built to split text exactly as llama.cpp does (see
//!   [`tokenizer`] for the supported vocabulary and pre-tokenizer types);
//!   [`load_tokenizer`] also reads a directory's `tokenizer.json`.
//! - [`convert_cached`]: a transformers directory converted once into a cache
//!   keyed by its contents ([`source_key`]), for `sagert`'s embedded endpoints.
//!
//! Outputs are written to a temporary sibling and renamed into place. The whole
//! model is held in memory during a conversion (at the output dtype). The
//! conversion's tensor work runs in a rayon pool of [`Options::threads`].
//!
//! Neighbours: `sagert-llama` loads the GGUF files; `sagert-models` fetches the
//! originals; the `sagert models convert` command wraps this crate.

mod convert;
mod error;
pub mod names;
pub mod params;
pub mod tokenizer;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256};

pub use error::ConvertError;
pub use params::{Arch, ModelParams};

/// The floating-point type of the safetensors [`gguf_to_hf`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfDtype {
    F32,
    F16,
    Bf16,
}

/// The tensor type of the GGUF file [`hf_to_gguf`] writes (2-D weights; norms
/// and biases are always F32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufDtype {
    F32,
    F16,
    Q8_0,
}

impl FromStr for HfDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(HfDtype::F32),
            "f16" => Ok(HfDtype::F16),
            "bf16" => Ok(HfDtype::Bf16),
            other => Err(format!("unknown safetensors dtype `{other}`; expected f32, f16 or bf16")),
        }
    }
}

impl FromStr for GgufDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(GgufDtype::F32),
            "f16" => Ok(GgufDtype::F16),
            "q8_0" => Ok(GgufDtype::Q8_0),
            other => Err(format!("unknown GGUF dtype `{other}`; expected f32, f16 or q8_0")),
        }
    }
}

impl fmt::Display for GgufDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GgufDtype::F32 => "f32",
            GgufDtype::F16 => "f16",
            GgufDtype::Q8_0 => "q8_0",
        })
    }
}

/// One tensor converted.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// Tensors done so far.
    pub done: usize,
    /// Tensors in all.
    pub total: usize,
    /// The tensor just converted (empty when the file has been written).
    pub tensor: &'a str,
}

/// How a conversion runs.
#[derive(Clone, Copy)]
pub struct Options<'a> {
    /// Threads of the conversion's rayon pool.
    pub threads: usize,
    /// Called after each tensor.
    pub progress: Option<&'a (dyn Fn(Progress<'_>) + Sync)>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options { threads: 2, progress: None }
    }
}

/// What a conversion wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Tensors written.
    pub tensors: usize,
    /// Source tensors with no counterpart in the target format, left out.
    pub skipped: Vec<String>,
    /// Size of the weights file written.
    pub bytes: u64,
    /// The model's hyperparameters.
    pub params: ModelParams,
}

/// Convert the llama-family GGUF model `gguf` into a transformers directory
/// `out_dir` (created; an existing one must be empty).
pub fn gguf_to_hf(
    gguf: &Path,
    out_dir: &Path,
    dtype: HfDtype,
    options: &Options<'_>,
) -> Result<Summary, ConvertError> {
    convert::gguf_to_hf(gguf, out_dir, dtype, options)
}

/// Convert the transformers directory `dir` into the GGUF file `out` (replaced
/// if it exists).
pub fn hf_to_gguf(
    dir: &Path,
    out: &Path,
    dtype: GgufDtype,
    options: &Options<'_>,
) -> Result<Summary, ConvertError> {
    convert::hf_to_gguf(dir, out, dtype, options)
}

/// The tokenizer of GGUF model `path`, splitting text as llama.cpp does.
/// Special tokens written in the text are parsed (as llama.cpp does with
/// `parse_special`), and `encode(text, true)` adds BOS only if the model's
/// `tokenizer.ggml.add_bos_token` says so.
pub fn tokenizer_from_gguf(path: &Path) -> Result<tokenizers::Tokenizer, ConvertError> {
    let (content, _) = convert::read_gguf(path)?;
    tokenizer::Vocab::from_gguf(path, &content.metadata)?.to_tokenizer(path)
}

/// The tokenizer of a model: a `.gguf` file's ([`tokenizer_from_gguf`]), or the
/// `tokenizer.json` of a transformers directory.
pub fn load_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer, ConvertError> {
    if path.is_dir() {
        let file = path.join("tokenizer.json");
        if !file.is_file() {
            return Err(ConvertError::missing(path, "no tokenizer.json"));
        }
        return tokenizers::Tokenizer::from_file(&file)
            .map_err(|e| ConvertError::Tokenizer { path: file, message: e.to_string() });
    }
    tokenizer_from_gguf(path)
}

/// Whether `path` is a transformers model directory (has a `config.json`).
pub fn is_hf_model_dir(path: &Path) -> bool {
    path.is_dir() && path.join("config.json").is_file()
}

/// A content key of a transformers directory: SHA-256 over the bytes of its
/// JSON files (`config.json`, tokenizer and generation configs, the shard index)
/// and the name, size and modification time of each safetensors file. Hashing
/// the weights' bytes would cost as much as converting them; a trainer that
/// rewrites them changes their time.
pub fn source_key(dir: &Path) -> Result<String, ConvertError> {
    let mut hash = Sha256::new();
    for name in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "model.safetensors.index.json",
    ] {
        let path = dir.join(name);
        if path.is_file() {
            hash.update(name.as_bytes());
            hash.update(fs::read(&path).map_err(ConvertError::io(&path))?);
        }
    }
    for file in convert::weight_files(dir)? {
        let meta = fs::metadata(&file).map_err(ConvertError::io(&file))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        hash.update(file.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
        hash.update(meta.len().to_le_bytes());
        hash.update(modified.to_le_bytes());
    }
    Ok(hex::encode(hash.finalize()))
}

/// The GGUF file for transformers directory `dir`: converted once into
/// `cache_dir` as `<dir name>-<first 16 hex digits of source_key>.<dtype>.gguf`
/// and reused while the directory's contents keep that key.
pub fn convert_cached(
    dir: &Path,
    cache_dir: &Path,
    dtype: GgufDtype,
    options: &Options<'_>,
) -> Result<PathBuf, ConvertError> {
    let key = source_key(dir)?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let out = cache_dir.join(format!("{name}-{}.{dtype}.gguf", &key[..16]));
    if out.is_file() {
        return Ok(out);
    }
    fs::create_dir_all(cache_dir).map_err(ConvertError::io(cache_dir))?;
    hf_to_gguf(dir, &out, dtype, options)?;
    Ok(out)
}
