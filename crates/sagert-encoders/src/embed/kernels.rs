//! Fused CPU kernels for the encoder's elementwise steps: candle custom ops
//! between the matrix products, and plain functions for the embedding step
//! and pooling.
//!
//! Run one after another, candle's generic ops make a full pass over memory
//! each (bias add, residual add, LayerNorm; bias add, GELU; mask add,
//! softmax), compute GELU with a scalar `erff` call per element, and share out
//! large elementwise work on a spinning process-wide pool. These kernels do
//! each group in one pass, in parallel on the *current* rayon pool (the
//! embedder's own), with loops the compiler vectorises. The matrix products
//! stay candle's.
//!
//! Every kernel takes contiguous f32 input and is checked against candle's
//! unfused ops in the tests below.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape};
use rayon::prelude::*;

/// Rows per rayon task: enough to amortise the task, few enough to balance.
const ROWS_PER_TASK: usize = 16;

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { bail!("{op}: expected f32 input, got {:?}", storage.dtype()) };
    let Some((start, end)) = layout.contiguous_offsets() else { bail!("{op}: expected contiguous input") };
    Ok(&data[start..end])
}

fn check_last_dim(layout: &Layout, n: usize, op: &str) -> Result<()> {
    match layout.dims().last() {
        Some(&d) if d == n => Ok(()),
        _ => bail!("{op}: expected rows of {n}, got shape {:?}", layout.dims()),
    }
}

/// erf for f32 to within 5e-7: the rational approximation of Eigen and XLA
/// (odd degree-13 numerator over even degree-8 denominator), with the input
/// clamped to [-4, 4], beyond which erf is ±1 in f32. Branch-free, so loops
/// over it vectorise.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_600_1e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329_2e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// GELU, the erf form BERT uses: `x/2 * (1 + erf(x/√2))`.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `gelu(x + bias)` over rows of `bias.len()`.
pub(crate) struct BiasGelu {
    pub bias: Vec<f32>,
}

