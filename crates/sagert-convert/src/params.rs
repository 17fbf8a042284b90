//! A llama-family model's hyperparameters, read from and written to both
//! transformers' `config.json` and GGUF metadata (the keys llama.cpp reads).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use serde_json::{json, Map, Value as Json};

use crate::ConvertError;

/// The llama.cpp architecture a model converts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `llama` (transformers `LlamaForCausalLM`, `MistralForCausalLM`): q/k rows permuted.
    Llama,
    /// `qwen2` (transformers `Qwen2ForCausalLM`): q/k/v biases, NeoX rotation, no permutation.
    Qwen2,
}

impl Arch {
    /// The GGUF `general.architecture` value, also the prefix of its keys.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    /// Whether q/k rows are permuted between the two layouts.
    pub fn permutes_qk(self) -> bool {
        self == Arch::Llama
    }
}

/// Hyperparameters of a llama-family decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelParams {
    pub arch: Arch,
    /// transformers' class name, e.g. `LlamaForCausalLM`.
    pub hf_architecture: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub num_hidden_layers: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

/// An f32 from GGUF as the shortest decimal that reads back as the same f32
/// (`9.999999747e-6` becomes `1e-5`), so that config.json says what the model's
/// authors wrote.
fn tidy(x: f32) -> f64 {
    format!("{x}").parse().unwrap_or(f64::from(x))
}

