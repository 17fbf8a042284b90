//! Fused CPU kernels, with their backward passes, for the model's row-wise ops:
//! RMSNorm, RoPE (with the head transpose and the attention scale), causal
//! softmax and the SwiGLU product.
//!
//! Built from candle's elementwise ops these are correct but slow on a CPU:
//! candle's backward pass computes (and keeps) a gradient for every operand,
//! constants included (the mask, the RoPE tables, a frozen norm weight), and the
//! graph keeps every intermediate tensor alive until the backward pass ends,
//! about 230 MB per layer for SmolLM2 on a batch of 8 × 256 tokens. Each kernel
//! here keeps only its input and output and returns gradients for its inputs.
//! The composite versions stay as the reference (and the path on other
//! devices); tests compare values and gradients of both.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

/// Rows per rayon task, at least: enough work to amortise the hand-off.
const MIN_ROWS: usize = 16;
/// Elements per rayon task in elementwise kernels.
const CHUNK: usize = 1 << 14;

type Result<T> = candle_core::Result<T>;

/// The contiguous f32 data of a CPU op input.
fn slice<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Runs `f` on the contiguous f32 data of CPU tensor `t` (copied first if strided).
fn with_data<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else { candle_core::bail!("{op}: CPU tensors only") };
    f(slice(cpu, layout, op)?)
}

fn cpu_tensor(data: Vec<f32>, shape: &Shape) -> Result<Tensor> {
    Tensor::from_vec(data, shape.clone(), &candle_core::Device::Cpu)
}

/// `x / rms(x) * w` over the last axis of `x` `(n, h)`, `w` `(h,)`.
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps })
}

struct RmsNorm {
    eps: f64,
}

impl RmsNorm {
    fn inv_rms(&self, row: &[f32]) -> f32 {
        let ms = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / row.len() as f64;
        (1.0 / (ms + self.eps).sqrt()) as f32
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (slice(s1, l1, "rms_norm")?, slice(s2, l2, "rms_norm")?);
        let h = w.len();
        if l1.dims().last() != Some(&h) {
            candle_core::bail!("rms_norm: x {:?} and w {:?} disagree", l1.dims(), l2.dims())
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(h).zip(x.par_chunks(h)).with_min_len(MIN_ROWS).for_each(|(yr, xr)| {
            let r = self.inv_rms(xr);
            for ((y, &x), &w) in yr.iter_mut().zip(xr).zip(w) {
                *y = x * r * w;
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    /// `gx = r (w g - x̂ mean(w g x̂))`, `gw = Σ_rows g x̂`, with `x̂ = r x`.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let h = w.elem_count();
        let (gx, gw) = with_data(x, "rms_norm", |x| {
            with_data(w, "rms_norm", |w| {
                with_data(g, "rms_norm", |g| {
                    let mut gx = vec![0f32; x.len()];
                    let gw = gx
                        .par_chunks_mut(h)
                        .zip(x.par_chunks(h).zip(g.par_chunks(h)))
                        .with_min_len(MIN_ROWS)
                        .fold(
                            || vec![0f64; h],
                            |mut gw, (gxr, (xr, gr))| {
                                let r = self.inv_rms(xr);
                                let mut dot = 0f64;
                                for j in 0..h {
                                    let xh = xr[j] * r;
                                    gw[j] += f64::from(gr[j] * xh);
                                    dot += f64::from(w[j] * gr[j] * xh);
                                }
                                let mean = (dot / h as f64) as f32;
                                for j in 0..h {
                                    gxr[j] = r * (w[j] * gr[j] - xr[j] * r * mean);
                                }
                                gw
                            },
                        )
                        .reduce(
                            || vec![0f64; h],
                            |mut a, b| {
                                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                                a
                            },
                        );
                    Ok((gx, gw.into_iter().map(|v| v as f32).collect::<Vec<f32>>()))
                })
            })
        })?;
        Ok((Some(cpu_tensor(gx, x.shape())?), Some(cpu_tensor(gw, w.shape())?)))
    }
}

/// RoPE tables for positions `0..t`: `cos` and `sin`, `(t, d/2)` row-major.
#[derive(Clone)]
pub(crate) struct RopeTables {
    pub cos: Arc<[f32]>,
    pub sin: Arc<[f32]>,
    pub half: usize,
}

/// Rotates `x` `(b, t, h, d)` (transformers' rotate-half pairing `(i, i + d/2)`),
/// multiplies by `scale` and transposes to `(b, h, t, d)`.
pub(crate) fn rope(x: &Tensor, tables: &RopeTables, scale: f32) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Rope { tables: tables.clone(), scale, backward: false })
}

/// Forward: `(b, t, h, d)` → `(b, h, t, d)`; `backward`: the transposed map,
/// `(b, h, t, d)` → `(b, t, h, d)`, rotating by `-angle`.
struct Rope {
    tables: RopeTables,
    scale: f32,
    backward: bool,
}

impl Rope {
    fn run(&self, x: &[f32], dims: &[usize]) -> Result<(Vec<f32>, Shape)> {
        let &[b, d1, d2, d] = dims else { candle_core::bail!("rope: want a rank-4 input, got {dims:?}") };
        // Forward input is (b, t, h, d); backward input is (b, h, t, d).
        let (t, h) = if self.backward { (d2, d1) } else { (d1, d2) };
        let half = self.tables.half;
        if d != 2 * half || t * half > self.tables.cos.len() {
            candle_core::bail!(
                "rope: input {dims:?} does not fit tables of {} x {half}",
                self.tables.cos.len() / half
            )
        }
        let sign = if self.backward { -1.0 } else { 1.0 };
        let mut y = vec![0f32; x.len()];
        // One output row (d values) per step: row o of (b, h, t) forward, of (b, t, h) backward.
        y.par_chunks_mut(d).enumerate().with_min_len(MIN_ROWS).for_each(|(o, yr)| {
            let (ti, src) = if self.backward {
                let (bi, ti, hi) = (o / (t * h), o / h % t, o % h);
                (ti, ((bi * h + hi) * t + ti) * d)
            } else {
                let (bi, hi, ti) = (o / (h * t), o / t % h, o % t);
                (ti, ((bi * t + ti) * h + hi) * d)
            };
            let cos = &self.tables.cos[ti * half..(ti + 1) * half];
            let sin = &self.tables.sin[ti * half..(ti + 1) * half];
            let (x1, x2) = x[src..src + d].split_at(half);
            let (y1, y2) = yr.split_at_mut(half);
            for i in 0..half {
                let (c, s) = (cos[i] * self.scale, sign * sin[i] * self.scale);
                y1[i] = x1[i] * c - x2[i] * s;
                y2[i] = x2[i] * c + x1[i] * s;
            }
        });
        let shape = if self.backward { (b, t, h, d) } else { (b, h, t, d) };
        Ok((y, Shape::from(shape)))
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, shape) = self.run(slice(storage, layout, "rope")?, layout.dims())?;
        Ok((CpuStorage::F32(y), shape))
    }

    /// The transposed rotation: by `-angle`, back to the input's layout.
    fn bwd(&self, _x: &Tensor, res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let inverse = Rope { tables: self.tables.clone(), scale: self.scale, backward: !self.backward };
        let (gx, shape) = with_data(g, "rope", |g| inverse.run(g, res.dims()))?;
        Ok(Some(cpu_tensor(gx, &shape)?))
    }
}

/// Softmax over the last axis of `s` `(.., rows, t)`, where row `r` is query
/// position `r mod t` and sees keys `0..=r mod t` only (the causal mask of the
/// stacked grouped-query layout; masked entries are 0).
pub(crate) fn causal_softmax(s: &Tensor) -> Result<Tensor> {
    s.contiguous()?.apply_op1(CausalSoftmax)
}

struct CausalSoftmax;

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "fused-causal-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let s = slice(storage, layout, "causal_softmax")?;
        let t = *layout.dims().last().unwrap_or(&0);
        let mut p = vec![0f32; s.len()];
        p.par_chunks_mut(t).zip(s.par_chunks(t)).enumerate().with_min_len(MIN_ROWS).for_each(
            |(r, (pr, sr))| {
                let seen = r % t + 1;
                let max = sr[..seen].iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for (p, &s) in pr[..seen].iter_mut().zip(&sr[..seen]) {
                    *p = (s - max).exp();
                    sum += *p;
                }
                let inv = 1.0 / sum;
                pr[..seen].iter_mut().for_each(|p| *p *= inv);
            },
        );
        Ok((CpuStorage::F32(p), layout.shape().clone()))
    }

    /// `gs = p (g - Σ g p)` per row.
    fn bwd(&self, _s: &Tensor, p: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let t = p.dim(candle_core::D::Minus1)?;
        let gs = with_data(p, "causal_softmax", |p| {
            with_data(g, "causal_softmax", |g| {
                let mut gs = vec![0f32; p.len()];
                gs.par_chunks_mut(t)
                    .zip(p.par_chunks(t).zip(g.par_chunks(t)))
                    .enumerate()
                    .with_min_len(MIN_ROWS)
                    .for_each(|(r, (out, (pr, gr)))| {
                        let seen = r % t + 1;
                        let dot: f32 = pr[..seen].iter().zip(&gr[..seen]).map(|(p, g)| p * g).sum();
                        for j in 0..seen {
                            out[j] = pr[j] * (gr[j] - dot);
                        }
                    });
                Ok(gs)
            })
        })?;
        Ok(Some(cpu_tensor(gs, p.shape())?))
    }
}

