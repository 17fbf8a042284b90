//! LoRA adapters (PEFT's layout and initialisation) on linear layers whose base
//! weights stay frozen.
//!
//! A [`LoraLinear`] computes `y = x Wᵀ + b + scale · dropout(x) Aᵀ Bᵀ` as PEFT
//! does, with `A` of shape `(r, in)` and `B` of shape `(out, r)`. The frozen
//! base product goes through [`frozen_matmul`], a matmul whose backward pass
//! computes only the input's gradient: candle's own matmul always computes the
//! weight's gradient too, a full-size product thrown away for a frozen weight
//! (a third of the model's training FLOPs under LoRA). On the CPU, base, bias
//! and adapter term go into one output buffer (`CpuLoraLinear`), so that the
//! graph keeps one `(n, out)` tensor per layer instead of three.

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp2, CustomOp3, DType, Device, Layout, MetalStorage, Shape, Tensor, Var,
};
use rayon::prelude::*;

/// The modules a LoRA adapter can target, in the order the model visits them.
pub const LORA_MODULES: [&str; 7] =
    ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// The LoRA hyperparameters (the `[lora]` section of a run's configuration).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// The adapters' rank `r`.
    pub rank: usize,
    /// The scaling numerator: adapters are scaled by `alpha / rank`.
    pub alpha: f64,
    /// Dropout probability on the adapters' input (training only).
    pub dropout: f64,
    /// The projections that get an adapter (names from [`LORA_MODULES`]).
    pub target_modules: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 16,
            alpha: 32.0,
            dropout: 0.0,
            target_modules: LORA_MODULES.iter().map(|m| m.to_string()).collect(),
        }
    }
}

impl LoraConfig {
    /// The factor applied to the adapters' output, `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Checks the values, saying which field is wrong and why.
    pub fn validate(&self) -> Result<(), String> {
        if self.rank == 0 {
            return Err("lora.rank must be at least 1".into());
        }
        if !self.alpha.is_finite() {
            return Err(format!("lora.alpha must be a finite number, not {}", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("lora.dropout must be in [0, 1), not {}", self.dropout));
        }
        if self.target_modules.is_empty() {
            return Err("lora.target_modules is empty; name at least one module".into());
        }
        for (i, module) in self.target_modules.iter().enumerate() {
            if !LORA_MODULES.contains(&module.as_str()) {
                return Err(format!(
                    "lora.target_modules: unknown module `{module}`; expected one of {}",
                    LORA_MODULES.join(", ")
                ));
            }
            if self.target_modules[..i].contains(module) {
                return Err(format!("lora.target_modules: `{module}` is listed twice"));
            }
        }
        Ok(())
    }

    /// Whether `module` (e.g. `q_proj`) gets an adapter.
    pub fn targets(&self, module: &str) -> bool {
        self.target_modules.iter().any(|m| m == module)
    }
}

/// A weight that is either frozen (a plain tensor, no gradient) or trained (a [`Var`], f32).
#[derive(Debug, Clone)]
pub enum Param {
    /// Frozen: excluded from backpropagation.
    Frozen(Tensor),
    /// Trained.
    Trainable(Var),
}

impl Param {
    /// The weight as a tensor.
    pub fn tensor(&self) -> &Tensor {
        match self {
            Param::Frozen(t) => t,
            Param::Trainable(v) => v.as_tensor(),
        }
    }
}

/// A LoRA adapter: `A` (r, in), `B` (out, r), trained.
#[derive(Debug, Clone)]
pub struct Adapter {
    /// The down projection, shape `(r, in)`.
    pub a: Var,
    /// The up projection, shape `(out, r)`.
    pub b: Var,
    /// `alpha / rank`.
    pub scale: f64,
    /// Dropout probability on the adapter's input.
    pub dropout: f64,
}

impl Adapter {
    /// A new adapter initialised as PEFT does: `A ~ U(-1/√in, 1/√in)` (kaiming
    /// uniform with `a = √5`), `B = 0`, drawn from `seed` alone.
    pub fn new(
        cfg: &LoraConfig,
        in_dim: usize,
        out_dim: usize,
        seed: u64,
        device: &Device,
    ) -> candle_core::Result<Adapter> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a: Vec<f32> = (0..cfg.rank * in_dim).map(|_| ((rng.f64() * 2.0 - 1.0) * bound) as f32).collect();
        let a = Var::from_tensor(&Tensor::from_vec(a, (cfg.rank, in_dim), device)?)?;
        let b = Var::zeros((out_dim, cfg.rank), DType::F32, device)?;
        Ok(Adapter { a, b, scale: cfg.scale(), dropout: cfg.dropout })
    }

