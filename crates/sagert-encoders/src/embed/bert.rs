//! A small BERT encoder on candle-nn layers, enough for MiniLM-style sentence
//! embedders: word + position + token-type embeddings with LayerNorm, then
//! post-LayerNorm layers of masked multi-head self-attention and a GELU (erf)
//! feed-forward block. Inference only, token type 0 only, absolute positions.
//!
//! Two changes to the weights at load time save work in every forward pass and
//! do not change the function computed: the query, key and value projections
//! are fused into one matrix (one matmul instead of three), and the
//! `1/sqrt(head_dim)` attention scale is folded into the query projection.
//! Matrix products are candle's; the elementwise steps between them are the
//! fused kernels of [`super::kernels`].

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};
use serde::Deserialize;

use super::kernels::{embed_tokens, AddNorm, BiasGelu, MaskedSoftmax, Norm, SplitHeads};

/// The fields of a Hugging Face BERT `config.json` that the encoder reads.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

impl BertConfig {
    /// Why this encoder cannot run the model, if it cannot.
    pub fn unsupported(&self) -> Option<String> {
        if self.hidden_act != "gelu" {
            return Some(format!(
                "hidden_act {:?} (only \"gelu\", the erf form, is implemented)",
                self.hidden_act
            ));
        }
        if let Some(kind) = &self.position_embedding_type {
            if kind != "absolute" {
                return Some(format!("position_embedding_type {kind:?}"));
            }
        }
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Some(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        None
    }
}

/// Tensors by name, taken out one by one with their shapes checked.
struct Weights {
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    /// Names may carry the `bert.` prefix of `BertModel` checkpoints saved from a
    /// task model; sentence-transformers folders have none. Both are accepted.
    fn new(tensors: HashMap<String, Tensor>) -> Self {
        let tensors = tensors
            .into_iter()
            .map(|(name, t)| match name.strip_prefix("bert.") {
                Some(rest) => (rest.to_string(), t),
                None => (name, t),
            })
            .collect();
        Self { tensors }
    }

    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("tensor {name} is missing")))?;
        if t.dims() != shape {
            candle_core::bail!("tensor {name} has shape {:?}, expected {shape:?}", t.dims());
        }
        t.to_dtype(DType::F32)
    }

    fn vector(&mut self, name: &str, size: usize) -> Result<Vec<f32>> {
        self.take(name, &[size])?.to_vec1()
    }

    fn norm(&mut self, prefix: &str, size: usize, eps: f64) -> Result<Norm> {
        Ok(Norm {
            gamma: self.vector(&format!("{prefix}.weight"), size)?,
            beta: self.vector(&format!("{prefix}.bias"), size)?,
            eps: eps as f32,
        })
    }

    /// A dense layer's `(out, in)` weight, transposed to a contiguous `(in, out)`
    /// so that rows of activations multiply it directly.
    fn dense_weight(&mut self, name: &str, outputs: usize, inputs: usize) -> Result<Tensor> {
        self.take(name, &[outputs, inputs])?.t()?.contiguous()
    }

    /// A dense layer's output bias with the LayerNorm after its residual add.
    fn add_norm(&mut self, dense: &str, norm: &str, size: usize, eps: f64) -> Result<AddNorm> {
        Ok(AddNorm { bias: self.vector(&format!("{dense}.bias"), size)?, norm: self.norm(norm, size, eps)? })
    }
}

/// One encoder layer. Weights are stored transposed, `(in, out)` and
/// contiguous, ready to multiply; biases live in the fused ops that follow each
/// product.
struct Layer {
    /// Query, key and value projections in one, the query columns pre-scaled.
    qkv_weight: Tensor,
    qkv_bias: Vec<f32>,
    attention_out: Tensor,
    /// Output bias + residual + LayerNorm of the attention block.
    attention_norm: AddNorm,
    intermediate: Tensor,
    /// Intermediate bias + GELU.
    intermediate_gelu: BiasGelu,
    output: Tensor,
    /// Output bias + residual + LayerNorm of the feed-forward block.
    output_norm: AddNorm,
}

/// The encoder: token ids and sequence lengths in, last hidden states out.
pub(crate) struct Bert {
    /// `(vocab, hidden)`, row-major.
    word_embeddings: Vec<f32>,
    /// `(max_positions, hidden)`: position embeddings with the type-0
    /// token-type embedding already added.
    position_type_embeddings: Vec<f32>,
    embeddings_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
}

