//! Tensor names between GGUF (llama.cpp) and Hugging Face transformers, and the
//! q/k row permutation between their rotary-embedding layouts.
//!
//! llama.cpp's `llama` architecture applies rotary embeddings to adjacent pairs
//! of each head's dimensions (GPT-J style); transformers' `LlamaAttention`
//! rotates the two halves of each head (GPT-NeoX style). llama.cpp's
//! `convert_hf_to_gguf.py` (`LlamaModel.permute`) therefore reorders the rows of
//! `q_proj` and `k_proj` head by head:
//! `w.reshape(heads, 2, rows / heads / 2, cols).swapaxes(1, 2).reshape(rows, cols)`,
//! with the key/value head count for `k_proj`. [`permute_rows`] is that,
//! [`unpermute_rows`] its inverse. The `qwen2` architecture uses NeoX rotation
//! in llama.cpp too, so its weights are copied as they are.

use candle_core::Tensor;

use crate::ConvertError;

/// Per-layer tensors: (GGUF suffix, HF suffix), both without `.weight`/`.bias`.
const LAYER: &[(&str, &str)] = &[
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Whole-model tensors: (GGUF name, HF name), without `.weight`.
const GLOBAL: &[(&str, &str)] =
    &[("token_embd", "model.embed_tokens"), ("output_norm", "model.norm"), ("output", "lm_head")];

/// Which rows a tensor's rotary permutation concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotary {
    /// Not rotated: copied as is.
    None,
    /// A query projection (weight or bias): permuted with the attention head count.
    Query,
    /// A key projection: permuted with the key/value head count.
    Key,
}

fn split_suffix(name: &str) -> Option<(&str, &str)> {
    name.strip_suffix(".weight")
        .map(|stem| (stem, "weight"))
        .or_else(|| name.strip_suffix(".bias").map(|stem| (stem, "bias")))
}

/// The transformers name of GGUF tensor `name`, or `None` for a tensor that has
/// no transformers counterpart (`rope_freqs.weight`, unknown names).
pub fn gguf_to_hf_name(name: &str) -> Option<String> {
    let (stem, kind) = split_suffix(name)?;
    if let Some((_, hf)) = GLOBAL.iter().find(|(g, _)| *g == stem) {
        return Some(format!("{hf}.{kind}"));
    }
    let rest = stem.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, hf) = LAYER.iter().find(|(g, _)| *g == part)?;
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// The GGUF name of transformers tensor `name`, or `None` for one llama.cpp does
/// not load (`rotary_emb.inv_freq`, unknown names).
pub fn hf_to_gguf_name(name: &str) -> Option<String> {
    let (stem, kind) = split_suffix(name)?;
    if let Some((g, _)) = GLOBAL.iter().find(|(_, hf)| *hf == stem) {
        return Some(format!("{g}.{kind}"));
    }
    let rest = stem.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (g, _) = LAYER.iter().find(|(_, hf)| *hf == part)?;
    Some(format!("blk.{layer}.{g}.{kind}"))
}

/// Which rotary permutation GGUF tensor `name` takes.
pub fn rotary_of(gguf_name: &str) -> Rotary {
    let stem = split_suffix(gguf_name).map_or(gguf_name, |(stem, _)| stem);
    if stem.ends_with(".attn_q") {
        Rotary::Query
    } else if stem.ends_with(".attn_k") {
        Rotary::Key
    } else {
        Rotary::None
    }
}

/// Reorder the rows of `w` (shape `[rows, ...]`) from transformers' rotary
/// layout to llama.cpp's, `heads` heads at a time.
pub fn permute_rows(w: &Tensor, heads: usize, name: &str) -> Result<Tensor, ConvertError> {
    reorder(w, heads, name, true)
}

/// The inverse of [`permute_rows`]: llama.cpp's layout back to transformers'.
pub fn unpermute_rows(w: &Tensor, heads: usize, name: &str) -> Result<Tensor, ConvertError> {
    reorder(w, heads, name, false)
}