    /// `scale · B @ A`, shape `(out, in)`, f32: what merging adds to the base weight.
    pub fn delta(&self) -> candle_core::Result<Tensor> {
        self.b.as_tensor().matmul(self.a.as_tensor())?.affine(self.scale, 0.0)
    }
}

/// A linear layer `y = x Wᵀ + b` (weight `(out, in)`) with an optional LoRA adapter.
#[derive(Debug, Clone)]
pub struct LoraLinear {
    weight: Param,
    bias: Option<Param>,
    adapter: Option<Adapter>,
}

impl LoraLinear {
    /// A layer from its weight, bias and adapter.
    pub fn new(weight: Param, bias: Option<Param>, adapter: Option<Adapter>) -> LoraLinear {
        LoraLinear { weight, bias, adapter }
    }

    /// The base weight, `(out, in)`.
    pub fn weight(&self) -> &Param {
        &self.weight
    }

    /// The bias, `(out,)`, if any.
    pub fn bias(&self) -> Option<&Param> {
        self.bias.as_ref()
    }

    /// The adapter, if any.
    pub fn adapter(&self) -> Option<&Adapter> {
        self.adapter.as_ref()
    }

    /// `x` is `(n, in)` f32; returns `(n, out)` f32. `dropout_seed` is the seed
    /// of this module's dropout mask in training mode, `None` in eval mode.
    pub fn forward(&self, x: &Tensor, dropout_seed: Option<u64>) -> candle_core::Result<Tensor> {
        self.forward_with(x, dropout_seed, x.device().is_cpu())
    }

    /// [`LoraLinear::forward`], with the fused CPU kernel when `fused` (and the
    /// weight is frozen, the input f32 and on the CPU) or candle's ops.
    pub(crate) fn forward_with(
        &self,
        x: &Tensor,
        dropout_seed: Option<u64>,
        fused: bool,
    ) -> candle_core::Result<Tensor> {
        // The adapter's rank-r activations, scale included: (n, r).
        let h = match &self.adapter {
            Some(adapter) => {
                let x = match dropout_seed {
                    Some(seed) if adapter.dropout > 0.0 => {
                        x.mul(&dropout_mask(x.dims2()?, adapter.dropout, seed, x.device())?)?
                    }
                    _ => x.clone(),
                };
                Some(x.matmul(&adapter.a.as_tensor().t()?)?.affine(adapter.scale, 0.0)?)
            }
            None => None,
        };
        if let (Param::Frozen(w), Some(h), Some(adapter)) = (&self.weight, &h, &self.adapter) {
            // The CPU kernel: base, frozen bias and adapter term into one output buffer.
            let bias = match &self.bias {
                None => Some(None),
                Some(Param::Frozen(b)) => Some(Some(b.to_dtype(DType::F32)?)),
                Some(Param::Trainable(_)) => None,
            };
            if let Some(bias) = bias.filter(|_| fused && x.device().is_cpu() && x.dtype() == DType::F32) {
                let op = CpuLoraLinear { w: w.to_dtype(DType::F32)?, bias };
                return x.apply_op3(h, adapter.b.as_tensor(), op);
            }
        }
        let mut y = match &self.weight {
            Param::Frozen(w) if w.dtype() == x.dtype() => frozen_matmul(x, w)?,
            // candle's CPU matmul has no bf16: widen the weight (cheap next to the product).
            Param::Frozen(w) if x.device().is_cpu() => frozen_matmul(x, &w.to_dtype(x.dtype())?)?,
            Param::Frozen(w) => frozen_matmul(&x.to_dtype(w.dtype())?, w)?.to_dtype(x.dtype())?,
            Param::Trainable(w) => x.matmul(&w.as_tensor().t()?)?,
        };
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(&bias.tensor().to_dtype(y.dtype())?)?;
        }
        if let (Some(h), Some(adapter)) = (&h, &self.adapter) {
            y = (y + h.matmul(&adapter.b.as_tensor().t()?)?)?;
        }
        Ok(y)
    }

    /// The effective weight `W + scale · B @ A` in f32 (`W` alone without an adapter).
    pub fn merged_weight(&self) -> candle_core::Result<Tensor> {
        let w = self.weight.tensor().to_dtype(DType::F32)?;
        match &self.adapter {
            Some(adapter) => (w + adapter.delta()?)?.contiguous(),
            None => w.contiguous(),
        }
    }
}

