//! MinHash signatures and MinHash-LSH banding, compatible with `datasketch`.
//!
//! A [`MinHasher`] makes the same signatures as `datasketch.MinHash(num_perm,
//! seed)` fed with the UTF-8 bytes of the same tokens, and a [`MinHashLsh`]
//! puts two signatures in one bucket exactly when `datasketch.MinHashLSH`
//! does; see the [module docs](super) for the details that make this hold.
//! [`near_duplicate_pairs`] and [`banded_pairs`] are the bulk form, without
//! hash tables: every pair of texts that share a bucket in some band.
//!
//! The permutation loops are compiled twice, for the baseline and for AVX2
//! (chosen at run time): the baseline x86-64 target has no 32-bit vector
//! multiply or unsigned minimum.

use std::collections::HashMap;

use rayon::prelude::*;
use sha1::{Digest, Sha1};

use super::numpy_random::RandomState;

/// The Mersenne prime 2^61 - 1 of datasketch's legacy permutations.
const MERSENNE_PRIME: u64 = (1 << 61) - 1;

/// How a token's hash is permuted, as datasketch's `scheme` argument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// datasketch >= 2.0's default: the 32-bit hash is mixed with the
    /// MurmurHash3 finalizer, then `a * h + b mod 2^32` with `a` odd (a
    /// bijection, so no permutation collisions).
    #[default]
    Affine32,
    /// datasketch < 2.0 (and `scheme="legacy"` since): `((a * h + b) mod 2^64)
    /// mod (2^61 - 1)`, truncated to 32 bits. The `mod 2^64` is numpy's
    /// wrapping `uint64` product, kept so that the values match.
    Legacy,
}

impl Scheme {
    /// The name datasketch gives the scheme.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Affine32 => "affine32",
            Scheme::Legacy => "legacy",
        }
    }
}

