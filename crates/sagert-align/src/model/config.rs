//! The model's hyperparameters, read from transformers' `config.json`.

use std::path::Path;

use crate::{AlignError, Result};

/// The hyperparameters of a llama-family decoder, as in transformers' `config.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); `num_attention_heads` when absent.
    pub num_key_value_heads: usize,
    pub rms_norm_eps: f64,
    /// RoPE base; 10000 when absent.
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    /// Whether `lm_head` shares the embedding matrix; false when absent.
    pub tie_word_embeddings: bool,
    /// Whether q/k/v projections have biases; false when absent, except for `qwen2`.
    pub attention_bias: bool,
    /// Per-head size; `hidden_size / num_attention_heads` when absent.
    pub head_dim: Option<usize>,
}

/// `config.json` as written, before defaults and checks.
#[derive(serde::Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    max_position_embeddings: usize,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    head_dim: Option<usize>,
    rope_scaling: Option<serde_json::Value>,
    hidden_act: Option<String>,
    mlp_bias: Option<bool>,
}

impl TryFrom<RawConfig> for LlamaConfig {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<LlamaConfig, String> {
        let model_type = raw.model_type.as_deref();
        if let Some(other) = model_type.filter(|t| !["llama", "mistral", "qwen2"].contains(t)) {
            return Err(format!("model_type `{other}` is not supported; expected llama, mistral or qwen2"));
        }
        if let Some(scaling) = raw.rope_scaling {
            return Err(format!("rope_scaling {scaling} is not supported (only unscaled RoPE)"));
        }
        if let Some(act) = raw.hidden_act.filter(|a| a != "silu") {
            return Err(format!("hidden_act `{act}` is not supported (only silu)"));
        }
        if raw.mlp_bias == Some(true) {
            return Err("mlp_bias = true is not supported".into());
        }
        let cfg = LlamaConfig {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta: raw.rope_theta.unwrap_or(10_000.0),
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias: raw.attention_bias.unwrap_or(model_type == Some("qwen2")),
            head_dim: raw.head_dim,
        };
        cfg.check()?;
        Ok(cfg)
    }
}

impl LlamaConfig {
    /// Read transformers' `config.json`. Refuses other model types (than
    /// llama, mistral, qwen2), `rope_scaling`, activations other than SiLU and MLP biases.
    pub fn from_file(path: &Path) -> Result<LlamaConfig> {
        let text = std::fs::read_to_string(path).map_err(AlignError::io(path))?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| AlignError::Model { path: path.to_path_buf(), message: e.to_string() })
    }

    /// A tiny model for tests: hidden 32, 2 layers, 4 heads over 2 kv heads, MLP 64.
    pub fn tiny(vocab_size: usize) -> LlamaConfig {
        LlamaConfig {
            vocab_size,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 512,
            tie_word_embeddings: false,
            attention_bias: false,
            head_dim: None,
        }
    }

    /// The per-head size.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.head_dim() == 0 || !self.head_dim().is_multiple_of(2) {
            return Err(format!("head_dim {} must be even and positive", self.head_dim()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let base = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "rms_norm_eps": 1e-6, "max_position_embeddings": 64"#;
        let write = |extra: &str| std::fs::write(&path, format!("{{{base}{extra}}}")).unwrap();
        write(r#", "model_type": "qwen2", "rope_scaling": null"#);
        let cfg = LlamaConfig::from_file(&path).unwrap();
        assert_eq!((cfg.num_key_value_heads, cfg.rope_theta, cfg.head_dim()), (2, 10_000.0, 4));
        assert!(cfg.attention_bias && !cfg.tie_word_embeddings);
        write(r#", "model_type": "llama""#);
        assert!(!LlamaConfig::from_file(&path).unwrap().attention_bias);
        write(r#", "rope_scaling": {"type": "linear", "factor": 2.0}"#);
        assert!(LlamaConfig::from_file(&path).unwrap_err().to_string().contains("rope_scaling"));
        write(r#", "model_type": "gpt2""#);
        assert!(LlamaConfig::from_file(&path).unwrap_err().to_string().contains("gpt2"));
        write(r#", "num_key_value_heads": 3"#);
        assert!(LlamaConfig::from_file(&path).unwrap_err().to_string().contains("multiple"));
    }
}