fn reorder(w: &Tensor, heads: usize, name: &str, forward: bool) -> Result<Tensor, ConvertError> {
    let dims = w.dims().to_vec();
    let rows = dims[0];
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return Err(ConvertError::Tensor {
            name: name.into(),
            message: format!("{rows} rows do not split into {heads} heads of pairs"),
        });
    }
    let half = rows / heads / 2;
    let rest: usize = dims[1..].iter().product();
    // (heads, 2, half, rest) <-> (heads, half, 2, rest): swapping axes 1 and 2
    // maps one layout to the other; which is which decides the direction.
    let split = if forward { [heads, 2, half, rest] } else { [heads, half, 2, rest] };
    let map = |e| ConvertError::Tensor { name: name.into(), message: format!("{e}") };
    w.reshape(split.as_slice())
        .and_then(|t| t.transpose(1, 2))
        .and_then(|t| t.contiguous())
        .and_then(|t| t.reshape(dims.as_slice()))
        .map_err(map)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    #[test]
    fn names_map_both_ways() {
        let pairs = [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("output.weight", "lm_head.weight"),
            ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"),
            ("blk.12.attn_q.weight", "model.layers.12.self_attn.q_proj.weight"),
            ("blk.12.attn_q.bias", "model.layers.12.self_attn.q_proj.bias"),
            ("blk.3.attn_k.weight", "model.layers.3.self_attn.k_proj.weight"),
            ("blk.3.attn_v.weight", "model.layers.3.self_attn.v_proj.weight"),
            ("blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"),
            ("blk.29.ffn_norm.weight", "model.layers.29.post_attention_layernorm.weight"),
            ("blk.29.ffn_gate.weight", "model.layers.29.mlp.gate_proj.weight"),
            ("blk.29.ffn_up.weight", "model.layers.29.mlp.up_proj.weight"),
            ("blk.29.ffn_down.weight", "model.layers.29.mlp.down_proj.weight"),
        ];
        for (gguf, hf) in pairs {
            assert_eq!(gguf_to_hf_name(gguf).as_deref(), Some(hf), "{gguf}");
            assert_eq!(hf_to_gguf_name(hf).as_deref(), Some(gguf), "{hf}");
        }
        assert_eq!(gguf_to_hf_name("rope_freqs.weight"), None);
        assert_eq!(gguf_to_hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_to_gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq"), None);
        assert_eq!(rotary_of("blk.1.attn_q.weight"), Rotary::Query);
        assert_eq!(rotary_of("blk.1.attn_k.bias"), Rotary::Key);
        assert_eq!(rotary_of("blk.1.attn_v.weight"), Rotary::None);
    }

    #[test]
    fn permutation_matches_llama_cpp_and_inverts() {
        // Two heads of four rows (pairs of two), one column: the row values are
        // their indices. llama.cpp's permute interleaves each head's halves:
        // head [0 1 2 3] -> [0 2 1 3].
        let w = Tensor::arange(0f32, 8., &Device::Cpu).unwrap().reshape((8, 1)).unwrap();
        let p = permute_rows(&w, 2, "q").unwrap();
        let rows: Vec<f32> = p.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(rows, [0., 2., 1., 3., 4., 6., 5., 7.]);

        let w = Tensor::randn(0f32, 1., (192, 576), &Device::Cpu).unwrap();
        let there = permute_rows(&w, 3, "k").unwrap();
        assert_ne!(there.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        let back = unpermute_rows(&there, 3, "k").unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        let back = permute_rows(&unpermute_rows(&w, 3, "k").unwrap(), 3, "k").unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());

        // A bias (one dimension) permutes the same way.
        let b = Tensor::arange(0f32, 8., &Device::Cpu).unwrap();
        let p = permute_rows(&b, 2, "q.bias").unwrap();
        assert_eq!(p.to_vec1::<f32>().unwrap(), [0., 2., 1., 3., 4., 6., 5., 7.]);
        assert_eq!(p.dtype(), DType::F32);

        assert!(permute_rows(&w, 5, "k").is_err(), "192 rows are not 5 heads of pairs");
    }
}