impl CustomOp1 for BiasGelu {
    fn name(&self) -> &'static str {
        "bias-gelu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let n = self.bias.len();
        check_last_dim(layout, n, self.name())?;
        let x = contiguous_f32(storage, layout, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(n * ROWS_PER_TASK).zip(x.par_chunks(n * ROWS_PER_TASK)).for_each(|(out, x)| {
            for (out, x) in out.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
                for ((o, &v), &b) in out.iter_mut().zip(x).zip(&self.bias) {
                    *o = gelu(v + b);
                }
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// LayerNorm parameters, applied to one row at a time.
pub(crate) struct Norm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub eps: f32,
}

impl Norm {
    /// Normalises `row` in place (mean and variance in two passes, as torch).
    fn apply(&self, row: &mut [f32]) {
        let n = row.len() as f32;
        let mean = row.iter().sum::<f32>() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let scale = 1.0 / (var + self.eps).sqrt();
        for ((o, &g), &b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
            *o = (*o - mean) * scale * g + b;
        }
    }
}

/// `LayerNorm(x + bias + residual)` over rows of `bias.len()`: the end of a
/// BERT attention or feed-forward block, after its output projection.
pub(crate) struct AddNorm {
    pub bias: Vec<f32>,
    pub norm: Norm,
}

impl AddNorm {
    fn row(&self, out: &mut [f32], x: &[f32], residual: &[f32]) {
        for (((o, &a), &b), &r) in out.iter_mut().zip(x).zip(&self.bias).zip(residual) {
            *o = a + b + r;
        }
        self.norm.apply(out);
    }
}

impl CustomOp2 for AddNorm {
    fn name(&self) -> &'static str {
        "add-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = self.bias.len();
        check_last_dim(l1, n, self.name())?;
        if l1.dims() != l2.dims() {
            bail!("{}: shapes {:?} and {:?} differ", self.name(), l1.dims(), l2.dims());
        }
        let x = contiguous_f32(s1, l1, self.name())?;
        let residual = contiguous_f32(s2, l2, self.name())?;
        let mut out = vec![0f32; x.len()];
        let chunk = n * ROWS_PER_TASK;
        out.par_chunks_mut(chunk).zip(x.par_chunks(chunk).zip(residual.par_chunks(chunk))).for_each(
            |(out, (x, residual))| {
                for ((out, x), residual) in
                    out.chunks_exact_mut(n).zip(x.chunks_exact(n)).zip(residual.chunks_exact(n))
                {
                    self.row(out, x, residual);
                }
            },
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Softmax over the last dimension of attention scores `(batch, heads, seq,
/// seq)` where sequence `b` has `lengths[b]` real tokens followed by padding:
/// the padded keys get probability 0, and the rows of padded queries are all
/// 0 (nothing real attends to them, and pooling skips them).
pub(crate) struct MaskedSoftmax<'a> {
    pub lengths: &'a [usize],
}

impl CustomOp1 for MaskedSoftmax<'_> {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[batch, heads, seq, seq2] = layout.dims() else {
            bail!("{}: expected 4 dims, got {:?}", self.name(), layout.dims())
        };
        if seq != seq2 || batch != self.lengths.len() || self.lengths.iter().any(|&l| l > seq) {
            bail!("{}: shape {:?} does not fit lengths {:?}", self.name(), layout.dims(), self.lengths);
        }
        let x = contiguous_f32(storage, layout, self.name())?;
        let mut out = vec![0f32; x.len()];
        // One task per (sequence, head): seq rows of seq scores.
        out.par_chunks_mut(seq * seq).zip(x.par_chunks(seq * seq)).enumerate().for_each(
            |(task, (out, x))| {
                let len = self.lengths[task / heads];
                for (out, x) in out.chunks_exact_mut(seq).zip(x.chunks_exact(seq)).take(len) {
                    let (out, x) = (&mut out[..len], &x[..len]);
                    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for (o, &v) in out.iter_mut().zip(x) {
                        *o = (v - max).exp();
                        sum += *o;
                    }
                    let inv = 1.0 / sum;
                    out.iter_mut().for_each(|o| *o *= inv);
                }
            },
        );
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Adds the fused query/key/value bias to the rows `(batch * seq, 3 * hidden)`
/// of the fused projection and lays them out as `(3, batch, heads, seq,
/// head_dim)`, ready for batched matrix products per head.
pub(crate) struct SplitHeads<'a> {
    pub bias: &'a [f32],
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
}

impl CustomOp1 for SplitHeads<'_> {
    fn name(&self) -> &'static str {
        "split-heads"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let width = self.bias.len();
        let (batch, seq, heads) = (self.batch, self.seq, self.heads);
        let hidden = width / 3;
        let head_dim = hidden / heads;
        if layout.dims() != [batch * seq, width] || hidden * 3 != width || head_dim * heads != hidden {
            bail!(
                "{}: shape {:?} does not fit batch {batch}, seq {seq}, {heads} heads, width {width}",
                self.name(),
                layout.dims()
            );
        }
        let x = contiguous_f32(storage, layout, self.name())?;
        let mut out = vec![0f32; x.len()];
        // One task per (q/k/v, sequence, head): seq rows of head_dim.
        out.par_chunks_mut(seq * head_dim).enumerate().for_each(|(task, out)| {
            let (part, b, h) = (task / (batch * heads), task / heads % batch, task % heads);
            let col = part * hidden + h * head_dim;
            let bias = &self.bias[col..col + head_dim];
            for (i, out) in out.chunks_exact_mut(head_dim).enumerate() {
                let row = (b * seq + i) * width + col;
                for ((o, &v), &b) in out.iter_mut().zip(&x[row..row + head_dim]).zip(bias) {
                    *o = v + b;
                }
            }
        });
        let shape = Shape::from((3, batch, heads, seq, head_dim));
        Ok((CpuStorage::F32(out), shape))
    }
}