/// `silu(gate) · up`, elementwise.
pub(crate) fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SiluMul)
}

struct SiluMul;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "fused-silu-mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (gate, up) = (slice(s1, l1, "silu_mul")?, slice(s2, l2, "silu_mul")?);
        if l1.dims() != l2.dims() {
            candle_core::bail!("silu_mul: shapes {:?} and {:?} differ", l1.dims(), l2.dims())
        }
        let mut y = vec![0f32; gate.len()];
        y.par_chunks_mut(CHUNK).zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK))).for_each(
            |(y, (a, u))| {
                for ((y, &a), &u) in y.iter_mut().zip(a).zip(u) {
                    *y = a * sigmoid(a) * u;
                }
            },
        );
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    /// `g_gate = g · up · σ(a)(1 + a(1 - σ(a)))`, `g_up = g · silu(a)`.
    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (g_gate, g_up) = with_data(gate, "silu_mul", |a| {
            with_data(up, "silu_mul", |u| {
                with_data(g, "silu_mul", |g| {
                    let mut g_gate = vec![0f32; a.len()];
                    let mut g_up = vec![0f32; a.len()];
                    let inputs = a.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)).zip(g.par_chunks(CHUNK));
                    g_gate.par_chunks_mut(CHUNK).zip(g_up.par_chunks_mut(CHUNK)).zip(inputs).for_each(
                        |((g_gate, g_up), ((a, u), g))| {
                            for i in 0..a.len() {
                                let s = sigmoid(a[i]);
                                g_gate[i] = g[i] * u[i] * s * (1.0 + a[i] * (1.0 - s));
                                g_up[i] = g[i] * a[i] * s;
                            }
                        },
                    );
                    Ok((g_gate, g_up))
                })
            })
        })?;
        Ok((Some(cpu_tensor(g_gate, gate.shape())?), Some(cpu_tensor(g_up, up.shape())?)))
    }
}