/// datasketch's `sha1_hash32`: the first four bytes of SHA-1, little-endian.
pub fn sha1_hash32(bytes: &[u8]) -> u32 {
    let digest = Sha1::digest(bytes);
    u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The 32-bit MurmurHash3 finalizer (datasketch's `_fmix(hv, 32)`).
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// `x mod (2^61 - 1)` for any `u64`: `x = hi * 2^61 + lo` and `2^61 = 1`.
fn mod_mersenne(x: u64) -> u64 {
    let y = (x & MERSENNE_PRIME) + (x >> 61);
    if y >= MERSENNE_PRIME {
        y - MERSENNE_PRIME
    } else {
        y
    }
}

#[derive(Clone, Debug)]
enum Permutations {
    Affine32 {
        a: Vec<u32>,
        b: Vec<u32>,
    },
    /// `a` (< 2^61) in 32-bit halves, so that its product with a 32-bit hash
    /// is two 32 x 32 -> 64-bit products, which vectorise.
    Legacy {
        a_lo: Vec<u32>,
        a_hi: Vec<u32>,
        b: Vec<u64>,
    },
}

/// `sig[k] = min(sig[k], a[k] * hv + b[k] mod 2^32)`, after `fmix32`.
#[inline(always)]
fn update_affine32(sig: &mut [u32], a: &[u32], b: &[u32], hv: u32) {
    for ((s, &a), &b) in sig.iter_mut().zip(a).zip(b) {
        *s = (*s).min(a.wrapping_mul(hv).wrapping_add(b));
    }
}

/// `sig[k] = min(sig[k], ((a[k] * hv + b[k]) mod 2^64) mod (2^61 - 1))`,
/// truncated to 32 bits.
#[inline(always)]
fn update_legacy(sig: &mut [u32], a_lo: &[u32], a_hi: &[u32], b: &[u64], hv: u32) {
    let h = u64::from(hv);
    for (((s, &lo), &hi), &b) in sig.iter_mut().zip(a_lo).zip(a_hi).zip(b) {
        // (hi * 2^32 + lo) * h mod 2^64; neither product overflows.
        let x = (h * u64::from(lo)).wrapping_add((h * u64::from(hi)) << 32).wrapping_add(b);
        *s = (*s).min(mod_mersenne(x) as u32);
    }
}

/// Makes MinHash signatures: one `u32` per permutation, the minimum over the
/// tokens of the permuted token hash.
#[derive(Clone, Debug)]
pub struct MinHasher {
    perms: Permutations,
}

impl MinHasher {
    /// The permutations of `datasketch.MinHash(num_perm, seed)` (scheme
    /// [`Scheme::Affine32`], datasketch's default).
    pub fn new(num_perm: usize, seed: u32) -> Self {
        MinHasher::with_scheme(num_perm, seed, Scheme::Affine32)
    }

    /// The permutations of `datasketch.MinHash(num_perm, seed, scheme=...)`,
    /// drawn from `np.random.RandomState(seed)` as datasketch draws them.
    ///
    /// # Panics
    ///
    /// When `num_perm` is 0.
    pub fn with_scheme(num_perm: usize, seed: u32, scheme: Scheme) -> Self {
        assert!(num_perm > 0, "MinHash needs at least one permutation");
        let mut rng = RandomState::new(seed);
        let perms = match scheme {
            Scheme::Affine32 => {
                // a = randint(0, 2^31, num_perm) * 2 + 1; b = randint(0, 2^32, num_perm)
                let a = (0..num_perm).map(|_| rng.randint_u32(0, 1 << 31) * 2 + 1).collect();
                let b = (0..num_perm).map(|_| rng.randint_u32(0, 1 << 32)).collect();
                Permutations::Affine32 { a, b }
            }
            Scheme::Legacy => {
                // One (a, b) pair per permutation, interleaved:
                // a = randint(1, p), b = randint(0, p), p = 2^61 - 1.
                let (mut a_lo, mut a_hi) = (Vec::with_capacity(num_perm), Vec::with_capacity(num_perm));
                let mut b = Vec::with_capacity(num_perm);
                for _ in 0..num_perm {
                    let a = rng.randint_u64(1, MERSENNE_PRIME);
                    a_lo.push(a as u32);
                    a_hi.push((a >> 32) as u32);
                    b.push(rng.randint_u64(0, MERSENNE_PRIME));
                }
                Permutations::Legacy { a_lo, a_hi, b }
            }
        };
        MinHasher { perms }
    }

    /// The number of permutations (the signature length).
    pub fn num_perm(&self) -> usize {
        match &self.perms {
            Permutations::Affine32 { a, .. } => a.len(),
            Permutations::Legacy { b, .. } => b.len(),
        }
    }

    /// The permutation scheme.
    pub fn scheme(&self) -> Scheme {
        match self.perms {
            Permutations::Affine32 { .. } => Scheme::Affine32,
            Permutations::Legacy { .. } => Scheme::Legacy,
        }
    }

    /// The `k`-th permutation's `(a, b)`, as datasketch's `permutations[:, k]`.
    ///
    /// # Panics
    ///
    /// When `k >= num_perm`.
    pub fn permutation(&self, k: usize) -> (u64, u64) {
        match &self.perms {
            Permutations::Affine32 { a, b } => (u64::from(a[k]), u64::from(b[k])),
            Permutations::Legacy { a_lo, a_hi, b } => ((u64::from(a_hi[k]) << 32) | u64::from(a_lo[k]), b[k]),
        }
    }

    /// The signature of the whitespace-separated tokens of `text`, taken as
    /// they are (callers normalise first, see [`super::normalize`]). A text
    /// without tokens gets all `u32::MAX`, as an empty datasketch MinHash.
    pub fn signature(&self, text: &str) -> Vec<u32> {
        self.signature_of_tokens(text.split_whitespace().map(str::as_bytes))
    }

    /// The signature of a set of tokens given as bytes (repeats do not matter).
    pub fn signature_of_tokens<'a>(&self, tokens: impl IntoIterator<Item = &'a [u8]>) -> Vec<u32> {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, the only feature the function enables.
            return unsafe { self.signature_avx2(tokens) };
        }
        self.signature_portable(tokens)
    }

    /// [`MinHasher::signature_portable`] compiled for AVX2: eight permutations
    /// per instruction instead of the baseline's emulated SSE2 products.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn signature_avx2<'a>(&self, tokens: impl IntoIterator<Item = &'a [u8]>) -> Vec<u32> {
        self.signature_portable(tokens)
    }

    #[inline(always)]
    fn signature_portable<'a>(&self, tokens: impl IntoIterator<Item = &'a [u8]>) -> Vec<u32> {
        let mut sig = vec![u32::MAX; self.num_perm()];
        match &self.perms {
            Permutations::Affine32 { a, b } => {
                for token in tokens {
                    update_affine32(&mut sig, a, b, fmix32(sha1_hash32(token)));
                }
            }
            Permutations::Legacy { a_lo, a_hi, b } => {
                for token in tokens {
                    update_legacy(&mut sig, a_lo, a_hi, b, sha1_hash32(token));
                }
            }
        }
        sig
    }

    /// [`MinHasher::signature`] of each text, in parallel on the current
    /// rayon pool.
    pub fn signatures(&self, texts: &[&str]) -> Vec<Vec<u32>> {
        texts.par_iter().map(|t| self.signature(t)).collect()
    }
}