/// An inverted-dropout mask of shape `dims`: each entry is 0 with probability
/// `p`, else `1 / (1 - p)`, drawn from `seed` with our own generator (the same
/// seed gives the same mask on every run and machine).
pub fn dropout_mask(dims: (usize, usize), p: f64, seed: u64, device: &Device) -> candle_core::Result<Tensor> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let keep = (1.0 / (1.0 - p)) as f32;
    // P(u32 < threshold) = p, to 2^-32.
    let threshold = (p * 4_294_967_296.0) as u64;
    let mask: Vec<f32> =
        (0..dims.0 * dims.1).map(|_| if u64::from(rng.u32(..)) < threshold { 0.0 } else { keep }).collect();
    Tensor::from_vec(mask, dims, device)
}

/// `x Wᵀ` for `x` `(n, in)` and a frozen `w` `(out, in)` (same dtype): the
/// backward pass gives `x` its gradient `g W` and computes nothing for `w`.
pub fn frozen_matmul(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.apply_op2(w, FrozenMatmul)
}

/// The custom op behind [`frozen_matmul`].
struct FrozenMatmul;

impl FrozenMatmul {
    /// `(m, n, k)` and the layout of `wᵀ`, after checking shapes.
    fn plan(l1: &Layout, l2: &Layout) -> candle_core::Result<((usize, usize, usize), Layout)> {
        let (&[m, k], &[n, k2]) = (l1.dims(), l2.dims()) else {
            candle_core::bail!(
                "frozen_matmul wants x (n, in) and w (out, in), got {:?} and {:?}",
                l1.dims(),
                l2.dims()
            )
        };
        if k != k2 {
            candle_core::bail!("frozen_matmul: x has {k} features, w expects {k2}")
        }
        Ok(((m, n, k), l2.transpose(0, 1)?))
    }

    fn run<S: BackendStorage>(s1: &S, l1: &Layout, s2: &S, l2: &Layout) -> candle_core::Result<(S, Shape)> {
        let ((m, n, k), wt) = Self::plan(l1, l2)?;
        Ok((s1.matmul(s2, (1, m, n, k), l1, &wt)?, Shape::from((m, n))))
    }
}

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Self::run(s1, l1, s2, l2)
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        Self::run(s1, l1, s2, l2)
    }

    fn metal_fwd(
        &self,
        s1: &MetalStorage,
        l1: &Layout,
        s2: &MetalStorage,
        l2: &Layout,
    ) -> candle_core::Result<(MetalStorage, Shape)> {
        Self::run(s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(w)?), None))
    }
}

/// `x Wᵀ + b + h Bᵀ` for a frozen `W` `(out, in)` and bias `b` (held by the op,
/// so they get no gradient), the adapter's `h` `(n, r)` and `B` `(out, r)`, on
/// the CPU in f32. One output buffer instead of three tensors (base, adapter
/// term, sum) kept for the backward pass, and no gradient for `W`.
struct CpuLoraLinear {
    w: Tensor,
    bias: Option<Tensor>,
}

/// `lhs @ rhsᵀ` for 2-D CPU storages, as a vector.
fn cpu_matmul_t(
    lhs: &CpuStorage,
    l1: &Layout,
    rhs: &CpuStorage,
    l2: &Layout,
) -> candle_core::Result<Vec<f32>> {
    match FrozenMatmul::run(lhs, l1, rhs, l2)?.0 {
        CpuStorage::F32(v) => Ok(v),
        other => candle_core::bail!("lora linear: f32 only, got {:?}", other.dtype()),
    }
}

/// `f` on the contiguous f32 data of CPU tensor `t`.
fn with_cpu_f32<R>(
    t: &Tensor,
    f: impl FnOnce(&CpuStorage, &Layout) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(cpu) => f(cpu, layout),
        _ => candle_core::bail!("lora linear: CPU tensors only"),
    }
}

