//! The optimiser side of training: AdamW with checkpointable state, learning-rate schedules,
//! gradient clipping and gradient accumulation.
//!
//! candle-nn has an AdamW, but its moments are private, so a run could not be checkpointed and
//! resumed exactly; this one exposes them ([`AdamW::state`], [`AdamW::load_state`]) and follows
//! `torch.optim.AdamW` operation for operation, so a run here matches one in PyTorch. The
//! schedules are those of `transformers` (`get_*_schedule_with_warmup`) and the clipping that of
//! `torch.nn.utils.clip_grad_norm_`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::{AlignError, Result};

/// Suffix of the first-moment tensors in [`AdamW::state`].
const EXP_AVG: &str = "exp_avg";
/// Suffix of the second-moment tensors in [`AdamW::state`].
const EXP_AVG_SQ: &str = "exp_avg_sq";

/// AdamW's hyper-parameters (the `[optim]` part of a run's configuration).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    /// Peak learning rate; the schedule scales it (see [`lr_at`]).
    pub lr: f64,
    /// Decay rate of the first moment.
    pub beta1: f64,
    /// Decay rate of the second moment.
    pub beta2: f64,
    /// Added to the denominator for numerical stability.
    pub eps: f64,
    /// Decoupled weight decay (`p -= lr * weight_decay * p` before each update).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { lr: 5e-5, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

impl AdamWConfig {
    /// Checks the values the way torch does (`0 <= lr`, `0 <= beta < 1`, `0 <= eps`,
    /// `0 <= weight_decay`, all finite); the message names the offending key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let finite_non_negative = [("lr", self.lr), ("eps", self.eps), ("weight_decay", self.weight_decay)];
        for (key, value) in finite_non_negative {
            if !value.is_finite() || value < 0.0 {
                return Err(format!("`{key}` must be a finite number >= 0, got {value}"));
            }
        }
        for (key, value) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&value) {
                return Err(format!("`{key}` must be in [0, 1), got {value}"));
            }
        }
        Ok(())
    }
}

/// One parameter with its moments.
struct Slot {
    name: String,
    var: Var,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// AdamW exactly as `torch.optim.AdamW` computes it (single-tensor path), with its state
/// exposed for checkpoints.
///
/// The moments have the dtype and device of their parameter, as in torch.
pub struct AdamW {
    slots: Vec<Slot>,
    config: AdamWConfig,
    steps: u64,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW")
            .field("vars", &self.slots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>())
            .field("config", &self.config)
            .field("steps", &self.steps)
            .finish()
    }
}

impl AdamW {
    /// An optimiser over `vars` (named; the names key the checkpoint state) with zero moments.
    ///
    /// Errors with [`AlignError::Config`] on an invalid configuration, and with
    /// [`AlignError::Candle`] on a duplicate name or a parameter that is not floating point.
    pub fn new(vars: Vec<(String, Var)>, config: AdamWConfig) -> Result<AdamW> {
        config
            .validate()
            .map_err(|message| AlignError::Config { file: PathBuf::from("[optim]"), message })?;
        let mut seen = HashSet::new();
        let mut slots = Vec::with_capacity(vars.len());
        for (name, var) in vars {
            if !seen.insert(name.clone()) {
                return Err(msg(format!("AdamW: parameter `{name}` is listed twice")));
            }
            if !var.dtype().is_float() {
                return Err(msg(format!(
                    "AdamW: parameter `{name}` has dtype {:?}; only floating-point parameters train",
                    var.dtype()
                )));
            }
            let exp_avg = var.as_tensor().zeros_like()?;
            let exp_avg_sq = var.as_tensor().zeros_like()?;
            slots.push(Slot { name, var, exp_avg, exp_avg_sq });
        }
        Ok(AdamW { slots, config, steps: 0 })
    }