/// LSH banding: `bands` bands of `rows` signature values each. Values past
/// `bands * rows` are not used (as in datasketch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LshParams {
    /// Number of bands (`b`).
    pub bands: usize,
    /// Values per band (`r`).
    pub rows: usize,
}

impl LshParams {
    /// The `(b, r)` of datasketch's `_optimal_param(threshold, num_perm, 0.5,
    /// 0.5)`: over all `b` in `1..=num_perm` and `r` in `1..=num_perm / b`,
    /// the first pair (in that order) with the least `0.5 * FP + 0.5 * FN`,
    /// where FP is the integral of `1 - (1 - s^r)^b` over `[0, threshold]` and
    /// FN that of `(1 - s^r)^b` over `[threshold, 1]`. datasketch integrates
    /// with `scipy.integrate.quad`; composite Simpson on 1,000 intervals
    /// agrees with it to far below the gaps between candidates.
    ///
    /// # Panics
    ///
    /// When `threshold` is not in `[0, 1]` or `num_perm` is 0.
    pub fn optimal(threshold: f64, num_perm: usize) -> Self {
        assert!((0.0..=1.0).contains(&threshold), "LSH threshold {threshold} is not in [0, 1]");
        assert!(num_perm > 0, "LSH needs at least one permutation");
        let mut best = (f64::INFINITY, LshParams { bands: 0, rows: 0 });
        for b in 1..=num_perm {
            for r in 1..=num_perm / b {
                let (bf, ri) = (b as i32, r as i32);
                let fp = simpson(|s| 1.0 - (1.0 - s.powi(ri)).powi(bf), 0.0, threshold);
                let fnr = simpson(|s| (1.0 - s.powi(ri)).powi(bf), threshold, 1.0);
                let error = 0.5 * fp + 0.5 * fnr;
                if error < best.0 {
                    best = (error, LshParams { bands: b, rows: r });
                }
            }
        }
        best.1
    }

    /// The probability that two texts of Jaccard similarity `s` share a bucket.
    pub fn collision_probability(self, s: f64) -> f64 {
        1.0 - (1.0 - s.powi(self.rows as i32)).powi(self.bands as i32)
    }
}

/// Composite Simpson's rule on 1,000 intervals.
fn simpson(f: impl Fn(f64) -> f64, lo: f64, hi: f64) -> f64 {
    const INTERVALS: usize = 1000;
    let h = (hi - lo) / INTERVALS as f64;
    let mut sum = f(lo) + f(hi);
    for i in 1..INTERVALS {
        let weight = if i % 2 == 1 { 4.0 } else { 2.0 };
        sum += weight * f(lo + i as f64 * h);
    }
    sum * h / 3.0
}

/// One band's buckets: the band's values to the keys that have them.
type Buckets = HashMap<Box<[u32]>, Vec<usize>>;

/// A MinHash-LSH index: one hash table per band, keyed by the band's values
/// (exact equality, as datasketch's byte-string keys).
#[derive(Clone, Debug)]
pub struct MinHashLsh {
    params: LshParams,
    num_perm: usize,
    tables: Vec<Buckets>,
}

impl MinHashLsh {
    /// An empty index for `num_perm`-value signatures, banded as datasketch's
    /// `MinHashLSH(threshold, num_perm)` ([`LshParams::optimal`]).
    pub fn new(threshold: f64, num_perm: usize) -> Self {
        MinHashLsh::with_params(LshParams::optimal(threshold, num_perm), num_perm)
    }

