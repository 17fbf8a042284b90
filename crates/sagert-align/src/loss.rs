//! Preference losses on candle tensors: DPO (sigmoid, IPO, hinge), SimPO and ORPO.
//!
//! The formulas follow Hugging Face TRL (`DPOTrainer`, `CPOTrainer` with
//! `loss_type="simpo"` and `cpo_alpha=0`, `ORPOTrainer`) and are checked against
//! float64 PyTorch by `tests/loss.rs`, whose golden values come from
//! `scripts/golden-align-losses.py`.
//!
//! Everything here is built from differentiable candle ops only, so a loss can be
//! backpropagated through [`sequence_logps`] into the model's logits. The inputs of
//! a loss are per-sequence *sums* of completion-token log-probabilities together with
//! the number of scored tokens; each objective length-averages where TRL does.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{AlignError, Result};

/// The largest argument [`log1mexp`] uses: arguments above it are clamped to it, so
/// that a log-probability that rounds to exactly 0 gives a large finite value
/// (about -20.7) instead of `-inf`.
pub const LOG1MEXP_MAX: f64 = -1e-9;

/// Per-sequence sums of the log-probabilities of the scored tokens, and the count of
/// scored tokens.
///
/// `logits` is `(b, t, v)` (f32 or f64), `input_ids` is `(b, t)` u32, and `loss_mask`
/// is `(b, t)` with 1.0 where token position `j` is a completion token to score
/// (prompt and padding 0). Logits at position `j` predict token `j + 1`, so token `j`
/// (`j >= 1`) is scored with `log_softmax(logits[:, j - 1])[input_ids[:, j]]`, weighted
/// by `loss_mask[:, j]`; `loss_mask[:, 0]` is ignored, as no logits predict the first
/// token. This is TRL's shift (`labels = roll(input_ids, -1)`).
///
/// Returns `(sum (b,), count (b,))`, both in the dtype of `logits`. Only the sum
/// carries a gradient. The logits must be finite.
///
/// Memory: besides `logits`, the forward pass materialises two `(b, t, v)` tensors
/// (`logits - max` and its `exp`, kept for the backward pass); the log-softmax itself
/// is never built, only its log-sum-exp and the gathered target logits.
pub fn sequence_logps(logits: &Tensor, input_ids: &Tensor, loss_mask: &Tensor) -> Result<(Tensor, Tensor)> {
    let (b, t, _v) = logits.dims3()?;
    let dtype = logits.dtype();
    for (name, tensor) in [("input_ids", input_ids), ("loss_mask", loss_mask)] {
        if tensor.dims() != [b, t] {
            return Err(AlignError::Loss(format!(
                "sequence_logps: {name} has shape {:?}, logits need ({b}, {t})",
                tensor.dims()
            )));
        }
    }
    if input_ids.dtype() != DType::U32 {
        return Err(AlignError::Loss(format!(
            "sequence_logps: input_ids must be u32, not {:?}",
            input_ids.dtype()
        )));
    }
    if t < 2 {
        let zeros = Tensor::zeros(b, dtype, logits.device())?;
        return Ok((zeros.clone(), zeros));
    }
    // Position j scores token j + 1: shift ids and mask left by one. The last
    // position scores nothing (target 0, weight 0).
    let targets = input_ids.narrow(1, 1, t - 1)?.pad_with_zeros(1, 0, 1)?.contiguous()?;
    let weights = loss_mask.narrow(1, 1, t - 1)?.pad_with_zeros(1, 0, 1)?.to_dtype(dtype)?;

    // gather needs a contiguous source; this is free when it already is.
    let logits = logits.contiguous()?;
    // log-sum-exp over the vocabulary. The max only shifts for stability; its
    // gradient contribution is zero mathematically, so it is detached.
    let max = logits.max_keepdim(2)?.detach();
    let lse = logits.broadcast_sub(&max)?.exp()?.sum_keepdim(2)?.log()?.add(&max)?;
    let picked = logits.gather(&targets.unsqueeze(2)?, 2)?;
    let token_logps = picked.sub(&lse)?.squeeze(2)?;
    let sums = token_logps.mul(&weights)?.sum(1)?;
    let counts = weights.sum(1)?;
    Ok((sums, counts))
}

