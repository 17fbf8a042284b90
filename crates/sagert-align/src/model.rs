//! A differentiable llama-family causal LM (Llama, Mistral, Qwen2) on candle,
//! with LoRA adapters or full fine-tuning.
//!
//! candle-transformers' llama cuts gradients silently (candle-nn's fused
//! `rms_norm`, `softmax_last_dim` and `rope` have no backward pass), so every
//! op here has one. Two paths compute the same function:
//!
//! - candle's composite ops: [`rms_norm_slow`], [`rope_slow`] (transformers'
//!   rotate-half RoPE, so HF q/k weights are used unpermuted), [`softmax`] over
//!   an additive causal mask, matmuls and broadcasts. This is the reference,
//!   and the path off the CPU;
//! - on the CPU, fused kernels with hand-written backward passes (`model/ops.rs`:
//!   RMSNorm, RoPE, causal softmax, SwiGLU; [`crate::lora`]: the LoRA linear
//!   layer). candle's autograd keeps every intermediate tensor and computes a
//!   gradient for every operand, frozen weights and constants included; the
//!   kernels keep one input and one output each and skip those gradients,
//!   which cuts the memory of a training step by about 40% and makes it
//!   matmul-bound. Unit tests check that both paths give the same logits and
//!   the same gradient for every trained tensor.
//!
//! Grouped-query attention repeats nothing: the `n_rep` query heads that share
//! a key/value head are stacked along the sequence axis, `(b, kv, n_rep·t, d)`,
//! so one batched matmul per kv head serves them all. Weights use
//! transformers' names and layout.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::ops::{rms_norm_slow, softmax};
use candle_nn::rotary_emb::rope_slow;

mod config;
mod ops;

pub use config::LlamaConfig;

use crate::lora::{Adapter, LoraConfig, LoraLinear, Param, LORA_MODULES};
use crate::{AlignError, Result};

/// What training updates.
#[derive(Debug, Clone)]
pub enum Trainable {
    /// LoRA adapters on the configured projections; the base model is frozen.
    Lora(LoraConfig),
    /// Every weight (f32).
    Full,
}

/// A transformer block's weights; `proj` follows [`LORA_MODULES`]' order.
struct Layer {
    input_norm: Param,
    post_norm: Param,
    proj: Vec<LoraLinear>,
}

/// A llama-family causal LM whose forward pass is differentiable end to end.
pub struct Llama {
    cfg: LlamaConfig,
    lora: Option<LoraConfig>,
    embed: Param,
    layers: Vec<Layer>,
    norm: Param,
    /// Shares `embed`'s weight when the embeddings are tied.
    lm_head: LoraLinear,
    device: Device,
    /// Fused CPU kernels ([`ops`]) instead of candle's composite ops.
    fused: bool,
}

/// The HF name of projection `module` (from [`LORA_MODULES`]) of layer `layer`, without `.weight`.
fn proj_name(layer: usize, module: &str) -> String {
    let block = if ["gate_proj", "up_proj", "down_proj"].contains(&module) { "mlp" } else { "self_attn" };
    format!("model.layers.{layer}.{block}.{module}")
}

/// SplitMix64: decorrelated seeds from (seed, stream) pairs.
fn mix(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of module `module` of layer `layer` for purpose `salt`.
fn module_seed(seed: u64, salt: u64, layer: usize, module: usize) -> u64 {
    mix(mix(seed, salt), (layer * LORA_MODULES.len() + module) as u64)
}

fn weights_error(message: impl Into<String>) -> AlignError {
    AlignError::Weights(message.into())
}

/// Takes the weights out of a name → tensor map, checking names and shapes.
struct WeightSource<'a> {
    weights: &'a HashMap<String, Tensor>,
    used: Vec<&'a str>,
    trainable: bool,
    device: &'a Device,
}