/// BERT's embedding step: for each of the `(batch * seq)` tokens of `ids`, its
/// row of `word` plus the row of `positions` for its place in its sequence,
/// then `norm`. `word` is `(vocab, hidden)`, `positions` `(max_positions,
/// hidden)`, both row-major.
pub(crate) fn embed_tokens(
    ids: &[u32],
    seq: usize,
    word: &[f32],
    positions: &[f32],
    norm: &Norm,
) -> Result<Vec<f32>> {
    let h = norm.gamma.len();
    let vocab = word.len() / h;
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
        bail!("token id {id} is outside the model's vocabulary of {vocab}")
    }
    if seq * h > positions.len() || !ids.len().is_multiple_of(seq.max(1)) {
        bail!("{} ids in sequences of {seq} do not fit {} positions", ids.len(), positions.len() / h)
    }
    let mut out = vec![0f32; ids.len() * h];
    out.par_chunks_mut(h * ROWS_PER_TASK).enumerate().for_each(|(task, rows)| {
        for (r, out) in rows.chunks_exact_mut(h).enumerate() {
            let token = task * ROWS_PER_TASK + r;
            let (id, place) = (ids[token] as usize, token % seq);
            let w = &word[id * h..(id + 1) * h];
            let p = &positions[place * h..(place + 1) * h];
            for ((o, &a), &b) in out.iter_mut().zip(w).zip(p) {
                *o = a + b;
            }
            norm.apply(out);
        }
    });
    Ok(out)
}