    /// One update with learning rate `lr` (the schedule's value for this step) from `grads`,
    /// given in the order of the vars passed to [`AdamW::new`].
    ///
    /// Per parameter, as `torch.optim.AdamW` does it:
    /// `p *= 1 - lr*wd; m = lerp(m, g, 1-beta1); v = beta2*v + (1-beta2)*g*g;`
    /// `p -= lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps)`.
    /// A gradient of another dtype is converted to its parameter's; a missing or mis-shaped one
    /// is an error, and then no parameter has changed.
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        if grads.len() != self.slots.len() {
            return Err(msg(format!("AdamW: {} gradients for {} parameters", grads.len(), self.slots.len())));
        }
        for (slot, grad) in self.slots.iter().zip(grads) {
            if grad.dims() != slot.var.dims() {
                return Err(msg(format!(
                    "AdamW: gradient of `{}` has shape {:?}, the parameter {:?}",
                    slot.name,
                    grad.dims(),
                    slot.var.dims()
                )));
            }
        }
        let AdamWConfig { beta1, beta2, eps, weight_decay, .. } = self.config;
        let t = self.steps + 1;
        let bias_correction1 = 1.0 - beta1.powf(t as f64);
        let bias_correction2 = 1.0 - beta2.powf(t as f64);
        let step_size = lr / bias_correction1;
        let bias_correction2_sqrt = bias_correction2.sqrt();
        for (slot, grad) in self.slots.iter_mut().zip(grads) {
            let param = slot.var.as_tensor();
            let grad = grad.detach().to_dtype(param.dtype())?;
            let param = param.affine(1.0 - lr * weight_decay, 0.0)?;
            // torch: exp_avg.lerp_(grad, 1 - beta1), i.e. m + (1 - beta1) * (g - m).
            let exp_avg = (&slot.exp_avg + (&grad - &slot.exp_avg)?.affine(1.0 - beta1, 0.0)?)?;
            let exp_avg_sq = (slot.exp_avg_sq.affine(beta2, 0.0)? + grad.sqr()?.affine(1.0 - beta2, 0.0)?)?;
            let denom = ((exp_avg_sq.sqrt()? / bias_correction2_sqrt)? + eps)?;
            let update = (exp_avg.div(&denom)? * step_size)?;
            slot.var.set(&(param - update)?)?;
            slot.exp_avg = exp_avg;
            slot.exp_avg_sq = exp_avg_sq;
        }
        self.steps = t;
        Ok(())
    }

    /// How many updates have been made (restored by [`AdamW::load_state`]).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// The parameters, named, in the order gradients are expected.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &Var)> + '_ {
        self.slots.iter().map(|s| (s.name.as_str(), &s.var))
    }

    /// The moments for a checkpoint: `"{var name}.exp_avg"` and `"{var name}.exp_avg_sq"` per
    /// parameter. The step count ([`AdamW::steps`]) is saved beside them by the caller.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        let mut state = BTreeMap::new();
        for slot in &self.slots {
            state.insert(format!("{}.{EXP_AVG}", slot.name), slot.exp_avg.clone());
            state.insert(format!("{}.{EXP_AVG_SQ}", slot.name), slot.exp_avg_sq.clone());
        }
        state
    }

    /// Restores the moments saved by [`AdamW::state`] and the step count.
    ///
    /// Tensors are converted to each parameter's dtype and device. Every parameter needs both
    /// moments with its shape, and a moment for a parameter this optimiser does not have (a
    /// checkpoint of another set of LoRA targets) is refused; other keys are ignored. Errors are
    /// [`AlignError::Checkpoint`] naming the tensor, with the path `<optimizer state>`, which a
    /// caller that knows the file replaces; on error nothing has changed.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, steps: u64) -> Result<()> {
        let known: HashSet<&str> = self.slots.iter().map(|s| s.name.as_str()).collect();
        let mut stray: Vec<&str> = state
            .keys()
            .filter_map(|key| {
                let var =
                    key.strip_suffix(EXP_AVG_SQ).or_else(|| key.strip_suffix(EXP_AVG))?.strip_suffix('.')?;
                (!known.contains(var)).then_some(key.as_str())
            })
            .collect();
        if !stray.is_empty() {
            stray.sort_unstable();
            return Err(state_error(format!(
                "moments for parameters this run does not train: {}",
                stray.join(", ")
            )));
        }
        let mut restored = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let moment = |suffix: &str| -> Result<Tensor> {
                let key = format!("{}.{suffix}", slot.name);
                let tensor = state.get(&key).ok_or_else(|| state_error(format!("missing `{key}`")))?;
                if tensor.dims() != slot.var.dims() {
                    return Err(state_error(format!(
                        "`{key}` has shape {:?}, the parameter {:?}",
                        tensor.dims(),
                        slot.var.dims()
                    )));
                }
                Ok(tensor.to_device(slot.var.device())?.to_dtype(slot.var.dtype())?.detach())
            };
            let exp_avg = moment(EXP_AVG)?;
            let exp_avg_sq = moment(EXP_AVG_SQ)?;
            restored.push((exp_avg, exp_avg_sq));
        }
        for (slot, (exp_avg, exp_avg_sq)) in self.slots.iter_mut().zip(restored) {
            slot.exp_avg = exp_avg;
            slot.exp_avg_sq = exp_avg_sq;
        }
        self.steps = steps;
        Ok(())
    }
}

