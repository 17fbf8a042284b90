//! Confidence intervals for evaluation metrics.
//!
//! - [`bootstrap_mean_ci`]: the mean of per-item scores (0/1 for accuracy, a
//!   rate, a judge score) with a percentile-bootstrap interval, deterministic for
//!   a given seed. [`Bootstrap`] bundles its options.
//! - [`per_group`] / [`per_level`]: the same per group (a subject, a BBQ
//!   category, a taxonomy node at the [`Level`] asked for), plus the overall
//!   estimate.
//! - [`wilson_interval`]: the Wilson score interval of a proportion, for counts
//!   too small for a bootstrap to say much.
//! - [`quantile`]: numpy's default (`method="linear"`) quantile, which the
//!   bootstrap uses for its bounds.
//!
//! The random numbers come from xoshiro256** seeded through SplitMix64 (Blackman
//! and Vigna's reference algorithms), written out here so that an interval
//! depends only on the samples, the options and the seed, never on a crate
//! version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::results::Level;
use crate::{EvalError, Result};

/// The z value of a two-sided 95% normal interval, `Φ⁻¹(0.975)`, for
/// [`wilson_interval`].
pub const Z_95: f64 = 1.959963984540054;

/// A point estimate with a confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The estimate (for a bootstrap, the mean of the samples themselves).
    pub value: f64,
    /// Lower bound of the interval.
    pub lo: f64,
    /// Upper bound of the interval.
    pub hi: f64,
    /// Number of samples (items) behind the estimate.
    pub n: usize,
}

/// Options of a percentile bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bootstrap {
    /// Number of resamples (1,000 by default; 10,000 for a paper).
    pub resamples: usize,
    /// Coverage of the interval, in (0, 1) (0.95 by default).
    pub confidence: f64,
    /// Seed of the resampling; the same seed gives the same interval.
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap { resamples: 1000, confidence: 0.95, seed: 0 }
    }
}

impl Bootstrap {
    /// [`bootstrap_mean_ci`] with these options.
    pub fn mean_ci(&self, samples: &[f64]) -> Result<Estimate> {
        bootstrap_mean_ci(samples, self.resamples, self.confidence, self.seed)
    }
}

/// The mean of `samples` with a percentile-bootstrap confidence interval.
///
/// Draws `resamples` resamples of `samples.len()` items with replacement, takes
/// each one's mean, and returns the `(1 - confidence) / 2` and
/// `1 - (1 - confidence) / 2` quantiles of those means ([`quantile`], numpy's
/// linear interpolation) as `lo` and `hi`. `value` is the mean of `samples`
/// itself. The result depends only on the inputs and `seed`.
///
/// A percentile interval need not contain `value` for a very skewed sample; it
/// is returned as computed, not clamped. With one sample, or all samples equal,
/// `lo == hi == value`.
///
/// # Errors
/// [`EvalError::Metric`] when `samples` is empty or holds a non-finite value,
/// `resamples` is 0, or `confidence` is not strictly between 0 and 1.
pub fn bootstrap_mean_ci(samples: &[f64], resamples: usize, confidence: f64, seed: u64) -> Result<Estimate> {
    let metric_err = |message: String| EvalError::Metric { metric: "bootstrap".into(), message };
    if samples.is_empty() {
        return Err(metric_err("no samples".into()));
    }
    if let Some(bad) = samples.iter().find(|x| !x.is_finite()) {
        return Err(metric_err(format!("sample {bad} is not finite")));
    }
    if resamples == 0 {
        return Err(metric_err("resamples must be at least 1".into()));
    }
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(metric_err(format!("confidence {confidence} is not in (0, 1)")));
    }
    let n = samples.len();
    let value = mean(samples);
    let mut rng = Xoshiro256::new(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            let sum: f64 = (0..n).map(|_| samples[rng.below(n as u64) as usize]).sum();
            sum / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let alpha = (1.0 - confidence) / 2.0;
    Ok(Estimate { value, lo: quantile_sorted(&means, alpha), hi: quantile_sorted(&means, 1.0 - alpha), n })
}