    /// An empty index with explicit banding (datasketch's `params=(b, r)`).
    ///
    /// # Panics
    ///
    /// When `bands` or `rows` is 0 or `bands * rows > num_perm`.
    pub fn with_params(params: LshParams, num_perm: usize) -> Self {
        assert!(params.bands > 0 && params.rows > 0, "LSH bands and rows must be positive: {params:?}");
        assert!(
            params.bands * params.rows <= num_perm,
            "LSH {} bands of {} rows need more than {num_perm} permutations",
            params.bands,
            params.rows
        );
        MinHashLsh { params, num_perm, tables: vec![Buckets::new(); params.bands] }
    }

    /// The banding.
    pub fn params(&self) -> LshParams {
        self.params
    }

    fn check_len(&self, sig: &[u32]) {
        assert_eq!(
            sig.len(),
            self.num_perm,
            "signature of {} values in an LSH of {}",
            sig.len(),
            self.num_perm
        );
    }

    fn bands<'a>(&self, sig: &'a [u32]) -> impl Iterator<Item = &'a [u32]> {
        sig.chunks_exact(self.params.rows).take(self.params.bands)
    }

    /// Adds `signature` under `key`. Keys should be unique (datasketch
    /// refuses a key twice; here it would only repeat the key in buckets).
    ///
    /// # Panics
    ///
    /// When the signature's length is not the index's `num_perm`.
    pub fn insert(&mut self, key: usize, signature: &[u32]) {
        self.check_len(signature);
        let params = self.params;
        for (table, band) in self.tables.iter_mut().zip(signature.chunks_exact(params.rows)) {
            table.entry(band.into()).or_default().push(key);
        }
    }

    /// The keys that share a bucket with `signature` in at least one band,
    /// sorted, without checking their similarity (datasketch's `query`).
    ///
    /// # Panics
    ///
    /// When the signature's length is not the index's `num_perm`.
    pub fn query(&self, signature: &[u32]) -> Vec<usize> {
        self.check_len(signature);
        let mut out: Vec<usize> = self
            .tables
            .iter()
            .zip(self.bands(signature))
            .filter_map(|(table, band)| table.get(band))
            .flatten()
            .copied()
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Every pair of distinct keys that share a bucket in at least one band,
    /// as `(smaller, larger)`, sorted: the pairs that `query` with each
    /// inserted signature would give. A bucket of `k` keys gives `k(k-1)/2`
    /// pairs.
    pub fn candidate_pairs(&self) -> Vec<(usize, usize)> {
        let mut pairs: Vec<(usize, usize)> = self
            .tables
            .par_iter()
            .flat_map_iter(|table| {
                let mut pairs = Vec::new();
                for keys in table.values().filter(|keys| keys.len() > 1) {
                    for (n, &x) in keys.iter().enumerate() {
                        for &y in &keys[n + 1..] {
                            if x != y {
                                pairs.push((x.min(y), x.max(y)));
                            }
                        }
                    }
                }
                pairs
            })
            .collect();
        pairs.par_sort_unstable();
        pairs.dedup();
        pairs
    }
}

/// The candidate near-duplicate pairs `(i, j)`, `i < j`, of `signatures`:
/// those that share a bucket of [`MinHashLsh::new`]`(threshold,
/// signature length)`, as [`banded_pairs`] finds them. Like datasketch's
/// `query`, the pairs are not checked against `threshold` (pairs below it slip
/// through with the probability [`LshParams::collision_probability`] gives);
/// [`super::dedup`] checks the token sets' Jaccard before it drops anything.
///
/// # Panics
///
/// When the signatures differ in length or `threshold` is not in `[0, 1]`.
pub fn near_duplicate_pairs(signatures: &[Vec<u32>], threshold: f64) -> Vec<(usize, usize)> {
    let Some(first) = signatures.first() else {
        return Vec::new();
    };
    banded_pairs(signatures, LshParams::optimal(threshold, first.len()))
}