impl Bert {
    /// Builds the encoder from the tensors of a `model.safetensors`.
    pub fn new(config: &BertConfig, tensors: HashMap<String, Tensor>) -> Result<Self> {
        let mut w = Weights::new(tensors);
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let head_dim = h / config.num_attention_heads;

        let word = w.take("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let mut position_type_embeddings: Vec<f32> = w
            .take("embeddings.position_embeddings.weight", &[config.max_position_embeddings, h])?
            .flatten_all()?
            .to_vec1()?;
        let token_type: Vec<f32> = w
            .take("embeddings.token_type_embeddings.weight", &[config.type_vocab_size, h])?
            .get(0)?
            .to_vec1()?;
        // Plain loops, not candle ops: nothing here touches candle's barrier pool.
        for row in position_type_embeddings.chunks_exact_mut(h) {
            row.iter_mut().zip(&token_type).for_each(|(p, t)| *p += t);
        }
        let embeddings_norm = w.norm("embeddings.LayerNorm", h, eps)?;

        let scale = 1.0 / (head_dim as f64).sqrt();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let mut part = |name: &str| -> Result<(Tensor, Tensor)> {
                let prefix = format!("{p}.attention.self.{name}");
                let weight = w.take(&format!("{prefix}.weight"), &[h, h])?;
                let bias = w.take(&format!("{prefix}.bias"), &[h])?;
                Ok((weight, bias))
            };
            let (q_w, q_b) = part("query")?;
            let (k_w, k_b) = part("key")?;
            let (v_w, v_b) = part("value")?;
            let qkv_weight = Tensor::cat(&[(q_w * scale)?, k_w, v_w], 0)?;
            let qkv_bias = Tensor::cat(&[(q_b * scale)?, k_b, v_b], 0)?.to_vec1()?;
            let inter = config.intermediate_size;
            layers.push(Layer {
                qkv_weight: qkv_weight.t()?.contiguous()?,
                qkv_bias,
                attention_out: w.dense_weight(&format!("{p}.attention.output.dense.weight"), h, h)?,
                attention_norm: w.add_norm(
                    &format!("{p}.attention.output.dense"),
                    &format!("{p}.attention.output.LayerNorm"),
                    h,
                    eps,
                )?,
                intermediate: w.dense_weight(&format!("{p}.intermediate.dense.weight"), inter, h)?,
                intermediate_gelu: BiasGelu {
                    bias: w.vector(&format!("{p}.intermediate.dense.bias"), inter)?,
                },
                output: w.dense_weight(&format!("{p}.output.dense.weight"), h, inter)?,
                output_norm: w.add_norm(
                    &format!("{p}.output.dense"),
                    &format!("{p}.output.LayerNorm"),
                    h,
                    eps,
                )?,
            });
        }
        Ok(Self {
            word_embeddings: word.flatten_all()?.to_vec1()?,
            position_type_embeddings,
            embeddings_norm,
            layers,
            heads: config.num_attention_heads,
            hidden: h,
        })
    }

    /// Last hidden states, rows of `(batch * seq, hidden)`, for the token `ids`
    /// of `batch` sequences padded to `seq`, sequence `b` having `lengths[b]`
    /// real tokens. The states at padded positions are finite but meaningless.
    pub fn forward(&self, ids: &[u32], lengths: &[usize], seq: usize) -> Result<Vec<f32>> {
        let batch = lengths.len();
        let (h, heads) = (self.hidden, self.heads);
        if ids.len() != batch * seq {
            candle_core::bail!("{} ids for {batch} sequences of {seq}", ids.len());
        }
        let x = embed_tokens(
            ids,
            seq,
            &self.word_embeddings,
            &self.position_type_embeddings,
            &self.embeddings_norm,
        )?;
        // Rows of (batch * seq, hidden) throughout; only attention needs 4-D.
        let mut x = Tensor::from_vec(x, (batch * seq, h), &Device::Cpu)?;

        for layer in &self.layers {
            let split = SplitHeads { bias: &layer.qkv_bias, batch, seq, heads };
            let qkv = x.matmul(&layer.qkv_weight)?.apply_op1_no_bwd(&split)?;
            let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
            let probs = q.matmul(&k.t()?)?.apply_op1_no_bwd(&MaskedSoftmax { lengths })?;
            let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((batch * seq, h))?;
            let attended =
                context.matmul(&layer.attention_out)?.apply_op2_no_bwd(&x, &layer.attention_norm)?;
            let inner = attended.matmul(&layer.intermediate)?.apply_op1_no_bwd(&layer.intermediate_gelu)?;
            x = inner.matmul(&layer.output)?.apply_op2_no_bwd(&attended, &layer.output_norm)?;
        }
        x.flatten_all()?.to_vec1()
    }
}