/// Any statistic of `n` items with a percentile-bootstrap interval.
///
/// `statistic` gets item indices and returns the statistic of those items,
/// or `None` where it is undefined. `value` is the statistic of all items
/// (`0..n`); each resample draws `n` indices with replacement, and resamples
/// whose statistic is undefined are left out of the quantiles. For ratios and
/// scores that are not means (BBQ's bias scores, for one).
///
/// # Errors
/// [`EvalError::Metric`] when `n` is 0, the statistic of all items is
/// undefined or not finite, fewer than half of the resamples are defined, or
/// the options are invalid (as for [`bootstrap_mean_ci`]).
pub fn bootstrap_statistic(
    n: usize,
    options: &Bootstrap,
    statistic: impl Fn(&[usize]) -> Option<f64>,
) -> Result<Estimate> {
    let metric_err = |message: String| EvalError::Metric { metric: "bootstrap".into(), message };
    if n == 0 {
        return Err(metric_err("no samples".into()));
    }
    if options.resamples == 0 {
        return Err(metric_err("resamples must be at least 1".into()));
    }
    if !(options.confidence > 0.0 && options.confidence < 1.0) {
        return Err(metric_err(format!("confidence {} is not in (0, 1)", options.confidence)));
    }
    let all: Vec<usize> = (0..n).collect();
    let value = statistic(&all)
        .filter(|v| v.is_finite())
        .ok_or_else(|| metric_err("undefined on the items".into()))?;
    let mut rng = Xoshiro256::new(options.seed);
    let mut picked = vec![0usize; n];
    let mut values = Vec::with_capacity(options.resamples);
    for _ in 0..options.resamples {
        for p in picked.iter_mut() {
            *p = rng.below(n as u64) as usize;
        }
        if let Some(v) = statistic(&picked).filter(|v| v.is_finite()) {
            values.push(v);
        }
    }
    if values.len() * 2 < options.resamples {
        return Err(metric_err(format!(
            "the statistic is undefined on {} of {} resamples",
            options.resamples - values.len(),
            options.resamples
        )));
    }
    values.sort_by(f64::total_cmp);
    let alpha = (1.0 - options.confidence) / 2.0;
    Ok(Estimate { value, lo: quantile_sorted(&values, alpha), hi: quantile_sorted(&values, 1.0 - alpha), n })
}

/// Estimates per group and overall, from [`per_group`] or [`per_level`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grouped {
    /// All samples together. Its interval resamples items, ignoring groups (not a
    /// stratified bootstrap): groups of very different sizes keep their share
    /// only on average.
    pub overall: Estimate,
    /// Each group's samples, by group name.
    pub groups: BTreeMap<String, Estimate>,
}

/// [`bootstrap_mean_ci`] of each group's samples and of all of them.
///
/// `samples` pairs a group name with a sample. The overall interval uses
/// `options.seed`; each group's uses a seed derived from `options.seed` and the
/// group's name, so adding or removing one group does not change another's
/// interval.
///
/// # Errors
/// As [`bootstrap_mean_ci`]; an empty `samples` is an error, an empty group
/// cannot occur.
pub fn per_group(samples: &[(String, f64)], options: &Bootstrap) -> Result<Grouped> {
    let all: Vec<f64> = samples.iter().map(|(_, x)| *x).collect();
    let overall = options.mean_ci(&all)?;
    let mut by_group: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (group, x) in samples {
        by_group.entry(group.as_str()).or_default().push(*x);
    }
    let groups = by_group
        .into_iter()
        .map(|(group, xs)| {
            let seed = options.seed ^ fnv1a(group.as_bytes());
            let estimate = bootstrap_mean_ci(&xs, options.resamples, options.confidence, seed)?;
            Ok((group.to_string(), estimate))
        })
        .collect::<Result<_>>()?;
    Ok(Grouped { overall, groups })
}

/// [`per_group`] over taxonomy paths (`macro/micro/leaf`) aggregated at
/// `level`: each sample's group is [`Level::key`] of its path. Paths too short
/// for the level (a micro path at [`Level::Leaf`]) are left out of the groups
/// but kept in `overall`.
///
/// # Errors
/// As [`per_group`].
pub fn per_level(samples: &[(String, f64)], level: Level, options: &Bootstrap) -> Result<Grouped> {
    let all: Vec<f64> = samples.iter().map(|(_, x)| *x).collect();
    let overall = options.mean_ci(&all)?;
    let keyed: Vec<(String, f64)> =
        samples.iter().filter_map(|(path, x)| Some((level.key(path)?, *x))).collect();
    let groups = if keyed.is_empty() { BTreeMap::new() } else { per_group(&keyed, options)?.groups };
    Ok(Grouped { overall, groups })
}