/// `log(sigmoid(x))`, elementwise and numerically stable:
/// `min(x, 0) - log(1 + exp(-|x|))` (that is, `-softplus(-x)`).
///
/// The kinks of `min` and `|x|` at `x = 0` are resolved explicitly on the `x >= 0`
/// side, so the gradient there is the true `sigmoid(-0) = 0.5`, not an artefact of
/// the subgradient conventions of `relu`/`abs`.
pub fn logsigmoid(x: &Tensor) -> Result<Tensor> {
    let nonneg = x.ge(0.0)?;
    let neg_abs = nonneg.where_cond(&x.neg()?, x)?;
    let min0 = nonneg.where_cond(&x.zeros_like()?, x)?;
    let log1p_exp = neg_abs.exp()?.affine(1.0, 1.0)?.log()?;
    Ok(min0.sub(&log1p_exp)?)
}

/// `log(1 - exp(x))` for `x < 0`, elementwise: what TRL writes as
/// `torch.log1p(-torch.exp(x))`.
///
/// candle has no `log1p`/`expm1`, and `log(1 - exp(x))` loses all precision as
/// `x -> 0`. This uses the exact identity `1 - exp(x) = -2t / (1 - t)` with
/// `t = tanh(x / 2)`, so `log1mexp(x) = log(-2t) - log(1 - t)`: no cancellation for
/// small `|x|` (relative accuracy), and an absolute error of a few ulp for large `|x|`
/// (where the result tends to 0). `x` is first clamped to at most [`LOG1MEXP_MAX`]
/// (clamped entries get no gradient).
pub fn log1mexp(x: &Tensor) -> Result<Tensor> {
    let x = x.minimum(LOG1MEXP_MAX)?;
    let t = x.affine(0.5, 0.0)?.tanh()?;
    let log_num = t.affine(-2.0, 0.0)?.log()?;
    let log_den = t.affine(-1.0, 1.0)?.log()?;
    Ok(log_num.sub(&log_den)?)
}

/// `max(x, 0)` with the gradient of `torch.relu`: 0 at `x = 0` (candle's `relu`
/// passes the gradient at 0).
fn relu_torch(x: &Tensor) -> Result<Tensor> {
    Ok(x.gt(0.0)?.where_cond(x, &x.zeros_like()?)?)
}

/// Which DPO loss is applied to the implicit reward margin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpoVariant {
    /// The DPO paper's `-logsigmoid(beta * logits)` (TRL `loss_type="sigmoid"`),
    /// optionally label-smoothed (conservative DPO).
    #[default]
    Sigmoid,
    /// IPO: `(logits - 1 / (2 beta))^2` on length-averaged log-probabilities
    /// (TRL `loss_type="ipo"`).
    Ipo,
    /// SLiC hinge: `relu(1 - beta * logits)` (TRL `loss_type="hinge"`).
    Hinge,
}

/// A preference objective with its hyper-parameters, as written in the alignment
/// configuration (`type = "dpo" | "simpo" | "orpo"`; missing fields take TRL's
/// defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Objective {
    /// Direct preference optimisation against a frozen reference model.
    ///
    /// With `logits = (pc - pr) - (rc - rr)` (policy and reference log-probability
    /// sums of the chosen and rejected completions):
    /// - sigmoid: `-logsigmoid(beta * logits) * (1 - ls) - logsigmoid(-beta * logits) * ls`;
    /// - IPO: `(logits - 1 / (2 beta))^2`, where every log-probability (policy and
    ///   reference) is first divided by its completion's token count, as TRL does;
    /// - hinge: `relu(1 - beta * logits)`.
    ///
    /// Rewards: `beta * (pc - rc)` and `beta * (pr - rr)` (length-averaged for IPO).
    Dpo {
        /// Inverse temperature (TRL `beta`, default 0.1); for IPO the regulariser tau.
        #[serde(default = "default_dpo_beta")]
        beta: f64,
        /// The loss applied to the margin (default sigmoid).
        #[serde(default)]
        variant: DpoVariant,
        /// Label smoothing in `[0, 0.5)`, sigmoid only (TRL `label_smoothing`, default 0).
        #[serde(default)]
        label_smoothing: f64,
    },
    /// SimPO, length-normalised and without a reference model (TRL CPO with
    /// `loss_type="simpo"`, `cpo_alpha=0`, no label smoothing):
    /// `loss = -logsigmoid(beta * (avg_c - avg_r) - gamma)` with `avg = sum / tokens`.
    /// (TRL subtracts `gamma / beta` from the margin and then multiplies by `beta`:
    /// the same thing.) Rewards: `beta * avg_c` and `beta * avg_r`.
    Simpo {
        /// Reward scale (TRL `beta` for simpo, default 2.0).
        #[serde(default = "default_simpo_beta")]
        beta: f64,
        /// Target reward margin (TRL `simpo_gamma`, default 0.5).
        #[serde(default = "default_simpo_gamma")]
        gamma: f64,
    },
    /// ORPO, no reference model (TRL `ORPOTrainer`):
    /// `loss = nll - beta * mean(logsigmoid(log_odds))`, where
    /// `nll = -sum(pc) / sum(chosen tokens)` is the token-mean cross-entropy over all
    /// chosen completion tokens of the batch, and
    /// `log_odds = (avg_c - avg_r) - (log(1 - exp(avg_c)) - log(1 - exp(avg_r)))` on
    /// length-averaged log-probabilities (see [`log1mexp`]). Rewards: `beta * avg_c`
    /// and `beta * avg_r`.
    Orpo {
        /// Weight of the odds-ratio term (TRL `beta`, the paper's lambda; default 0.1).
        #[serde(default = "default_orpo_beta")]
        beta: f64,
    },
}