/// Every pair `(i, j)`, `i < j`, of `signatures` whose values are equal in at
/// least one band of `params`, sorted: the pairs [`MinHashLsh::candidate_pairs`]
/// gives after inserting `signatures[i]` under key `i`, found without hash
/// tables. Per band (one task per band on the current rayon pool), the texts
/// are sorted by a 64-bit hash of their band values, and texts with equal
/// hashes are paired when their band values are equal.
///
/// # Panics
///
/// When the signatures differ in length or are shorter than `bands * rows`.
pub fn banded_pairs(signatures: &[Vec<u32>], params: LshParams) -> Vec<(usize, usize)> {
    let Some(first) = signatures.first() else {
        return Vec::new();
    };
    let len = first.len();
    assert!(signatures.iter().all(|s| s.len() == len), "signatures of different lengths");
    assert!(params.bands * params.rows <= len, "{params:?} needs more than {len} values");
    let mut pairs: Vec<(usize, usize)> = (0..params.bands)
        .into_par_iter()
        .flat_map_iter(|band| {
            let range = band * params.rows..(band + 1) * params.rows;
            let mut keyed: Vec<(u64, usize)> =
                signatures.iter().enumerate().map(|(i, s)| (band_hash(&s[range.clone()]), i)).collect();
            keyed.sort_unstable();
            let mut out = Vec::new();
            for group in keyed.chunk_by(|x, y| x.0 == y.0).filter(|g| g.len() > 1) {
                for (n, &(_, i)) in group.iter().enumerate() {
                    for &(_, j) in &group[n + 1..] {
                        if signatures[i][range.clone()] == signatures[j][range.clone()] {
                            out.push((i, j));
                        }
                    }
                }
            }
            out
        })
        .collect();
    pairs.par_sort_unstable();
    pairs.dedup();
    pairs
}