/// A learning-rate schedule after linear warmup (`transformers`' names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// `get_constant_schedule_with_warmup`: the base rate after warmup.
    Constant,
    /// `get_linear_schedule_with_warmup`: linear decay to 0 at the last step.
    Linear,
    /// `get_cosine_schedule_with_warmup` with `num_cycles = 0.5`: half a cosine down to 0.
    Cosine,
}

/// The learning rate for optimiser step `step` (0-based: the rate of the `step + 1`-th update),
/// exactly as `transformers`' `get_{constant,linear,cosine}_schedule_with_warmup` with
/// `LambdaLR` computes it:
///
/// - warmup (`step < warmup_steps`): `base_lr * step / max(1, warmup_steps)`;
/// - constant: `base_lr`;
/// - linear: `base_lr * max(0, (total - step) / max(1, total - warmup))`;
/// - cosine: `base_lr * max(0, 0.5 * (1 + cos(pi * progress)))` with
///   `progress = (step - warmup) / max(1, total - warmup)` (not clamped, as in transformers).
pub fn lr_at(schedule: Schedule, base_lr: f64, warmup_steps: u64, total_steps: u64, step: u64) -> f64 {
    let (step_f, warmup_f, total_f) = (step as f64, warmup_steps as f64, total_steps as f64);
    if step < warmup_steps {
        return base_lr * step_f / warmup_f.max(1.0);
    }
    let decay_span = (total_f - warmup_f).max(1.0);
    let factor = match schedule {
        Schedule::Constant => 1.0,
        Schedule::Linear => ((total_f - step_f) / decay_span).max(0.0),
        Schedule::Cosine => {
            let progress = (step_f - warmup_f) / decay_span;
            (0.5 * (1.0 + (std::f64::consts::PI * 0.5 * 2.0 * progress).cos())).max(0.0)
        }
    };
    base_lr * factor
}

/// Clips gradients like `torch.nn.utils.clip_grad_norm_`: the global L2 norm over all of
/// `grads`, and when `max_norm / (norm + 1e-6) < 1` every gradient is scaled by that factor.
///
/// Returns the norm before clipping. A non-finite norm (a NaN or infinite gradient) is
/// [`AlignError::Diverged`] at `step`, and the gradients are left as they were.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64, step: u64) -> Result<f64> {
    let mut sum_sq = 0.0f64;
    for grad in grads.iter() {
        sum_sq += grad.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
    }
    let norm = sum_sq.sqrt();
    if !norm.is_finite() {
        return Err(AlignError::Diverged { step, message: format!("gradient norm is {norm}") });
    }
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for grad in grads.iter_mut() {
            *grad = grad.affine(coef, 0.0)?;
        }
    }
    Ok(norm)
}

/// Sums gradients over micro-batches, for gradient accumulation.
///
/// The sums are the plain sums; scale the micro-batch loss (by `1 / micro_batches`) to get a
/// mean, as the usual recipe does.
pub struct GradAccumulator {
    vars: Vec<(String, Var)>,
    sums: Vec<Tensor>,
    micro_batches: usize,
}

impl std::fmt::Debug for GradAccumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GradAccumulator")
            .field("vars", &self.vars.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>())
            .field("micro_batches", &self.micro_batches)
            .finish()
    }
}

impl GradAccumulator {
    /// An empty accumulator for `vars` (the order of the sums [`GradAccumulator::take`] returns).
    pub fn new(vars: &[(String, Var)]) -> Self {
        GradAccumulator { vars: vars.to_vec(), sums: Vec::new(), micro_batches: 0 }
    }