fn default_dpo_beta() -> f64 {
    0.1
}

fn default_simpo_beta() -> f64 {
    2.0
}

fn default_simpo_gamma() -> f64 {
    0.5
}

fn default_orpo_beta() -> f64 {
    0.1
}

impl Default for Objective {
    /// DPO, sigmoid, `beta = 0.1`, no label smoothing.
    fn default() -> Self {
        Objective::Dpo { beta: default_dpo_beta(), variant: DpoVariant::Sigmoid, label_smoothing: 0.0 }
    }
}

impl Objective {
    /// Whether the loss needs the reference model's log-probabilities (DPO only).
    pub fn needs_reference(&self) -> bool {
        matches!(self, Objective::Dpo { .. })
    }

    /// A short name for run names, logs and reports: `dpo`, `dpo-ipo`, `dpo-hinge`,
    /// `simpo` or `orpo`.
    pub fn name(&self) -> &'static str {
        match self {
            Objective::Dpo { variant: DpoVariant::Sigmoid, .. } => "dpo",
            Objective::Dpo { variant: DpoVariant::Ipo, .. } => "dpo-ipo",
            Objective::Dpo { variant: DpoVariant::Hinge, .. } => "dpo-hinge",
            Objective::Simpo { .. } => "simpo",
            Objective::Orpo { .. } => "orpo",
        }
    }

    /// Checks the hyper-parameters: every `beta` finite and > 0, SimPO's `gamma`
    /// finite and >= 0, label smoothing in `[0, 0.5)` and only with the sigmoid loss.
    /// The message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let beta = match *self {
            Objective::Dpo { beta, .. } | Objective::Simpo { beta, .. } | Objective::Orpo { beta } => beta,
        };
        if !(beta.is_finite() && beta > 0.0) {
            return Err(format!("{}: beta must be a finite number > 0, got {beta}", self.name()));
        }
        match *self {
            Objective::Dpo { variant, label_smoothing, .. } => {
                if !(0.0..0.5).contains(&label_smoothing) {
                    return Err(format!("dpo: label_smoothing must be in [0, 0.5), got {label_smoothing}"));
                }
                if label_smoothing != 0.0 && variant != DpoVariant::Sigmoid {
                    return Err(format!(
                        "{}: label_smoothing applies to the sigmoid loss only, got {label_smoothing}",
                        self.name()
                    ));
                }
            }
            Objective::Simpo { gamma, .. } => {
                if !(gamma.is_finite() && gamma >= 0.0) {
                    return Err(format!("simpo: gamma must be a finite number >= 0, got {gamma}"));
                }
            }
            Objective::Orpo { .. } => {}
        }
        Ok(())
    }
}

/// The inputs of a loss for a batch of `b` preference pairs, all `(b,)` and of one
/// float dtype (the lengths are converted to it).
#[derive(Debug, Clone)]
pub struct PairLogps {
    /// Policy log-probability sums of the chosen completions (differentiable).
    pub chosen: Tensor,
    /// Policy log-probability sums of the rejected completions (differentiable).
    pub rejected: Tensor,
    /// Scored-token counts of the chosen completions (as from [`sequence_logps`]).
    pub chosen_len: Tensor,
    /// Scored-token counts of the rejected completions.
    pub rejected_len: Tensor,
    /// Reference-model sums for the chosen completions: constants (detached here).
    /// Required by DPO, ignored otherwise.
    pub ref_chosen: Option<Tensor>,
    /// Reference-model sums for the rejected completions.
    pub ref_rejected: Option<Tensor>,
}

/// A loss and the implicit rewards it assigns, for logging and reward accuracy.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// The scalar loss, mean over the batch; backpropagate this.
    pub loss: Tensor,
    /// `(b,)` implicit rewards of the chosen completions, detached.
    pub rewards_chosen: Tensor,
    /// `(b,)` implicit rewards of the rejected completions, detached.
    pub rewards_rejected: Tensor,
}