/// The Wilson score interval of `k` successes in `n` trials at normal quantile
/// `z` ([`Z_95`] for 95%), without continuity correction; `value` is `k / n`.
/// Unlike a bootstrap it gives a useful interval at `k == 0` or `k == n`.
/// The bounds are clamped to [0, 1] against rounding.
///
/// # Errors
/// [`EvalError::Metric`] when `n` is 0, `k > n`, or `z` is not positive and finite.
pub fn wilson_interval(k: usize, n: usize, z: f64) -> Result<Estimate> {
    let metric_err = |message: String| EvalError::Metric { metric: "wilson".into(), message };
    if n == 0 {
        return Err(metric_err("no trials".into()));
    }
    if k > n {
        return Err(metric_err(format!("{k} successes in {n} trials")));
    }
    if !(z.is_finite() && z > 0.0) {
        return Err(metric_err(format!("z {z} is not positive and finite")));
    }
    let nf = n as f64;
    let p = k as f64 / nf;
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let center = (p + z2 / (2.0 * nf)) / denom;
    let half = z / denom * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
    Ok(Estimate { value: p, lo: (center - half).max(0.0), hi: (center + half).min(1.0), n })
}

/// The `q`-quantile of `values`, `q` in [0, 1], as numpy's
/// `np.quantile(values, q)` with its default `method="linear"`
/// (`np.percentile(values, 100 * q)`): the sorted values at index
/// `q * (n - 1)`, interpolated linearly between its neighbours.
///
/// # Errors
/// [`EvalError::Metric`] when `values` is empty or holds NaN, or `q` is outside [0, 1].
pub fn quantile(values: &[f64], q: f64) -> Result<f64> {
    let metric_err = |message: String| EvalError::Metric { metric: "quantile".into(), message };
    if values.is_empty() {
        return Err(metric_err("no values".into()));
    }
    if values.iter().any(|x| x.is_nan()) {
        return Err(metric_err("a value is NaN".into()));
    }
    if !(0.0..=1.0).contains(&q) {
        return Err(metric_err(format!("q {q} is not in [0, 1]")));
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Ok(quantile_sorted(&sorted, q))
}

/// [`quantile`] of values already sorted ascending, non-empty, `q` in [0, 1].
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let index = q * (sorted.len() - 1) as f64;
    let below = (index.floor() as usize).min(sorted.len() - 1);
    let above = (below + 1).min(sorted.len() - 1);
    let t = index - below as f64;
    let (a, b) = (sorted[below], sorted[above]);
    // numpy's `_lerp`: interpolate from the nearer end, so that t = 1 gives b exactly.
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// 64-bit FNV-1a, to derive a group's seed from its name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// One step of SplitMix64, used to seed [`Xoshiro256`].
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xoshiro256**, Blackman and Vigna's reference generator.
struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    /// A generator whose state is four SplitMix64 outputs from `seed`, as the
    /// authors recommend (never the all-zero state).
    fn new(seed: u64) -> Self {
        let mut state = seed;
        Xoshiro256 { s: std::array::from_fn(|_| splitmix64(&mut state)) }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n`, `n > 0`, without modulo bias (Lemire's method).
    fn below(&mut self, n: u64) -> u64 {
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_matches_reference_outputs() {
        // First outputs of the reference C code from state {1, 2, 3, 4}, as in
        // rand_xoshiro's test vectors.
        let mut rng = Xoshiro256 { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..4).map(|_| rng.next_u64()).collect();
        assert_eq!(got, [11520, 0, 1509978240, 1215971899390074240]);
    }

    #[test]
    fn splitmix_matches_reference_outputs() {
        // The reference splitmix64.c from seed 1234567.
        let mut state = 1234567;
        let got: Vec<u64> = (0..3).map(|_| splitmix64(&mut state)).collect();
        assert_eq!(got, [6457827717110365317, 3203168211198807973, 9817491932198370423]);
    }

    #[test]
    fn below_is_in_range_and_covers_it() {
        let mut rng = Xoshiro256::new(7);
        let mut seen = [0usize; 3];
        for _ in 0..3000 {
            seen[rng.below(3) as usize] += 1;
        }
        // Each of 3 values about 1000 times (binomial sd about 26).
        assert!(seen.iter().all(|&c| (850..1150).contains(&c)), "{seen:?}");
        assert_eq!(Xoshiro256::new(7).below(1), 0);
    }

    #[test]
    fn quantile_sorted_interpolates_from_the_nearer_end() {
        let xs = [0.0, 1.0];
        assert_eq!(quantile_sorted(&xs, 0.0), 0.0);
        assert_eq!(quantile_sorted(&xs, 1.0), 1.0);
        assert_eq!(quantile_sorted(&xs, 0.25), 0.25);
        assert_eq!(quantile_sorted(&[5.0], 0.7), 5.0);
    }

    #[test]
    fn fnv1a_matches_reference() {
        // FNV-1a 64 test vectors: "" and "a".
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }
}