impl CustomOp3 for CpuLoraLinear {
    fn name(&self) -> &'static str {
        "cpu-lora-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        h: &CpuStorage,
        lh: &Layout,
        b: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let mut y = with_cpu_f32(&self.w, |w, lw| cpu_matmul_t(x, lx, w, lw))?;
        let delta = cpu_matmul_t(h, lh, b, lb)?;
        let (n, out) = (lx.dims()[0], lb.dims()[0]);
        let bias = match &self.bias {
            Some(bias) => bias.to_vec1::<f32>()?,
            None => vec![0.0; out],
        };
        y.par_chunks_mut(out).zip(delta.par_chunks(out)).with_min_len(16).for_each(|(yr, dr)| {
            for ((y, d), b) in yr.iter_mut().zip(dr).zip(&bias) {
                *y += d + b;
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((n, out))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        h: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        Ok((Some(g.matmul(&self.w)?), Some(g.matmul(b)?), Some(g.t()?.matmul(h)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(rows: usize, cols: usize, seed: u64) -> Tensor {
        let mut rng = fastrand::Rng::with_seed(seed);
        let v: Vec<f32> = (0..rows * cols).map(|_| rng.f32() - 0.5).collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    #[test]
    fn defaults_scale_and_validation() {
        let cfg = LoraConfig::default();
        assert_eq!(cfg.target_modules.len(), 7);
        assert_eq!(cfg.scale(), 2.0);
        assert_eq!(cfg.validate(), Ok(()));
        let parsed: LoraConfig = toml::from_str("rank = 8\nalpha = 8.0").unwrap();
        assert_eq!(parsed.scale(), 1.0);
        assert_eq!(parsed.target_modules, cfg.target_modules);
        assert!(toml::from_str::<LoraConfig>("rank = 8\nranks = 3")
            .unwrap_err()
            .to_string()
            .contains("ranks"));
    }

    #[test]
    fn frozen_matmul_matches_matmul_and_skips_the_weight_gradient() {
        let x = Var::from_tensor(&tensor(5, 7, 1)).unwrap();
        let w = tensor(3, 7, 2);
        let ours = frozen_matmul(x.as_tensor(), &w).unwrap();
        let plain = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
        assert!(max_diff(&ours, &plain) < 1e-6);
        let grads = (ours.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
        let plain_grads = (plain.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
        let (g, pg) = (grads.get(x.as_tensor()).unwrap(), plain_grads.get(x.as_tensor()).unwrap());
        assert!(max_diff(g, pg) < 1e-5, "{g} vs {pg}");
        assert!(grads.get(&w).is_none());
    }

    #[test]
    fn dropout_mask_is_seeded_and_scaled() {
        let a = dropout_mask((64, 64), 0.25, 7, &Device::Cpu).unwrap();
        let b = dropout_mask((64, 64), 0.25, 7, &Device::Cpu).unwrap();
        let c = dropout_mask((64, 64), 0.25, 8, &Device::Cpu).unwrap();
        assert_eq!(max_diff(&a, &b), 0.0);
        assert!(max_diff(&a, &c) > 0.0);
        let v: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let dropped = v.iter().filter(|&&x| x == 0.0).count() as f64 / v.len() as f64;
        assert!((dropped - 0.25).abs() < 0.03, "{dropped}");
        assert!(v.iter().all(|&x| x == 0.0 || (x - 4.0 / 3.0).abs() < 1e-6));
    }

    #[test]
    fn adapter_init_follows_peft_and_merges() {
        let cfg = LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() };
        let adapter = Adapter::new(&cfg, 100, 6, 3, &Device::Cpu).unwrap();
        let a: Vec<f32> = adapter.a.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        assert!(a.iter().all(|x| x.abs() <= 0.1) && a.iter().any(|x| x.abs() > 0.09));
        assert_eq!(adapter.b.as_tensor().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        adapter.b.set(&tensor(6, 4, 4)).unwrap();
        let layer = LoraLinear::new(Param::Frozen(tensor(6, 100, 5)), None, Some(adapter));
        let x = tensor(3, 100, 6);
        let y = layer.forward(&x, None).unwrap();
        let merged = x.matmul(&layer.merged_weight().unwrap().t().unwrap()).unwrap();
        assert!(max_diff(&y, &merged) < 1e-5);
    }

    /// The fused CPU kernel and candle's ops agree on values and on the
    /// gradients of x, A, B and a trainable bias; the frozen weight gets none.
    #[test]
    fn cpu_kernel_matches_composite_ops() {
        let cfg = LoraConfig { rank: 3, alpha: 6.0, dropout: 0.25, ..LoraConfig::default() };
        let adapter = Adapter::new(&cfg, 7, 5, 1, &Device::Cpu).unwrap();
        adapter.b.set(&tensor(5, 3, 2)).unwrap();
        let w = tensor(5, 7, 3);
        for bias in [None, Some(Param::Frozen(tensor(1, 5, 4).flatten_all().unwrap()))] {
            let layer = LoraLinear::new(Param::Frozen(w.clone()), bias, Some(adapter.clone()));
            let x = Var::from_tensor(&tensor(4, 7, 5)).unwrap();
            let run = |fused: bool| {
                let y = layer.forward_with(x.as_tensor(), Some(9), fused).unwrap();
                let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                assert!(grads.get(&w).is_none());
                let g = |t: &Tensor| grads.get(t).unwrap().clone();
                (y, [g(x.as_tensor()), g(adapter.a.as_tensor()), g(adapter.b.as_tensor())])
            };
            let ((y1, g1), (y2, g2)) = (run(true), run(false));
            assert!(max_diff(&y1, &y2) < 1e-5);
            for (a, b) in g1.iter().zip(&g2) {
                assert!(max_diff(a, b) < 1e-4, "{a} vs {b}");
            }
        }
    }
}