    /// Adds one micro-batch's gradients (from `loss.backward()`).
    ///
    /// Every var needs a gradient: a missing one means the var was cut from the graph (detached,
    /// or unused by the loss) and is an error naming it; then nothing has been added.
    pub fn add(&mut self, grads: &GradStore) -> Result<()> {
        let mut found = Vec::with_capacity(self.vars.len());
        for (name, var) in &self.vars {
            let grad = grads.get(var.as_tensor()).ok_or_else(|| {
                msg(format!(
                    "no gradient for `{name}`: it is cut from the graph (detached, or unused by the loss)"
                ))
            })?;
            found.push(grad.detach());
        }
        self.sums = if self.sums.is_empty() {
            found
        } else {
            self.sums.iter().zip(&found).map(|(sum, grad)| sum + grad).collect::<candle_core::Result<_>>()?
        };
        self.micro_batches += 1;
        Ok(())
    }

    /// The summed gradients in the order of the vars, then resets; empty if no micro-batch was
    /// added since the last call.
    pub fn take(&mut self) -> Vec<Tensor> {
        self.micro_batches = 0;
        std::mem::take(&mut self.sums)
    }

    /// How many micro-batches have been added since the last [`GradAccumulator::take`].
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }
}

/// A tensor-level error with a message.
fn msg(message: String) -> AlignError {
    AlignError::Candle(candle_core::Error::Msg(message))
}