impl WeightSource<'_> {
    fn take(&mut self, name: &str, shape: &[usize], dtype: DType) -> Result<Param> {
        let (key, t) = self
            .weights
            .get_key_value(name)
            .ok_or_else(|| weights_error(format!("`{name}` is missing (expected shape {shape:?})")))?;
        if t.dims() != shape {
            return Err(weights_error(format!("`{name}` has shape {:?}, expected {shape:?}", t.dims())));
        }
        self.used.push(key);
        if self.trainable {
            let t = t.to_device(self.device)?.to_dtype(DType::F32)?.contiguous()?;
            Ok(Param::Trainable(Var::from_tensor(&t)?))
        } else {
            Ok(Param::Frozen(t.to_device(self.device)?.to_dtype(dtype)?.contiguous()?.detach()))
        }
    }
}

impl Llama {
    /// A model from transformers-named `weights` (any float dtype). With LoRA
    /// the base weights are frozen tensors in `dtype` (f32, or bf16/f16 to save
    /// memory; norms stay f32) and only the adapters are trained, `A` drawn
    /// from `seed` as PEFT does and `B` zero. With [`Trainable::Full`] every
    /// weight is an f32 [`Var`] and `dtype` is ignored. A name the model does
    /// not use is an error (except `lm_head.weight` of a tied model and RoPE
    /// buffers).
    pub fn new(
        cfg: &LlamaConfig,
        weights: &HashMap<String, Tensor>,
        trainable: &Trainable,
        dtype: DType,
        seed: u64,
        device: &Device,
    ) -> Result<Llama> {
        cfg.check().map_err(weights_error)?;
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(weights_error(format!("base dtype {dtype:?} is not supported (f32, bf16 or f16)")));
        }
        let lora = match trainable {
            Trainable::Lora(lora) => {
                lora.validate().map_err(weights_error)?;
                Some(lora.clone())
            }
            Trainable::Full => None,
        };
        let mut src = WeightSource { weights, used: Vec::new(), trainable: lora.is_none(), device };
        let (h, hd, inter) = (cfg.hidden_size, cfg.head_dim(), cfg.intermediate_size);
        let (q_out, kv_out) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let embed = src.take("model.embed_tokens.weight", &[cfg.vocab_size, h], dtype)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let prefix = format!("model.layers.{i}");
            let input_norm = src.take(&format!("{prefix}.input_layernorm.weight"), &[h], DType::F32)?;
            let post_norm =
                src.take(&format!("{prefix}.post_attention_layernorm.weight"), &[h], DType::F32)?;
            let mut proj = Vec::with_capacity(LORA_MODULES.len());
            for (m, module) in LORA_MODULES.iter().enumerate() {
                let (out_dim, in_dim) = match *module {
                    "q_proj" => (q_out, h),
                    "k_proj" | "v_proj" => (kv_out, h),
                    "o_proj" => (h, q_out),
                    "gate_proj" | "up_proj" => (inter, h),
                    _ => (h, inter),
                };
                let name = proj_name(i, module);
                let weight = src.take(&format!("{name}.weight"), &[out_dim, in_dim], dtype)?;
                let bias = match cfg.attention_bias && ["q_proj", "k_proj", "v_proj"].contains(module) {
                    true => Some(src.take(&format!("{name}.bias"), &[out_dim], DType::F32)?),
                    false => None,
                };
                let adapter = match &lora {
                    Some(l) if l.targets(module) => {
                        Some(Adapter::new(l, in_dim, out_dim, module_seed(seed, 0, i, m), device)?)
                    }
                    _ => None,
                };
                proj.push(LoraLinear::new(weight, bias, adapter));
            }
            layers.push(Layer { input_norm, post_norm, proj });
        }
        let norm = src.take("model.norm.weight", &[h], DType::F32)?;
        let lm_head = match cfg.tie_word_embeddings {
            true => embed.clone(),
            false => src.take("lm_head.weight", &[cfg.vocab_size, h], dtype)?,
        };
        let unused: Vec<&String> = weights
            .keys()
            .filter(|k| !src.used.contains(&k.as_str()))
            .filter(|k| !k.ends_with("rotary_emb.inv_freq"))
            .filter(|k| !(cfg.tie_word_embeddings && *k == "lm_head.weight"))
            .collect();
        if !unused.is_empty() {
            let mut unused = unused;
            unused.sort();
            return Err(weights_error(format!("tensors the model does not use: {unused:?}")));
        }
        Ok(Llama {
            cfg: cfg.clone(),
            lora,
            embed,
            layers,
            norm,
            lm_head: LoraLinear::new(lm_head, None, None),
            device: device.clone(),
            fused: device.is_cpu(),
        })
    }

    /// A randomly initialised model for tests: weights ~ N(0, 0.02²), norms 1,
    /// the same for the same `seed`.
    pub fn random(cfg: &LlamaConfig, trainable: &Trainable, seed: u64, device: &Device) -> Result<Llama> {
        let (h, hd, inter) = (cfg.hidden_size, cfg.head_dim(), cfg.intermediate_size);
        let (q_out, kv_out) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let mut rng = fastrand::Rng::with_seed(mix(seed, 1));
        let mut normal = |dims: &[usize]| -> Result<Tensor> {
            let n: usize = dims.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    // Box-Muller; 1 - f64() is in (0, 1].
                    let (u, v) = (1.0 - rng.f64(), rng.f64());
                    (0.02 * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
                })
                .collect();
            Ok(Tensor::from_vec(v, dims, device)?)
        };
        let mut w = HashMap::new();
        w.insert("model.embed_tokens.weight".to_string(), normal(&[cfg.vocab_size, h])?);
        for i in 0..cfg.num_hidden_layers {
            for norm in ["input_layernorm", "post_attention_layernorm"] {
                w.insert(format!("model.layers.{i}.{norm}.weight"), Tensor::ones(h, DType::F32, device)?);
            }
            for (module, dims) in [
                ("q_proj", [q_out, h]),
                ("k_proj", [kv_out, h]),
                ("v_proj", [kv_out, h]),
                ("o_proj", [h, q_out]),
                ("gate_proj", [inter, h]),
                ("up_proj", [inter, h]),
                ("down_proj", [h, inter]),
            ] {
                let name = proj_name(i, module);
                w.insert(format!("{name}.weight"), normal(&dims)?);
                if cfg.attention_bias && ["q_proj", "k_proj", "v_proj"].contains(&module) {
                    w.insert(format!("{name}.bias"), normal(&dims[..1])?);
                }
            }
        }
        w.insert("model.norm.weight".to_string(), Tensor::ones(h, DType::F32, device)?);
        if !cfg.tie_word_embeddings {
            w.insert("lm_head.weight".to_string(), normal(&[cfg.vocab_size, h])?);
        }
        Llama::new(cfg, &w, trainable, DType::F32, seed, device)
    }

    /// The model's configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Logits `(b, t, vocab)` in f32 for `input_ids` `(b, t)` (u32), with
    /// causal attention over positions `0..t` (right padding needs no mask).
    /// `dropout_seed`: `Some(s)` is training mode, where LoRA dropout masks are
    /// drawn from `(s, layer, module)` so that a resumed run replays the same
    /// masks; `None` is eval mode (no dropout).
    pub fn forward(&self, input_ids: &Tensor, dropout_seed: Option<u64>) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        if t > self.cfg.max_position_embeddings {
            let message = format!(
                "a sequence of {t} tokens is longer than max_position_embeddings ({})",
                self.cfg.max_position_embeddings
            );
            return Err(candle_core::Error::Msg(message).into());
        }
        let eps = self.cfg.rms_norm_eps as f32;
        let ids = input_ids.flatten_all()?.to_dtype(DType::U32)?.to_device(&self.device)?;
        let mut x = self.embed.tensor().index_select(&ids, 0)?.to_dtype(DType::F32)?;
        let attention = Attention::new(self, &rope_tables(&self.cfg, t), b, t)?;
        let norm = |x: &Tensor, w: &Param| match self.fused {
            true => ops::rms_norm(x, w.tensor(), self.cfg.rms_norm_eps),
            false => rms_norm_slow(x, w.tensor(), eps),
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let seed = |m: usize| dropout_seed.map(|s| module_seed(s, 1, i, m));
            let [q, k, v, o, gate, up, down] = &layer.proj[..] else { unreachable!("seven projections") };
            let h = norm(&x, &layer.input_norm)?;
            let proj = |p: &LoraLinear, x: &Tensor, m: usize| p.forward_with(x, seed(m), self.fused);
            let (q, k, v) = (proj(q, &h, 0)?, proj(k, &h, 1)?, proj(v, &h, 2)?);
            let attn = attention.forward(&q, &k, &v)?;
            x = (x + proj(o, &attn, 3)?)?;
            let h = norm(&x, &layer.post_norm)?;
            let (gate, up) = (proj(gate, &h, 4)?, proj(up, &h, 5)?);
            let mlp = match self.fused {
                true => ops::silu_mul(&gate, &up)?,
                false => (gate.silu()? * up)?,
            };
            x = (x + proj(down, &mlp, 6)?)?;
        }
        let h = norm(&x, &self.norm)?;
        Ok(self.lm_head.forward_with(&h, None, self.fused)?.reshape((b, t, self.cfg.vocab_size))?)
    }

    /// The trained tensors, sorted by name: PEFT's names for LoRA
    /// (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`, `(r, in)`,
    /// and `...lora_B.weight`, `(out, r)`), transformers' names for full fine-tuning.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        let mut push = |name: String, p: &Param| {
            if let Param::Trainable(v) = p {
                out.push((name, v.clone()));
            }
        };
        push("model.embed_tokens.weight".into(), &self.embed);
        for (i, layer) in self.layers.iter().enumerate() {
            push(format!("model.layers.{i}.input_layernorm.weight"), &layer.input_norm);
            push(format!("model.layers.{i}.post_attention_layernorm.weight"), &layer.post_norm);
            for (module, proj) in LORA_MODULES.iter().zip(&layer.proj) {
                let name = proj_name(i, module);
                push(format!("{name}.weight"), proj.weight());
                if let Some(bias) = proj.bias() {
                    push(format!("{name}.bias"), bias);
                }
                if let Some(adapter) = proj.adapter() {
                    push(
                        format!("base_model.model.{name}.lora_A.weight"),
                        &Param::Trainable(adapter.a.clone()),
                    );
                    push(
                        format!("base_model.model.{name}.lora_B.weight"),
                        &Param::Trainable(adapter.b.clone()),
                    );
                }
            }
        }
        push("model.norm.weight".into(), &self.norm);
        if !self.cfg.tie_word_embeddings {
            push("lm_head.weight".into(), self.lm_head.weight());
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Overwrite the trained tensors from `tensors` (a checkpoint), which must
    /// hold exactly the names of [`Llama::trainable`] with their shapes.
    pub fn load_trainable(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let vars = self.trainable();
        let missing: Vec<&str> =
            vars.iter().map(|(n, _)| n.as_str()).filter(|n| !tensors.contains_key(*n)).collect();
        let mut extra: Vec<&str> =
            tensors.keys().map(String::as_str).filter(|k| !vars.iter().any(|(n, _)| n == k)).collect();
        extra.sort_unstable();
        if !missing.is_empty() || !extra.is_empty() {
            return Err(weights_error(format!(
                "trainable tensors do not match the model: missing {missing:?}, unexpected {extra:?}"
            )));
        }
        for (name, var) in &vars {
            let t = &tensors[name];
            if t.dims() != var.dims() {
                return Err(weights_error(format!(
                    "`{name}` has shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
        }
        for (name, var) in &vars {
            let t = tensors[name].to_device(&self.device)?.to_dtype(DType::F32)?;
            // `set` refuses a tensor sharing the var's storage (the var's own
            // value passed back); a copy of it is fine.
            var.set(&t).or_else(|_| var.set(&t.copy()?))?;
        }
        Ok(())
    }

    /// Every weight under transformers' names in f32 with LoRA folded in
    /// (`W + scale · B @ A`); a tied embedding is written once (no `lm_head`).
    pub fn merged_weights(&self) -> Result<BTreeMap<String, Tensor>> {
        let f32 =
            |p: &Param| -> Result<Tensor> { Ok(p.tensor().to_dtype(DType::F32)?.contiguous()?.detach()) };
        let mut out = BTreeMap::new();
        out.insert("model.embed_tokens.weight".to_string(), f32(&self.embed)?);
        for (i, layer) in self.layers.iter().enumerate() {
            out.insert(format!("model.layers.{i}.input_layernorm.weight"), f32(&layer.input_norm)?);
            out.insert(format!("model.layers.{i}.post_attention_layernorm.weight"), f32(&layer.post_norm)?);
            for (module, proj) in LORA_MODULES.iter().zip(&layer.proj) {
                let name = proj_name(i, module);
                out.insert(format!("{name}.weight"), proj.merged_weight()?.detach());
                if let Some(bias) = proj.bias() {
                    out.insert(format!("{name}.bias"), f32(bias)?);
                }
            }
        }
        out.insert("model.norm.weight".to_string(), f32(&self.norm)?);
        if !self.cfg.tie_word_embeddings {
            out.insert("lm_head.weight".to_string(), f32(self.lm_head.weight())?);
        }
        Ok(out)
    }

    /// The LoRA configuration, when training adapters.
    pub fn lora(&self) -> Option<&LoraConfig> {
        self.lora.as_ref()
    }
}

/// RoPE tables for positions `0..t`, `(t, head_dim / 2)`, as transformers
/// computes them (`inv_freq = 1 / theta^(2i / d)` in f32).
fn rope_tables(cfg: &LlamaConfig, t: usize) -> ops::RopeTables {
    let half = cfg.head_dim() / 2;
    let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
    for p in 0..t {
        for i in 0..half {
            let inv_freq = 1.0 / cfg.rope_theta.powf((2 * i) as f64 / cfg.head_dim() as f64) as f32;
            let angle = f64::from(p as f32 * inv_freq);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    ops::RopeTables { cos: cos.into(), sin: sin.into(), half }
}

/// Causal grouped-query attention for one forward pass (tables and mask made once).
///
/// The `rep` query heads that share a key/value head are stacked along the
/// sequence axis, `(b, kv, rep·t, d)`, so one batched matmul per kv head serves
/// them all and keys/values are never repeated. The attention scale `1/√d` is
/// folded into the query's rotation.
struct Attention {
    b: usize,
    t: usize,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    scale: f64,
    tables: ops::RopeTables,
    /// The composite path's tensors; `None` on the fused path.
    composite: Option<CompositeAttention>,
}

/// RoPE tables `(t, d/2)`, their copies scaled for the query, and the additive causal mask.
struct CompositeAttention {
    cos: Tensor,
    sin: Tensor,
    cos_q: Tensor,
    sin_q: Tensor,
    mask: Tensor,
}

impl Attention {
    fn new(model: &Llama, tables: &ops::RopeTables, b: usize, t: usize) -> Result<Attention> {
        let cfg = &model.cfg;
        let (heads, kv_heads, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim());
        let scale = 1.0 / (hd as f64).sqrt();
        let composite = match model.fused {
            true => None,
            false => {
                let table = |v: &[f32]| Tensor::from_slice(v, (t, hd / 2), &model.device);
                let (cos, sin) = (table(&tables.cos)?, table(&tables.sin)?);
                let (cos_q, sin_q) = ((&cos * scale)?, (&sin * scale)?);
                let mask = causal_mask(t, heads / kv_heads, &model.device)?;
                Some(CompositeAttention { cos, sin, cos_q, sin_q, mask })
            }
        };
        Ok(Attention { b, t, heads, kv_heads, hd, scale, tables: tables.clone(), composite })
    }

    /// `q` `(b·t, heads·d)`, `k` and `v` `(b·t, kv·d)` → `(b·t, heads·d)`.
    fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (b, t, hd) = (self.b, self.t, self.hd);
        let rep = self.heads / self.kv_heads;
        // The batched matmul wants kv heads as whole blocks: one copy of v.
        let v = v.reshape((b, t, self.kv_heads, hd))?.transpose(1, 2)?.contiguous()?;
        let q = q.reshape((b, t, self.heads, hd))?;
        let k = k.reshape((b, t, self.kv_heads, hd))?;
        let probs = match &self.composite {
            None => {
                let q = ops::rope(&q, &self.tables, self.scale as f32)?;
                let q = q.reshape((b, self.kv_heads, rep * t, hd))?;
                let k = ops::rope(&k, &self.tables, 1.0)?;
                ops::causal_softmax(&q.matmul(&k.t()?)?)?
            }
            Some(c) => {
                let q = rope_slow(&q.transpose(1, 2)?, &c.cos_q, &c.sin_q)?;
                let q = q.reshape((b, self.kv_heads, rep * t, hd))?;
                let k = rope_slow(&k.transpose(1, 2)?, &c.cos, &c.sin)?;
                softmax(&q.matmul(&k.t()?)?.broadcast_add(&c.mask)?, D::Minus1)?
            }
        };
        let out = probs.matmul(&v)?.reshape((b, self.heads, t, hd))?.transpose(1, 2)?;
        Ok(out.reshape((b * t, self.heads * hd))?)
    }
}

/// The additive causal mask for queries stacked `rep` times along the
/// sequence axis: row `r` is position `r mod t`, `(rep·t, t)`, 0 or -∞.
fn causal_mask(t: usize, rep: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..rep * t)
        .flat_map(|r| (0..t).map(move |c| if c <= r % t { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Ok(Tensor::from_vec(mask, (rep * t, t), device)?)
}

/// Read a transformers model directory's weights (`model.safetensors`, or the
/// shards listed in `model.safetensors.index.json`) as f32 tensors on `device`.
pub fn load_safetensors_dir(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let model_err = |path: &Path, message: String| AlignError::Model { path: path.to_path_buf(), message };
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<std::path::PathBuf> = if single.is_file() {
        vec![single]
    } else if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(AlignError::io(&index))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| model_err(&index, format!("not valid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| model_err(&index, "no `weight_map` object".into()))?;
        let mut shards: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
        shards.sort_unstable();
        shards.dedup();
        shards.iter().map(|s| dir.join(s)).collect()
    } else {
        return Err(model_err(dir, "no model.safetensors or model.safetensors.index.json".into()));
    };
    let mut out = HashMap::new();
    for file in files {
        let data = std::fs::read(&file).map_err(AlignError::io(&file))?;
        let tensors = candle_core::safetensors::load_buffer(&data, device)
            .map_err(|e| model_err(&file, format!("unreadable safetensors: {e}")))?;
        for (name, t) in tensors {
            let t = if t.dtype() == DType::F32 { t } else { t.to_dtype(DType::F32)? };
            if out.insert(name.clone(), t).is_some() {
                return Err(model_err(&file, format!("tensor `{name}` appears in two shards")));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_mask_stacks_query_heads() {
        let m: Vec<Vec<f32>> = causal_mask(3, 2, &Device::Cpu).unwrap().to_vec2().unwrap();
        for (r, row) in m.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                assert_eq!(v == 0.0, c <= r % 3, "row {r} col {c}");
            }
        }
    }

    /// transformers' rotate-half RoPE on a known vector: pairs are (i, i + d/2), not (2i, 2i + 1).
    #[test]
    fn rope_is_rotate_half() {
        let cfg = LlamaConfig { head_dim: Some(4), ..LlamaConfig::tiny(8) };
        let tables = rope_tables(&cfg, 2);
        let table = |v: &[f32]| Tensor::from_slice(v, (2, 2), &Device::Cpu).unwrap();
        let x = Tensor::new(&[[1f32, 2., 3., 4.], [1., 2., 3., 4.]], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 2, 4))
            .unwrap();
        let y: Vec<f32> = rope_slow(&x, &table(&tables.cos), &table(&tables.sin))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // The fused kernel (input (b, t, h, d); h = 1 makes its transpose trivial) agrees.
        let fused: Vec<f32> = ops::rope(&x.reshape((1, 2, 1, 4)).unwrap(), &tables, 1.0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(y, fused);
        let (a0, a1) = (1f64, 1.0 / 100f64); // position 1, inv_freq of pairs 0 and 1
        let expect = [
            1.0 * a0.cos() - 3.0 * a0.sin(),
            2.0 * a1.cos() - 4.0 * a1.sin(),
            3.0 * a0.cos() + 1.0 * a0.sin(),
            4.0 * a1.cos() + 2.0 * a1.sin(),
        ];
        assert_eq!(&y[..4], &[1., 2., 3., 4.]);
        for (got, want) in y[4..].iter().zip(expect) {
            assert!((f64::from(*got) - want).abs() < 1e-5, "{y:?}");
        }
    }

    /// The fused kernels and candle's composite ops give the same logits and
    /// the same gradient for every trained tensor (LoRA and full, GQA, biases).
    #[test]
    fn fused_kernels_match_composite_ops() {
        let cfg = LlamaConfig { attention_bias: true, ..LlamaConfig::tiny(40) };
        let ids = Tensor::new(&[[1u32, 5, 9, 3, 7, 2, 8], [4, 4, 0, 39, 12, 6, 1]], &Device::Cpu).unwrap();
        let lora = Trainable::Lora(LoraConfig { rank: 4, dropout: 0.2, ..LoraConfig::default() });
        for trainable in [lora, Trainable::Full] {
            let mut model = Llama::random(&cfg, &trainable, 5, &Device::Cpu).unwrap();
            // Non-zero B, so that A's gradients are non-zero too.
            let values: HashMap<String, Tensor> = model
                .trainable()
                .into_iter()
                .map(|(n, v)| {
                    let t = if n.contains("lora_B") {
                        (v.ones_like().unwrap() * 0.01).unwrap()
                    } else {
                        v.copy().unwrap()
                    };
                    (n, t)
                })
                .collect();
            model.load_trainable(&values).unwrap();
            let mut run = |fused: bool| {
                model.fused = fused;
                let logits = model.forward(&ids, Some(3)).unwrap();
                let loss = candle_nn::ops::log_softmax(&logits, D::Minus1)
                    .unwrap()
                    .sin()
                    .unwrap()
                    .sum_all()
                    .unwrap();
                let grads = loss.backward().unwrap();
                let grads: Vec<Tensor> = model
                    .trainable()
                    .iter()
                    .map(|(n, v)| grads.get(v).unwrap_or_else(|| panic!("{n}")).clone())
                    .collect();
                (logits, grads)
            };
            let (fused_logits, fused_grads) = run(true);
            let (logits, grads) = run(false);
            let diff = |a: &Tensor, b: &Tensor| -> f32 {
                (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
            };
            assert!(diff(&fused_logits, &logits) < 1e-5);
            for ((name, _), (a, b)) in model.trainable().iter().zip(fused_grads.iter().zip(&grads)) {
                let scale: f32 = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
                assert!(scale > 0.0, "{name} has a zero gradient");
                assert!(diff(a, b) <= 1e-4 * scale.max(1e-3), "{name}: {} vs scale {scale}", diff(a, b));
            }
        }
    }
}