impl ModelParams {
    /// Read `config.json` (already parsed; `path` is for errors).
    pub fn from_config(path: &Path, config: &Json) -> Result<ModelParams, ConvertError> {
        let architecture = config
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Json::as_str)
            .or_else(|| config.get("model_type").and_then(Json::as_str))
            .ok_or_else(|| ConvertError::missing(path, "no `architectures` or `model_type`"))?;
        let arch = match architecture {
            "LlamaForCausalLM" | "MistralForCausalLM" | "llama" | "mistral" => Arch::Llama,
            "Qwen2ForCausalLM" | "qwen2" => Arch::Qwen2,
            other => {
                return Err(ConvertError::unsupported(
                    path,
                    format!(
                        "architecture `{other}`; supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"
                    ),
                ))
            }
        };
        let get = |key: &str| config.get(key).filter(|v| !v.is_null());
        let int = |key: &str| -> Result<usize, ConvertError> {
            get(key)
                .and_then(Json::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| ConvertError::missing(path, format!("`{key}` missing or not an integer")))
        };
        let id = |key: &str| -> Option<u32> {
            match get(key)? {
                Json::Array(ids) => ids.first().and_then(Json::as_u64).map(|v| v as u32),
                v => v.as_u64().map(|v| v as u32),
            }
        };
        if let Some(scaling) = get("rope_scaling") {
            return Err(ConvertError::unsupported(
                path,
                format!("rope_scaling {scaling} (only unscaled RoPE)"),
            ));
        }
        let hidden_size = int("hidden_size")?;
        let num_attention_heads = int("num_attention_heads")?;
        let head_dim = match get("head_dim") {
            Some(_) => int("head_dim")?,
            None => hidden_size / num_attention_heads.max(1),
        };
        Ok(ModelParams {
            arch,
            hf_architecture: architecture.to_string(),
            hidden_size,
            intermediate_size: int("intermediate_size")?,
            num_attention_heads,
            num_key_value_heads: get("num_key_value_heads")
                .map_or(Ok(num_attention_heads), |_| int("num_key_value_heads"))?,
            num_hidden_layers: int("num_hidden_layers")?,
            head_dim,
            rms_norm_eps: get("rms_norm_eps")
                .and_then(Json::as_f64)
                .ok_or_else(|| ConvertError::missing(path, "`rms_norm_eps` missing"))?,
            rope_theta: get("rope_theta").and_then(Json::as_f64).unwrap_or(10_000.0),
            max_position_embeddings: int("max_position_embeddings")?,
            vocab_size: int("vocab_size")?,
            tie_word_embeddings: get("tie_word_embeddings").and_then(Json::as_bool).unwrap_or(false),
            attention_bias: get("attention_bias").and_then(Json::as_bool).unwrap_or(arch == Arch::Qwen2),
            bos_token_id: id("bos_token_id"),
            eos_token_id: id("eos_token_id"),
            pad_token_id: id("pad_token_id"),
        })
    }

    /// Read GGUF metadata; `has_output` says whether the file has its own
    /// `output.weight` (else the embeddings are tied).
    pub fn from_gguf(
        path: &Path,
        meta: &HashMap<String, Value>,
        has_output: bool,
    ) -> Result<ModelParams, ConvertError> {
        let arch_name = meta
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .ok_or_else(|| ConvertError::missing(path, "metadata `general.architecture` missing"))?;
        let (arch, hf_architecture) = match arch_name.as_str() {
            "llama" => (Arch::Llama, "LlamaForCausalLM"),
            "qwen2" => (Arch::Qwen2, "Qwen2ForCausalLM"),
            other => {
                return Err(ConvertError::unsupported(
                    path,
                    format!("GGUF architecture `{other}`; supported: llama, qwen2"),
                ))
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let value = |k: &str| meta.get(&key(k));
        let int = |k: &str| -> Result<usize, ConvertError> {
            value(k)
                .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
                .map(|v| v as usize)
                .ok_or_else(|| ConvertError::missing(path, format!("metadata `{}` missing", key(k))))
        };
        let float = |k: &str| value(k).and_then(|v| v.to_f32().ok()).map(tidy);
        let id = |k: &str| meta.get(k).and_then(|v| v.to_u32().ok());
        if let Some(scaling) = meta.get(&key("rope.scaling.type")).and_then(|v| v.to_string().ok()) {
            if scaling != "none" {
                return Err(ConvertError::unsupported(path, format!("rope scaling `{scaling}`")));
            }
        }
        let hidden_size = int("embedding_length")?;
        let num_attention_heads = int("attention.head_count")?;
        let vocab_size = match int("vocab_size") {
            Ok(n) => n,
            Err(e) => match meta.get("tokenizer.ggml.tokens") {
                Some(Value::Array(tokens)) => tokens.len(),
                _ => return Err(e),
            },
        };
        Ok(ModelParams {
            arch,
            hf_architecture: hf_architecture.to_string(),
            hidden_size,
            intermediate_size: int("feed_forward_length")?,
            num_attention_heads,
            num_key_value_heads: int("attention.head_count_kv").unwrap_or(num_attention_heads),
            num_hidden_layers: int("block_count")?,
            head_dim: int("attention.key_length")
                .or_else(|_| int("rope.dimension_count"))
                .unwrap_or(hidden_size / num_attention_heads.max(1)),
            rms_norm_eps: float("attention.layer_norm_rms_epsilon")
                .ok_or_else(|| ConvertError::missing(path, "metadata `layer_norm_rms_epsilon` missing"))?,
            rope_theta: float("rope.freq_base").unwrap_or(10_000.0),
            max_position_embeddings: int("context_length")?,
            vocab_size,
            tie_word_embeddings: !has_output,
            attention_bias: arch == Arch::Qwen2,
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_id: id("tokenizer.ggml.eos_token_id"),
            pad_token_id: id("tokenizer.ggml.padding_token_id"),
        })
    }

    /// transformers' `config.json`.
    pub fn to_config(&self) -> Json {
        let model_type = match self.arch {
            Arch::Llama if self.hf_architecture.starts_with("Mistral") => "mistral",
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        };
        let mut c = Map::new();
        c.insert("architectures".into(), json!([self.hf_architecture]));
        c.insert("model_type".into(), json!(model_type));
        c.insert("hidden_act".into(), json!("silu"));
        c.insert("hidden_size".into(), json!(self.hidden_size));
        c.insert("intermediate_size".into(), json!(self.intermediate_size));
        c.insert("num_attention_heads".into(), json!(self.num_attention_heads));
        c.insert("num_key_value_heads".into(), json!(self.num_key_value_heads));
        c.insert("num_hidden_layers".into(), json!(self.num_hidden_layers));
        c.insert("head_dim".into(), json!(self.head_dim));
        c.insert("rms_norm_eps".into(), json!(self.rms_norm_eps));
        c.insert("rope_theta".into(), json!(self.rope_theta));
        c.insert("rope_scaling".into(), Json::Null);
        c.insert("max_position_embeddings".into(), json!(self.max_position_embeddings));
        c.insert("vocab_size".into(), json!(self.vocab_size));
        c.insert("tie_word_embeddings".into(), json!(self.tie_word_embeddings));
        if self.arch == Arch::Llama {
            c.insert("attention_bias".into(), json!(self.attention_bias));
            c.insert("mlp_bias".into(), json!(false));
        }
        c.insert("bos_token_id".into(), json!(self.bos_token_id));
        c.insert("eos_token_id".into(), json!(self.eos_token_id));
        if let Some(pad) = self.pad_token_id {
            c.insert("pad_token_id".into(), json!(pad));
        }
        c.insert("torch_dtype".into(), json!("float32"));
        c.insert("use_cache".into(), json!(true));
        Json::Object(c)
    }

    /// The architecture's GGUF hyperparameter keys, as llama.cpp reads them.
    pub fn to_gguf(&self) -> Vec<(String, Value)> {
        let a = self.arch.gguf_name();
        let u32v = |n: usize| Value::U32(n as u32);
        let mut kv = vec![
            ("general.architecture".to_string(), Value::String(a.to_string())),
            (format!("{a}.context_length"), u32v(self.max_position_embeddings)),
            (format!("{a}.embedding_length"), u32v(self.hidden_size)),
            (format!("{a}.block_count"), u32v(self.num_hidden_layers)),
            (format!("{a}.feed_forward_length"), u32v(self.intermediate_size)),
            (format!("{a}.attention.head_count"), u32v(self.num_attention_heads)),
            (format!("{a}.attention.head_count_kv"), u32v(self.num_key_value_heads)),
            (format!("{a}.rope.freq_base"), Value::F32(self.rope_theta as f32)),
            (format!("{a}.attention.layer_norm_rms_epsilon"), Value::F32(self.rms_norm_eps as f32)),
            (format!("{a}.vocab_size"), u32v(self.vocab_size)),
            (format!("{a}.rope.dimension_count"), u32v(self.head_dim)),
        ];
        if self.head_dim * self.num_attention_heads != self.hidden_size {
            kv.push((format!("{a}.attention.key_length"), u32v(self.head_dim)));
            kv.push((format!("{a}.attention.value_length"), u32v(self.head_dim)));
        }
        kv
    }

    /// How many tensors the GGUF file holds: embeddings, final norm, nine per
    /// layer, the output head unless tied, and the attention biases.
    pub fn expected_tensors(&self) -> usize {
        let biases = match (self.arch, self.attention_bias) {
            (_, false) => 0,
            (Arch::Qwen2, true) => 3,
            (Arch::Llama, true) => 4,
        };
        2 + (9 + biases) * self.num_hidden_layers + usize::from(!self.tie_word_embeddings)
    }

    /// The head count the q (`query`) or k projection's rows are permuted by.
    pub fn rotary_heads(&self, query: bool) -> usize {
        if query {
            self.num_attention_heads
        } else {
            self.num_key_value_heads
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm_config() -> Json {
        json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
            "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3,
            "num_hidden_layers": 30, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
            "max_position_embeddings": 8192, "vocab_size": 49152, "tie_word_embeddings": true,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "rope_scaling": null
        })
    }

    #[test]
    fn config_to_metadata_uses_llama_cpp_keys() {
        let p = ModelParams::from_config(Path::new("config.json"), &smollm_config()).unwrap();
        assert_eq!(p.head_dim, 64);
        let kv: HashMap<String, Value> = p.to_gguf().into_iter().collect();
        let u = |k: &str| kv[k].to_u32().unwrap();
        assert_eq!(kv["general.architecture"].to_string().unwrap(), "llama");
        assert_eq!(u("llama.context_length"), 8192);
        assert_eq!(u("llama.embedding_length"), 576);
        assert_eq!(u("llama.block_count"), 30);
        assert_eq!(u("llama.feed_forward_length"), 1536);
        assert_eq!(u("llama.attention.head_count"), 9);
        assert_eq!(u("llama.attention.head_count_kv"), 3);
        assert_eq!(u("llama.vocab_size"), 49152);
        assert_eq!(u("llama.rope.dimension_count"), 64);
        assert_eq!(kv["llama.rope.freq_base"].to_f32().unwrap(), 100000.0);
        assert_eq!(kv["llama.attention.layer_norm_rms_epsilon"].to_f32().unwrap(), 1e-5);
        assert!(!kv.contains_key("llama.attention.key_length"), "head_dim is the default");

        // And back: GGUF metadata (plus the token ids) reads as the same config.
        let mut meta = kv;
        meta.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(1));
        meta.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(2));
        meta.insert("tokenizer.ggml.padding_token_id".into(), Value::U32(2));
        let q = ModelParams::from_gguf(Path::new("m.gguf"), &meta, false).unwrap();
        assert_eq!(q, p);
        let config = q.to_config();
        assert_eq!(config["rms_norm_eps"], json!(1e-5), "f32 epsilon printed as its author wrote it");
        assert_eq!(config["architectures"], json!(["LlamaForCausalLM"]));
        assert_eq!(config["tie_word_embeddings"], json!(true));
    }

    #[test]
    fn unsupported_architectures_are_named() {
        let mut c = smollm_config();
        c["architectures"] = json!(["GPT2LMHeadModel"]);
        let e = ModelParams::from_config(Path::new("/m/config.json"), &c).unwrap_err().to_string();
        assert!(e.contains("/m/config.json") && e.contains("GPT2LMHeadModel"), "{e}");

        let mut c = smollm_config();
        c["architectures"] = json!(["Qwen2ForCausalLM"]);
        let p = ModelParams::from_config(Path::new("config.json"), &c).unwrap();
        assert_eq!((p.arch, p.attention_bias), (Arch::Qwen2, true));
        assert!(p.to_gguf().iter().any(|(k, _)| k == "qwen2.attention.head_count_kv"));

        let mut c = smollm_config();
        c["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0});
        let e = ModelParams::from_config(Path::new("config.json"), &c).unwrap_err().to_string();
        assert!(e.contains("rope_scaling"), "{e}");
    }
}