/// Computes `objective`'s loss (mean over the batch) and rewards from `logps`; the
/// formulas are in [`Objective`]'s documentation.
///
/// Token counts below 1 are raised to 1 before averaging (as TRL's `clamp(min=1)`),
/// so an empty completion cannot divide by zero. Fails with [`AlignError::Loss`]
/// when DPO is given no reference log-probabilities or the shapes disagree.
pub fn preference_loss(objective: &Objective, logps: &PairLogps) -> Result<LossOutput> {
    let b = logps.chosen.dims1()?;
    let dtype = logps.chosen.dtype();
    for (name, tensor) in [
        ("rejected", Some(&logps.rejected)),
        ("chosen_len", Some(&logps.chosen_len)),
        ("rejected_len", Some(&logps.rejected_len)),
        ("ref_chosen", logps.ref_chosen.as_ref()),
        ("ref_rejected", logps.ref_rejected.as_ref()),
    ] {
        if let Some(tensor) = tensor {
            if tensor.dims() != [b] {
                return Err(AlignError::Loss(format!(
                    "{}: {name} has shape {:?}, expected ({b},) like chosen",
                    objective.name(),
                    tensor.dims()
                )));
            }
        }
    }
    let pc = &logps.chosen;
    let pr = &logps.rejected;
    let lc = logps.chosen_len.to_dtype(dtype)?.detach().maximum(1.0)?;
    let lr = logps.rejected_len.to_dtype(dtype)?.detach().maximum(1.0)?;

    match *objective {
        Objective::Dpo { beta, variant, label_smoothing } => {
            let (Some(rc), Some(rr)) = (&logps.ref_chosen, &logps.ref_rejected) else {
                return Err(AlignError::Loss(format!(
                    "{} needs the reference model's log-probabilities of both completions \
                     (ref_chosen and ref_rejected), but they are missing",
                    objective.name()
                )));
            };
            let rc = rc.to_dtype(dtype)?.detach();
            let rr = rr.to_dtype(dtype)?.detach();
            let (pc, pr, rc, rr) = if variant == DpoVariant::Ipo {
                (pc.div(&lc)?, pr.div(&lr)?, rc.div(&lc)?, rr.div(&lr)?)
            } else {
                (pc.clone(), pr.clone(), rc, rr)
            };
            let logits = pc.sub(&pr)?.sub(&rc.sub(&rr)?)?;
            let losses = match variant {
                DpoVariant::Sigmoid => {
                    let scaled = logits.affine(beta, 0.0)?;
                    let mut losses = logsigmoid(&scaled)?.affine(-(1.0 - label_smoothing), 0.0)?;
                    if label_smoothing != 0.0 {
                        let flipped = logsigmoid(&scaled.neg()?)?.affine(-label_smoothing, 0.0)?;
                        losses = losses.add(&flipped)?;
                    }
                    losses
                }
                DpoVariant::Ipo => logits.affine(1.0, -1.0 / (2.0 * beta))?.sqr()?,
                DpoVariant::Hinge => relu_torch(&logits.affine(-beta, 1.0)?)?,
            };
            Ok(LossOutput {
                loss: losses.mean_all()?,
                rewards_chosen: pc.sub(&rc)?.affine(beta, 0.0)?.detach(),
                rewards_rejected: pr.sub(&rr)?.affine(beta, 0.0)?.detach(),
            })
        }
        Objective::Simpo { beta, gamma } => {
            let avg_c = pc.div(&lc)?;
            let avg_r = pr.div(&lr)?;
            let margin = avg_c.sub(&avg_r)?.affine(beta, -gamma)?;
            let losses = logsigmoid(&margin)?.neg()?;
            Ok(LossOutput {
                loss: losses.mean_all()?,
                rewards_chosen: avg_c.affine(beta, 0.0)?.detach(),
                rewards_rejected: avg_r.affine(beta, 0.0)?.detach(),
            })
        }
        Objective::Orpo { beta } => {
            let avg_c = pc.div(&lc)?;
            let avg_r = pr.div(&lr)?;
            let nll = pc.sum_all()?.div(&lc.sum_all()?)?.neg()?;
            let log_odds = avg_c.sub(&avg_r)?.sub(&log1mexp(&avg_c)?.sub(&log1mexp(&avg_r)?)?)?;
            let odds_term = logsigmoid(&log_odds)?.mean_all()?.affine(beta, 0.0)?;
            Ok(LossOutput {
                loss: nll.sub(&odds_term)?,
                rewards_chosen: avg_c.affine(beta, 0.0)?.detach(),
                rewards_rejected: avg_r.affine(beta, 0.0)?.detach(),
            })
        }
    }
}