/// An error in restored optimiser state.
fn state_error(message: String) -> AlignError {
    AlignError::Checkpoint { path: PathBuf::from("<optimizer state>"), message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    // Produced by scripts/golden-adamw.py (torch 2.15.0+cu132, torch.optim.AdamW, float32):
    // lrs [0.01, 0.01, 0.01], weight_decay 0.01: (p, q) after each step
    const CONST_LR: [([f32; 6], [f32; 2]); 3] = [
        ([0.48995, -0.9899, 0.23997499, 1.9931333, -0.01, -0.739925], [0.089990005, -0.18998]),
        (
            [0.49484292, -0.9871376, 0.23024747, 1.9854926, -0.011444205, -0.7331504],
            [0.08113724, -0.18341063],
        ),
        (
            [0.4975684, -0.98642504, 0.23184009, 1.9777019, -0.013594523, -0.7313044],
            [0.07776813, -0.18233994],
        ),
    ];
    // lrs [0.01, 0.005, 0.0025], weight_decay 0.1: (p, q) after each step
    const SCHED_LR: [([f32; 6], [f32; 2]); 3] = [
        ([0.48950002, -0.989, 0.23975, 1.9913334, -0.01, -0.73925], [0.0899, -0.1898]),
        ([0.4917262, -0.9871738, 0.23477836, 1.986617, -0.010717602, -0.73553], [0.08543317, -0.1864299]),
        ([0.492297, -0.98677355, 0.23512357, 1.9842223, -0.011252789, -0.734903], [0.08457157, -0.1861202]),
    ];

    // The inputs of scripts/golden-adamw.py.
    const P0: [f32; 6] = [0.5, -1.0, 0.25, 2.0, 0.0, -0.75];
    const Q0: [f32; 2] = [0.1, -0.2];
    const GRADS: [([f32; 6], [f32; 2]); 3] = [
        ([0.1, -0.2, 0.3, 2e-8, 1.5, -0.4], [0.05, -0.5]),
        ([-0.3, 0.1, 0.2, 0.25, -1.0, 0.0], [0.2, 0.01]),
        ([0.05, 0.05, -0.6, 1.0, 0.3, 0.2], [-0.1, 0.3]),
    ];

    fn params() -> Vec<(String, Var)> {
        let dev = Device::Cpu;
        vec![
            ("p".to_string(), Var::from_slice(&P0, (2, 3), &dev).unwrap()),
            ("q".to_string(), Var::from_slice(&Q0, 2, &dev).unwrap()),
        ]
    }

    fn grads(step: usize) -> Vec<Tensor> {
        let (gp, gq) = GRADS[step];
        vec![
            Tensor::from_slice(&gp, (2, 3), &Device::Cpu).unwrap(),
            Tensor::from_slice(&gq, 2, &Device::Cpu).unwrap(),
        ]
    }

    fn values(var: &Var) -> Vec<f32> {
        var.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
    }

    fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
        assert_eq!(actual.len(), expected.len(), "{what}");
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!((a - e).abs() <= 1e-6 + 1e-6 * e.abs(), "{what}[{i}]: {a} != torch's {e}");
        }
    }

    fn check_against_torch(lrs: [f64; 3], weight_decay: f64, golden: &[([f32; 6], [f32; 2]); 3]) {
        let vars = params();
        let config = AdamWConfig { lr: lrs[0], weight_decay, ..AdamWConfig::default() };
        let mut opt = AdamW::new(vars.clone(), config).unwrap();
        for (step, (lr, (p, q))) in lrs.iter().zip(golden).enumerate() {
            opt.step(&grads(step), *lr).unwrap();
            assert_close(&values(&vars[0].1), p, &format!("p after step {}", step + 1));
            assert_close(&values(&vars[1].1), q, &format!("q after step {}", step + 1));
        }
        assert_eq!(opt.steps(), 3);
    }

    #[test]
    fn adamw_matches_torch_with_constant_lr() {
        check_against_torch([1e-2; 3], 0.01, &CONST_LR);
    }

    #[test]
    fn adamw_matches_torch_with_changing_lr() {
        check_against_torch([1e-2, 5e-3, 2.5e-3], 0.1, &SCHED_LR);
    }

    #[test]
    fn state_round_trip_continues_exactly() {
        let config = AdamWConfig { lr: 1e-2, weight_decay: 0.01, ..AdamWConfig::default() };
        // Straight through: three steps.
        let straight = params();
        let mut opt = AdamW::new(straight.clone(), config.clone()).unwrap();
        for step in 0..3 {
            opt.step(&grads(step), 1e-2).unwrap();
        }
        // Two steps, checkpoint, restore into fresh vars and a fresh optimiser, third step.
        let first = params();
        let mut opt = AdamW::new(first.clone(), config.clone()).unwrap();
        for step in 0..2 {
            opt.step(&grads(step), 1e-2).unwrap();
        }
        let state: HashMap<String, Tensor> = opt.state().into_iter().collect();
        let keys: Vec<&str> = {
            let mut keys: Vec<&str> = state.keys().map(String::as_str).collect();
            keys.sort_unstable();
            keys
        };
        assert_eq!(keys, ["p.exp_avg", "p.exp_avg_sq", "q.exp_avg", "q.exp_avg_sq"]);
        let resumed: Vec<(String, Var)> = first
            .iter()
            .map(|(name, var)| (name.clone(), Var::from_tensor(&var.as_detached_tensor()).unwrap()))
            .collect();
        let mut fresh = AdamW::new(resumed.clone(), config).unwrap();
        fresh.load_state(&state, opt.steps()).unwrap();
        assert_eq!(fresh.steps(), 2);
        fresh.step(&grads(2), 1e-2).unwrap();
        for (a, b) in straight.iter().zip(&resumed) {
            assert_eq!(values(&a.1), values(&b.1), "{}", a.0);
        }
        // And the resumed run still matches torch.
        assert_close(&values(&resumed[0].1), &CONST_LR[2].0, "p");
    }

    #[test]
    fn load_state_names_missing_misshaped_and_stray_tensors() {
        let mut opt = AdamW::new(params(), AdamWConfig::default()).unwrap();
        let mut state: HashMap<String, Tensor> = opt.state().into_iter().collect();
        state.remove("q.exp_avg_sq");
        let err = opt.load_state(&state, 5).unwrap_err().to_string();
        assert!(err.contains("missing `q.exp_avg_sq`"), "{err}");
        assert_eq!(opt.steps(), 0, "a failed load changes nothing");

        state.insert("q.exp_avg_sq".into(), Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap());
        let err = opt.load_state(&state, 5).unwrap_err().to_string();
        assert!(err.contains("`q.exp_avg_sq` has shape [3]"), "{err}");

        state.insert("q.exp_avg_sq".into(), Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap());
        state.insert("r.exp_avg".into(), Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap());
        let err = opt.load_state(&state, 5).unwrap_err().to_string();
        assert!(err.contains("r.exp_avg") && err.contains("does not train"), "{err}");

        state.remove("r.exp_avg");
        state.insert("unrelated".into(), Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap());
        opt.load_state(&state, 5).unwrap();
        assert_eq!(opt.steps(), 5);
    }

    #[test]
    fn step_rejects_wrong_gradients_without_changing_anything() {
        let vars = params();
        let mut opt = AdamW::new(vars.clone(), AdamWConfig::default()).unwrap();
        let err = opt.step(&grads(0)[..1], 1e-2).unwrap_err().to_string();
        assert!(err.contains("1 gradients for 2 parameters"), "{err}");
        let mut bad = grads(0);
        bad[1] = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
        let err = opt.step(&bad, 1e-2).unwrap_err().to_string();
        assert!(err.contains("gradient of `q` has shape [3]"), "{err}");
        assert_eq!(values(&vars[0].1), P0);
        assert_eq!(opt.steps(), 0);
    }

    #[test]
    fn new_rejects_bad_config_and_duplicate_names() {
        let bad = AdamWConfig { beta2: 1.0, ..AdamWConfig::default() };
        let err = AdamW::new(params(), bad).unwrap_err().to_string();
        assert!(err.contains("`beta2` must be in [0, 1)"), "{err}");
        let mut vars = params();
        vars.push(vars[0].clone());
        let err = AdamW::new(vars, AdamWConfig::default()).unwrap_err().to_string();
        assert!(err.contains("`p` is listed twice"), "{err}");
    }

    #[test]
    fn config_defaults_and_rejects_unknown_keys() {
        let config: AdamWConfig = toml::from_str("lr = 1e-4").unwrap();
        assert_eq!(config, AdamWConfig { lr: 1e-4, ..AdamWConfig::default() });
        assert_eq!(config.beta2, 0.999);
        let err = toml::from_str::<AdamWConfig>("learning_rate = 1e-4").unwrap_err().to_string();
        assert!(err.contains("learning_rate"), "{err}");
        let schedule: Schedule = serde_json::from_str("\"cosine\"").unwrap();
        assert_eq!(schedule, Schedule::Cosine);
    }

    fn assert_lr(actual: f64, expected: f64) {
        assert!((actual - expected).abs() < 1e-15, "{actual} != {expected}");
    }

    #[test]
    fn lr_schedules_match_transformers() {
        use std::f64::consts::PI;
        let lr = 1e-3;
        // Warmup 10 of 110 steps: step/10 of the base rate, whatever the schedule.
        for schedule in [Schedule::Constant, Schedule::Linear, Schedule::Cosine] {
            assert_lr(lr_at(schedule, lr, 10, 110, 0), 0.0);
            assert_lr(lr_at(schedule, lr, 10, 110, 3), 3e-4);
            assert_lr(lr_at(schedule, lr, 10, 110, 10), lr);
        }
        // Constant after warmup, even past the end.
        assert_lr(lr_at(Schedule::Constant, lr, 10, 110, 60), lr);
        assert_lr(lr_at(Schedule::Constant, lr, 10, 110, 500), lr);
        // Linear: (110 - step) / 100.
        assert_lr(lr_at(Schedule::Linear, lr, 10, 110, 60), 5e-4);
        assert_lr(lr_at(Schedule::Linear, lr, 10, 110, 85), 2.5e-4);
        assert_lr(lr_at(Schedule::Linear, lr, 10, 110, 109), 1e-5);
        assert_lr(lr_at(Schedule::Linear, lr, 10, 110, 110), 0.0);
        assert_lr(lr_at(Schedule::Linear, lr, 10, 110, 200), 0.0);
        // Cosine: 0.5 * (1 + cos(pi * (step - 10) / 100)).
        assert_lr(lr_at(Schedule::Cosine, lr, 10, 110, 60), 5e-4);
        assert_lr(lr_at(Schedule::Cosine, lr, 10, 110, 35), lr * 0.5 * (1.0 + (PI / 4.0).cos()));
        assert_lr(lr_at(Schedule::Cosine, lr, 10, 110, 35), lr * 0.853_553_390_593_273_8);
        assert_lr(lr_at(Schedule::Cosine, lr, 10, 110, 110), 0.0);
        // No warmup: the first update uses the full rate.
        assert_lr(lr_at(Schedule::Linear, lr, 0, 4, 0), lr);
        assert_lr(lr_at(Schedule::Linear, lr, 0, 4, 1), 7.5e-4);
        assert_lr(lr_at(Schedule::Cosine, lr, 0, 4, 2), 5e-4);
        // Warmup as long as the run: max(1, total - warmup) keeps it finite.
        assert_lr(lr_at(Schedule::Linear, lr, 5, 5, 5), 0.0);
    }

    #[test]
    fn clipping_scales_to_max_norm_and_reports_the_norm() {
        let dev = Device::Cpu;
        let mut grads =
            vec![Tensor::new(&[3.0f32, 0.0], &dev).unwrap(), Tensor::new(&[[0.0f32], [4.0]], &dev).unwrap()];
        let norm = clip_grad_norm(&mut grads, 1.0, 0).unwrap();
        assert!((norm - 5.0).abs() < 1e-12, "{norm}");
        let coef = 1.0 / (5.0 + 1e-6);
        let a: Vec<f32> = grads[0].to_vec1().unwrap();
        let b: Vec<f32> = grads[1].flatten_all().unwrap().to_vec1().unwrap();
        assert!((a[0] as f64 - 3.0 * coef).abs() < 1e-7, "{a:?}");
        assert_eq!(a[1], 0.0);
        assert!((b[1] as f64 - 4.0 * coef).abs() < 1e-7, "{b:?}");
        // Now under the limit: unchanged. (At max_norm 1.0 itself torch would scale once more,
        // as max_norm / (norm + 1e-6) is just below 1.)
        let norm = clip_grad_norm(&mut grads, 2.0, 1).unwrap();
        assert!((norm - 5.0 * coef).abs() < 1e-6, "{norm}");
        let again: Vec<f32> = grads[0].to_vec1().unwrap();
        assert_eq!(again, a);
    }

    #[test]
    fn clipping_a_non_finite_gradient_is_divergence() {
        let dev = Device::Cpu;
        let mut grads = vec![Tensor::new(&[1.0f32, f32::NAN], &dev).unwrap()];
        match clip_grad_norm(&mut grads, 1.0, 42) {
            Err(AlignError::Diverged { step, message }) => {
                assert_eq!(step, 42);
                assert!(message.contains("NaN"), "{message}");
            }
            other => panic!("expected Diverged, got {other:?}"),
        }
        let mut grads = vec![Tensor::new(&[f32::INFINITY], &dev).unwrap()];
        assert!(matches!(clip_grad_norm(&mut grads, 1.0, 7), Err(AlignError::Diverged { step: 7, .. })));
    }

    #[test]
    fn accumulator_sums_micro_batches_and_resets() {
        let dev = Device::Cpu;
        let w = Var::new(&[1.0f32, 2.0], &dev).unwrap();
        let b = Var::new(&[0.5f32], &dev).unwrap();
        let vars = vec![("w".to_string(), w.clone()), ("b".to_string(), b.clone())];
        let mut acc = GradAccumulator::new(&vars);
        assert!(acc.take().is_empty());
        for x in [[1.0f32, 3.0], [2.0, -1.0]] {
            let x = Tensor::new(&x, &dev).unwrap();
            // loss = sum(w * x) + 2 * b  =>  d/dw = x, d/db = 2.
            let loss = ((w.as_tensor() * &x).unwrap().sum_all().unwrap()
                + (b.as_tensor() * 2.0).unwrap().sum_all().unwrap())
            .unwrap();
            acc.add(&loss.backward().unwrap()).unwrap();
        }
        assert_eq!(acc.micro_batches(), 2);
        let sums = acc.take();
        assert_eq!(sums[0].to_vec1::<f32>().unwrap(), [3.0, 2.0]);
        assert_eq!(sums[1].to_vec1::<f32>().unwrap(), [4.0]);
        assert_eq!(acc.micro_batches(), 0);
        assert!(acc.take().is_empty());
    }

    #[test]
    fn accumulator_names_a_var_cut_from_the_graph() {
        let dev = Device::Cpu;
        let w = Var::new(&[1.0f32, 2.0], &dev).unwrap();
        let unused = Var::new(&[0.0f32], &dev).unwrap();
        let vars = vec![("w".to_string(), w.clone()), ("lora_b".to_string(), unused)];
        let mut acc = GradAccumulator::new(&vars);
        let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
        let err = acc.add(&loss.backward().unwrap()).unwrap_err().to_string();
        assert!(err.contains("`lora_b`") && err.contains("cut from the graph"), "{err}");
        assert_eq!(acc.micro_batches(), 0);
    }
}