/// Mean of each sequence's first `lengths[b]` rows of `hidden` (`(batch *
/// seq, h)`), then L2 normalisation, as sentence-transformers' `Pooling(mean)`
/// and `Normalize` do, with their epsilons (token count clamped to 1e-9, norm
/// to 1e-12).
pub(crate) fn mean_pool_normalize(hidden: &[f32], lengths: &[usize], seq: usize, h: usize) -> Vec<Vec<f32>> {
    lengths
        .par_iter()
        .enumerate()
        .map(|(b, &len)| {
            let mut v = vec![0f32; h];
            for row in hidden[b * seq * h..(b + 1) * seq * h].chunks_exact(h).take(len) {
                v.iter_mut().zip(row).for_each(|(a, &x)| *a += x);
            }
            let count = (len as f32).max(1e-9);
            v.iter_mut().for_each(|a| *a /= count);
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|a| *a /= norm);
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor, D};

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut state = seed;
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    #[test]
    fn erf_matches_f64_erf() {
        let xs: Vec<f64> = (-60_000..=60_000).map(|i| f64::from(i) / 10_000.0).collect();
        let exact =
            Tensor::new(xs.as_slice(), &Device::Cpu).unwrap().erf().unwrap().to_vec1::<f64>().unwrap();
        let worst =
            xs.iter().zip(&exact).map(|(&x, &e)| (f64::from(erf(x as f32)) - e).abs()).fold(0f64, f64::max);
        assert!(worst < 6e-7, "{worst}");
        assert_eq!(erf(0.0), 0.0);
        assert!((erf(10.0) - 1.0).abs() < 1e-6 && (erf(-10.0) + 1.0).abs() < 1e-6);
    }

    #[test]
    fn bias_gelu_matches_candle() {
        let x = random(&[37, 24], 1);
        let bias = random(&[24], 2);
        let op = BiasGelu { bias: bias.to_vec1().unwrap() };
        let fused = x.apply_op1_no_bwd(&op).unwrap();
        let reference = x.broadcast_add(&bias).unwrap().gelu_erf().unwrap();
        assert!(max_diff(&fused, &reference) < 5e-6);
    }

    #[test]
    fn add_norm_matches_candle() {
        let x = random(&[37, 24], 3);
        let residual = random(&[37, 24], 4);
        let (bias, gamma, beta) = (random(&[24], 5), random(&[24], 6), random(&[24], 7));
        let op = AddNorm {
            bias: bias.to_vec1().unwrap(),
            norm: Norm { gamma: gamma.to_vec1().unwrap(), beta: beta.to_vec1().unwrap(), eps: 1e-12 },
        };
        let fused = x.apply_op2_no_bwd(&residual, &op).unwrap();
        let sum = (x.broadcast_add(&bias).unwrap() + &residual).unwrap();
        let reference = candle_nn::ops::layer_norm(&sum, &gamma, &beta, 1e-12).unwrap();
        assert!(max_diff(&fused, &reference) < 1e-4);
    }

    #[test]
    fn masked_softmax_matches_candle_with_a_mask_bias() {
        let (batch, heads, seq) = (3, 2, 5);
        let lengths = vec![5, 2, 3];
        let scores = random(&[batch, heads, seq, seq], 8);
        let fused = scores.apply_op1_no_bwd(&MaskedSoftmax { lengths: &lengths }).unwrap();
        let mask: Vec<f32> =
            lengths.iter().flat_map(|&l| (0..seq).map(move |j| if j < l { 0.0 } else { -1e30 })).collect();
        let mask = Tensor::from_vec(mask, (batch, 1, 1, seq), &Device::Cpu).unwrap();
        let reference = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask).unwrap()).unwrap();
        // Real query rows agree; padded query rows are zero.
        for (b, &len) in lengths.iter().enumerate() {
            let f = fused.get(b).unwrap().narrow(1, 0, len).unwrap();
            let r = reference.get(b).unwrap().narrow(1, 0, len).unwrap();
            assert!(max_diff(&f, &r) < 1e-6);
            let padded = fused.get(b).unwrap().narrow(1, len, seq - len).unwrap();
            let total = padded.abs().unwrap().sum_all().unwrap();
            assert_eq!(total.to_scalar::<f32>().unwrap(), 0.0);
        }
        let rows = fused.sum(D::Minus1).unwrap();
        let first = rows.get(0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(first.iter().all(|s| (s - 1.0).abs() < 1e-5));
    }

    #[test]
    fn split_heads_matches_candle() {
        let (batch, seq, heads, head_dim) = (2, 3, 4, 5);
        let width = 3 * heads * head_dim;
        let x = random(&[batch * seq, width], 9);
        let bias = random(&[width], 10);
        let bias_values: Vec<f32> = bias.to_vec1().unwrap();
        let op = SplitHeads { bias: &bias_values, batch, seq, heads };
        let fused = x.apply_op1_no_bwd(&op).unwrap();
        let reference = x
            .broadcast_add(&bias)
            .unwrap()
            .reshape((batch, seq, 3, heads, head_dim))
            .unwrap()
            .permute((2, 0, 3, 1, 4))
            .unwrap()
            .contiguous()
            .unwrap();
        assert_eq!(max_diff(&fused, &reference), 0.0);
    }

    #[test]
    fn embed_tokens_matches_candle() {
        let (batch, seq, vocab, h) = (2, 3, 7, 8);
        let word = random(&[vocab, h], 11);
        let positions = random(&[5, h], 12);
        let (gamma, beta) = (random(&[h], 13), random(&[h], 14));
        let norm = Norm { gamma: gamma.to_vec1().unwrap(), beta: beta.to_vec1().unwrap(), eps: 1e-12 };
        let ids: Vec<u32> = vec![1, 6, 0, 3, 3, 2];
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let fused = embed_tokens(&ids, seq, &flat(&word), &flat(&positions), &norm).unwrap();
        let fused = Tensor::from_vec(fused, (batch * seq, h), &Device::Cpu).unwrap();
        let ids_t = Tensor::from_vec(ids.clone(), batch * seq, &Device::Cpu).unwrap();
        let place = positions.narrow(0, 0, seq).unwrap().repeat((batch, 1)).unwrap();
        let sum = (word.index_select(&ids_t, 0).unwrap() + place).unwrap();
        let reference = candle_nn::ops::layer_norm(&sum, &gamma, &beta, 1e-12).unwrap();
        assert!(max_diff(&fused, &reference) < 1e-4);

        let err = embed_tokens(&[7], 1, &flat(&word), &flat(&positions), &norm).unwrap_err();
        assert!(err.to_string().contains("token id 7"), "{err}");
    }

    #[test]
    fn mean_pool_normalize_averages_the_real_tokens() {
        let (seq, h) = (3, 2);
        // Sequence 0: rows (3, 0), (1, 0), padding (100, 100): mean (2, 0) -> (1, 0).
        // Sequence 1: rows (0, 1), (0, 3), (0, 2): mean (0, 2) -> (0, 1).
        let hidden = [3.0, 0.0, 1.0, 0.0, 100.0, 100.0, 0.0, 1.0, 0.0, 3.0, 0.0, 2.0];
        let pooled = mean_pool_normalize(&hidden, &[2, 3], seq, h);
        assert_eq!(pooled, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert_eq!(mean_pool_normalize(&hidden, &[0], seq, h), vec![vec![0.0, 0.0]]);
    }
}