/// A 64-bit hash of a band's values (multiply-xor, then the MurmurHash3
/// 64-bit finalizer). Equal hashes are only a hint: values are compared.
fn band_hash(values: &[u32]) -> u64 {
    let mut h = values.len() as u64;
    for &v in values {
        h = (h ^ u64::from(v)).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}
#[cfg(test)]
mod tests {
    use super::*;

    // Values printed by datasketch 2.0.0 (numpy 2.4.6):
    // python3 -c "from datasketch import MinHash; m = MinHash(num_perm=128); \
    //   print(m.permutations[0][:4].tolist(), m.permutations[1][:4].tolist())"
    #[test]
    fn affine32_permutations_match_datasketch() {
        let h = MinHasher::new(128, 1);
        let got: Vec<(u64, u64)> = (0..4).map(|k| h.permutation(k)).collect();
        assert_eq!(
            got,
            [
                (3_582_191_691, 214_548_472),
                (4_270_784_983, 3_287_733_501),
                (1_892_572_953, 2_301_657_549),
                (3_715_639_441, 194_758_406)
            ]
        );
    }

    // python3 -c "from datasketch import MinHash; m = MinHash(num_perm=128, scheme='legacy'); \
    //   a, b = m.permutations; print(a[:3].tolist(), b[:3].tolist(), int(a[-1]), int(b[-1]))"
    #[test]
    fn legacy_permutations_match_datasketch() {
        let h = MinHasher::with_scheme(128, 1, Scheme::Legacy);
        let got: Vec<(u64, u64)> = [0, 1, 2, 127].into_iter().map(|k| h.permutation(k)).collect();
        assert_eq!(
            got,
            [
                (775_169_054_918_279_404, 1_758_426_461_858_698_312),
                (2_109_959_069_025_162, 965_365_488_286_768_773),
                (401_325_382_989_534_145, 1_703_346_441_743_126_657),
                (1_931_671_111_240_692_334, 1_454_448_473_341_514_576)
            ]
        );
    }

    // python3 -c "from datasketch.hashfunc import sha1_hash32; \
    //   print(sha1_hash32(b'hello'), sha1_hash32('naïve'.encode()))"
    #[test]
    fn sha1_hash32_matches_datasketch() {
        assert_eq!(sha1_hash32(b"hello"), 499_578_026);
        assert_eq!(sha1_hash32("naïve".as_bytes()), 3_819_748_406);
    }

    // for s in ('affine32', 'legacy'):
    //     m = datasketch.MinHash(num_perm=8, scheme=s)
    //     m.update_batch([t.encode() for t in 'the quick brown fox'.split()])
    //     print(s, m.hashvalues.tolist())
    #[test]
    fn signatures_match_datasketch() {
        let text = "the quick brown fox";
        assert_eq!(MinHasher::new(8, 1).signature(text), SIG_AFFINE32);
        assert_eq!(MinHasher::with_scheme(8, 1, Scheme::Legacy).signature(text), SIG_LEGACY);
        assert_eq!(MinHasher::new(4, 1).signature("  "), [u32::MAX; 4]);
    }
    const SIG_AFFINE32: [u32; 8] = [
        529_437_859,
        342_517_004,
        6_162_948,
        48_413_517,
        673_604_544,
        1_319_524_931,
        602_105_657,
        1_437_118_808,
    ];
    const SIG_LEGACY: [u32; 8] = [
        407_326_892,
        34_383_241,
        44_059_036,
        1_893_391_287,
        136_245_013,
        1_552_394_070,
        196_634_065,
        2_069_430_456,
    ];

    #[test]
    fn mersenne_reduction_is_exact() {
        for x in [
            0,
            1,
            MERSENNE_PRIME - 1,
            MERSENNE_PRIME,
            MERSENNE_PRIME + 1,
            u64::MAX,
            1 << 63,
            12_345_678_901_234,
        ] {
            assert_eq!(mod_mersenne(x), x % MERSENNE_PRIME, "{x}");
        }
    }

    // python3 -c "from datasketch.lsh import _optimal_param as p; \
    //   print([p(t, n, 0.5, 0.5) for t, n in [(0.8, 128), (0.9, 128), (0.5, 128), (0.8, 256), (0.7, 64)]])"
    #[test]
    fn optimal_params_match_datasketch() {
        let got: Vec<(usize, usize)> = [(0.8, 128), (0.9, 128), (0.5, 128), (0.8, 256), (0.7, 64)]
            .into_iter()
            .map(|(t, n)| {
                let p = LshParams::optimal(t, n);
                (p.bands, p.rows)
            })
            .collect();
        assert_eq!(got, [(9, 13), (5, 25), (25, 5), (17, 15), (8, 8)]);
    }

    #[test]
    fn lsh_query_finds_shared_buckets_only() {
        let params = LshParams { bands: 2, rows: 2 };
        let mut lsh = MinHashLsh::with_params(params, 5);
        lsh.insert(0, &[1, 2, 3, 4, 9]);
        lsh.insert(1, &[1, 2, 7, 7, 9]); // shares band 0 with key 0
        lsh.insert(2, &[5, 5, 3, 4, 0]); // shares band 1 with key 0
        lsh.insert(3, &[1, 3, 2, 4, 9]); // shares nothing (value 5 is unused)
        assert_eq!(lsh.query(&[1, 2, 3, 4, 0]), [0, 1, 2]);
        assert_eq!(lsh.query(&[1, 3, 8, 8, 9]), [3]);
        assert_eq!(lsh.candidate_pairs(), [(0, 1), (0, 2)]);
        let sigs = [vec![1, 2, 3, 4, 9], vec![1, 2, 7, 7, 9], vec![5, 5, 3, 4, 0], vec![1, 3, 2, 4, 9]];
        assert_eq!(banded_pairs(&sigs, params), [(0, 1), (0, 2)]);
    }

    #[test]
    fn banded_pairs_agree_with_the_index_and_its_queries() {
        // Values from a small alphabet, so that many bands collide.
        let mut rng = fastrand::Rng::with_seed(7);
        let sigs: Vec<Vec<u32>> = (0..300).map(|_| (0..12).map(|_| rng.u32(0..3)).collect()).collect();
        let params = LshParams { bands: 3, rows: 4 };
        let mut lsh = MinHashLsh::with_params(params, 12);
        for (key, sig) in sigs.iter().enumerate() {
            lsh.insert(key, sig);
        }
        let mut by_query = Vec::new();
        for (i, sig) in sigs.iter().enumerate() {
            by_query.extend(lsh.query(sig).into_iter().filter(|&j| j > i).map(|j| (i, j)));
        }
        let pairs = banded_pairs(&sigs, params);
        assert!(pairs.len() > 100, "{}", pairs.len());
        assert_eq!(pairs, lsh.candidate_pairs());
        assert_eq!(pairs, by_query);
    }

    #[test]
    fn near_duplicate_pairs_of_similar_token_sets() {
        let h = MinHasher::new(128, 1);
        let base: Vec<String> = (0..30).map(|i| format!("w{i}")).collect();
        let mut changed = base.clone();
        changed[17] = "other".into();
        let texts = [
            base.join(" "),
            changed.join(" "),
            (100..130).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" "),
        ];
        let sigs: Vec<Vec<u32>> = texts.iter().map(|t| h.signature(t)).collect();
        assert_eq!(near_duplicate_pairs(&sigs, 0.8), [(0, 1)]);
        assert!(near_duplicate_pairs(&[], 0.8).is_empty());
    }
}
