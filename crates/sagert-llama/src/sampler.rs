//! Our sampler: llama.cpp hands us logits, this module picks the next token.
//!
//! One [`Sampler`] per generated sequence, with its own seeded random number
//! generator, so a sequence's tokens depend only on its own logits and seed,
//! never on which other requests share its decode batches.
//!
//! The steps, in order (each one off at its neutral value):
//!
//! 1. **repetition penalty** (`1.0` = off): each distinct token among the last
//!    [`PENALTY_LAST_N`] tokens of the sequence (prompt and output) has its logit
//!    divided by the penalty when positive and multiplied by it when negative
//!    (CTRL's rule, as llama.cpp and Hugging Face apply it);
//! 2. **greedy** when the temperature is 0: the highest logit wins, ties to the
//!    lowest token id; no random number is drawn;
//! 3. **temperature**: logits are divided by it;
//! 4. **top-k** (`0` = off): only the k most likely tokens stay;
//! 5. **top-p** (`1.0` = off): the most likely tokens whose probabilities,
//!    renormalised after top-k, first reach `top_p` stay (at least one);
//! 6. **min-p** (`0.0` = off): tokens whose probability is below `min_p` times the
//!    most likely token's probability go;
//! 7. one token is drawn from what is left, in proportion to its probability.
//!
//! The order is Hugging Face's (temperature before the truncations, so top-p
//! acts on the tempered distribution, as OpenAI's `top_p` does). Candidates are
//! ordered by logit and then by token id, so the draw is a pure function of the
//! logits and the generator state.

/// How many of the most recent tokens the repetition penalty looks at
/// (llama.cpp's default `penalty_last_n`).
pub const PENALTY_LAST_N: usize = 64;

/// Below this many candidates top-p sorts them all; above, it first sorts the
/// best [`TOP_P_PARTIAL`] and only sorts everything when those do not reach the
/// mass (the result is the same either way).
const TOP_P_PARTIAL: usize = 1024;

/// The settings of one sequence's sampler.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; 0 is greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Nucleus mass; 1.0 keeps all.
    pub top_p: f32,
    /// Minimum probability relative to the most likely token; 0.0 keeps all.
    pub min_p: f32,
    /// Repetition penalty; 1.0 is none.
    pub repetition_penalty: f32,
}

impl Default for SamplerConfig {
    /// Plain sampling at temperature 1 from the whole distribution.
    fn default() -> Self {
        SamplerConfig { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0 }
    }
}

impl SamplerConfig {
    /// Whether the settings are usable: finite, temperature ≥ 0, `top_p` in
    /// (0, 1], `min_p` in [0, 1], penalty > 0. Returns what is wrong.
    pub fn check(&self) -> Result<(), String> {
        let SamplerConfig { temperature, top_p, min_p, repetition_penalty, .. } = *self;
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(format!("temperature must be a finite number >= 0, got {temperature}"));
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {top_p}"));
        }
        if !(0.0..=1.0).contains(&min_p) {
            return Err(format!("min_p must be in [0, 1], got {min_p}"));
        }
        if !(repetition_penalty.is_finite() && repetition_penalty > 0.0) {
            return Err(format!("repetition_penalty must be a finite number > 0, got {repetition_penalty}"));
        }
        Ok(())
    }
}

/// xoshiro256** seeded through SplitMix64: small, fast, and the same stream on
/// every platform for a given seed.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// The generator for `seed` and `stream` (the choice index of a request
    /// with `n > 1`; stream 0 of a seed is what `n = 1` uses).
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut x = seed ^ stream.wrapping_mul(0xD605_BBB5_8C8A_BBB5);
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng { s: [next(), next(), next(), next()] }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
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

    /// A uniform number in [0, 1), with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A candidate token: id and (tempered) logit, later its unnormalised probability.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    id: u32,
    value: f32,
}

/// Higher value first, then lower id: a total order, so results never depend on
/// the sort algorithm.
fn by_value_desc(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.value.total_cmp(&a.value).then(a.id.cmp(&b.id))
}

/// One sequence's sampler: its settings, its generator, and scratch space.
#[derive(Clone, Debug)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Rng,
    logits: Vec<f32>,
    candidates: Vec<Candidate>,
}

impl Sampler {
    /// A sampler with `config`, drawing from `rng`.
    pub fn new(config: SamplerConfig, rng: Rng) -> Self {
        Sampler { config, rng, logits: Vec::new(), candidates: Vec::new() }
    }

    /// The settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Pick the next token from `logits` (one per vocabulary entry). `recent` is
    /// the sequence so far (prompt and output); only its last
    /// [`PENALTY_LAST_N`] tokens matter, and only with a penalty.
    pub fn sample(&mut self, logits: &[f32], recent: &[u32]) -> u32 {
        assert!(!logits.is_empty(), "sampling from an empty vocabulary");
        self.logits.clear();
        self.logits.extend_from_slice(logits);
        self.apply_repetition_penalty(recent);
        if self.config.temperature == 0.0 {
            return argmax(&self.logits);
        }
        self.sample_tempered()
    }

    fn apply_repetition_penalty(&mut self, recent: &[u32]) {
        let penalty = self.config.repetition_penalty;
        if penalty == 1.0 {
            return;
        }
        let mut window: Vec<u32> = recent[recent.len().saturating_sub(PENALTY_LAST_N)..].to_vec();
        window.sort_unstable();
        window.dedup();
        for id in window {
            if let Some(logit) = self.logits.get_mut(id as usize) {
                *logit = if *logit > 0.0 { *logit / penalty } else { *logit * penalty };
            }
        }
    }

    fn sample_tempered(&mut self) -> u32 {
        let SamplerConfig { temperature, top_k, top_p, min_p, .. } = self.config;
        let candidates = &mut self.candidates;
        candidates.clear();
        candidates.extend(
            self.logits
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.is_nan() && **l != f32::NEG_INFINITY)
                .map(|(id, &l)| Candidate { id: id as u32, value: l / temperature }),
        );
        if candidates.is_empty() {
            // Nothing finite to choose from: fall back to the first token rather
            // than panic inside the engine.
            return 0;
        }
        // Candidates are in token-id order until a truncation reorders them.
        let mut by_id = true;
        let mut sorted = false;
        if top_k > 0 && top_k < candidates.len() {
            candidates.select_nth_unstable_by(top_k - 1, by_value_desc);
            candidates.truncate(top_k);
            by_id = false;
        }
        // Unnormalised probabilities relative to the best candidate.
        let max = candidates.iter().map(|c| c.value).fold(f32::NEG_INFINITY, f32::max);
        for c in candidates.iter_mut() {
            c.value = (c.value - max).exp();
        }
        if top_p < 1.0 {
            let total: f64 = candidates.iter().map(|c| f64::from(c.value)).sum();
            let target = f64::from(top_p) * total;
            let mut keep = None;
            if candidates.len() > TOP_P_PARTIAL {
                candidates.select_nth_unstable_by(TOP_P_PARTIAL - 1, by_value_desc);
                candidates[..TOP_P_PARTIAL].sort_unstable_by(by_value_desc);
                keep = nucleus_len(&candidates[..TOP_P_PARTIAL], target);
            }
            let keep = match keep {
                Some(keep) => keep,
                None => {
                    candidates.sort_unstable_by(by_value_desc);
                    nucleus_len(candidates, target).unwrap_or(candidates.len())
                }
            };
            candidates.truncate(keep);
            sorted = true;
        }
        if min_p > 0.0 {
            // The best candidate has value 1 (exp(0)), so the threshold is min_p.
            candidates.retain(|c| c.value >= min_p);
        }
        if !sorted && !by_id {
            // Draw in a fixed order: by token id.
            candidates.sort_unstable_by_key(|c| c.id);
        }
        let total: f64 = candidates.iter().map(|c| f64::from(c.value)).sum();
        let mut u = self.rng.next_f64() * total;
        for c in candidates.iter() {
            u -= f64::from(c.value);
            if u < 0.0 {
                return c.id;
            }
        }
        candidates.last().map_or(0, |c| c.id)
    }
}

/// How many of the sorted `candidates` it takes for their mass to reach
/// `target`; `None` when all of them do not.
fn nucleus_len(candidates: &[Candidate], target: f64) -> Option<usize> {
    let mut mass = 0.0;
    for (i, c) in candidates.iter().enumerate() {
        mass += f64::from(c.value);
        if mass >= target {
            return Some(i + 1);
        }
    }
    None
}

/// The index of the highest logit, ties to the lowest index; NaN never wins.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > best_value {
            best = i;
            best_value = l;
        }
    }
    best as u32
}

/// Natural-log softmax of `logits` at `token`, computed in f64.
pub fn log_softmax_at(logits: &[f32], token: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (f64::from(l) - max).exp()).sum();
    f64::from(logits[token as usize]) - max - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(config: SamplerConfig, seed: u64) -> Sampler {
        Sampler::new(config, Rng::new(seed, 0))
    }

    fn counts(config: SamplerConfig, logits: &[f32], draws: usize) -> Vec<usize> {
        let mut s = sampler(config, 7);
        let mut counts = vec![0; logits.len()];
        for _ in 0..draws {
            counts[s.sample(logits, &[]) as usize] += 1;
        }
        counts
    }

    const LOGITS: [f32; 5] = [1.0, 3.0, 2.0, 3.0, -1.0];

    #[test]
    fn greedy_takes_the_highest_logit_ties_to_lowest_id() {
        let config = SamplerConfig { temperature: 0.0, ..SamplerConfig::default() };
        let mut s = sampler(config, 1);
        assert_eq!(s.sample(&LOGITS, &[]), 1);
        assert_eq!(s.sample(&[f32::NAN, -5.0, -2.0], &[]), 2);
    }

    #[test]
    fn repetition_penalty_moves_greedy_choice() {
        let config = SamplerConfig { temperature: 0.0, repetition_penalty: 2.0, ..SamplerConfig::default() };
        let mut s = sampler(config, 1);
        // 1 and 3 tie at 3.0; penalising both (3.0 / 2 = 1.5) leaves 2 (2.0) on top.
        assert_eq!(s.sample(&LOGITS, &[1, 3, 3]), 2);
        // A negative logit is multiplied: token 2 at -1 becomes -2, below token 0 at -1.5.
        assert_eq!(s.sample(&[-1.5, -3.0, -1.0], &[2]), 0);
        // Only the last PENALTY_LAST_N tokens count.
        let mut long = vec![1u32];
        long.extend(std::iter::repeat_n(4, PENALTY_LAST_N));
        assert_eq!(s.sample(&LOGITS, &long), 1);
    }

    #[test]
    fn same_seed_same_tokens_other_seed_other_tokens() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = sampler(SamplerConfig::default(), seed);
            (0..50).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn streams_of_one_seed_differ() {
        let mut a = Rng::new(5, 0);
        let mut b = Rng::new(5, 1);
        assert_ne!(a.next_u64(), b.next_u64());
        let x = Rng::new(5, 0).next_f64();
        assert!((0.0..1.0).contains(&x));
    }

    #[test]
    fn sampling_follows_the_softmax() {
        // Probabilities of [0, ln 3] are 1/4 and 3/4.
        let c = counts(SamplerConfig::default(), &[0.0, 3f32.ln()], 20_000);
        let share = c[1] as f64 / 20_000.0;
        assert!((share - 0.75).abs() < 0.02, "{share}");
    }

    #[test]
    fn temperature_sharpens() {
        let config = SamplerConfig { temperature: 0.25, ..SamplerConfig::default() };
        // At T = 1/4 the odds 3:1 become 81:1.
        let c = counts(config, &[0.0, 3f32.ln()], 20_000);
        let share = c[1] as f64 / 20_000.0;
        assert!((share - 81.0 / 82.0).abs() < 0.01, "{share}");
    }

    #[test]
    fn top_k_keeps_only_the_best() {
        let config = SamplerConfig { top_k: 2, ..SamplerConfig::default() };
        let c = counts(config, &LOGITS, 5_000);
        assert_eq!(c[0] + c[2] + c[4], 0, "{c:?}");
        assert!(c[1] > 2_000 && c[3] > 2_000, "{c:?}");
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // Probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.75 keeps the first two.
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.15f32.ln(), 0.05f32.ln()];
        let config = SamplerConfig { top_p: 0.75, ..SamplerConfig::default() };
        let c = counts(config, &logits, 10_000);
        assert_eq!(c[2] + c[3], 0, "{c:?}");
        let share = c[0] as f64 / 10_000.0;
        assert!((share - 0.625).abs() < 0.02, "{share}");
        // A tiny top_p still keeps one token.
        let config = SamplerConfig { top_p: 1e-6, ..SamplerConfig::default() };
        assert_eq!(counts(config, &logits, 100)[0], 100);
    }

    #[test]
    fn top_p_partial_sort_matches_full_sort() {
        // Many candidates: the partial path must pick the same nucleus.
        let logits: Vec<f32> = (0..5000).map(|i| ((i * 7919) % 1000) as f32 / 100.0).collect();
        for top_p in [0.05f32, 0.5, 0.999] {
            let config = SamplerConfig { top_p, ..SamplerConfig::default() };
            let mut s = sampler(config.clone(), 3);
            let drawn: Vec<u32> = (0..200).map(|_| s.sample(&logits, &[])).collect();
            // Reference: full sort, then the nucleus by hand.
            let mut probs: Vec<(u32, f64)> =
                logits.iter().enumerate().map(|(i, &l)| (i as u32, l as f64)).collect();
            probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let max = probs[0].1;
            let p: Vec<f64> = probs.iter().map(|(_, l)| (l - max).exp()).collect();
            let total: f64 = p.iter().sum();
            let mut mass = 0.0;
            let mut keep = 0;
            while mass < top_p as f64 * total {
                mass += p[keep];
                keep += 1;
            }
            let nucleus: Vec<u32> = probs[..keep].iter().map(|(id, _)| *id).collect();
            assert!(drawn.iter().all(|t| nucleus.contains(t)), "top_p {top_p}");
        }
    }

    #[test]
    fn min_p_drops_the_unlikely() {
        // Relative probabilities 1, 0.5, 0.05: min_p 0.1 drops the last.
        let logits = [0.0, 0.5f32.ln(), 0.05f32.ln()];
        let config = SamplerConfig { min_p: 0.1, ..SamplerConfig::default() };
        let c = counts(config, &logits, 5_000);
        assert_eq!(c[2], 0, "{c:?}");
        assert!(c[1] > 1_300, "{c:?}");
    }

    #[test]
    fn masked_logits_are_never_drawn() {
        let logits = [f32::NEG_INFINITY, 0.0, f32::NAN, 0.0];
        let c = counts(SamplerConfig::default(), &logits, 1_000);
        assert_eq!(c[0] + c[2], 0, "{c:?}");
    }

    #[test]
    fn config_check_names_the_bad_knob() {
        assert!(SamplerConfig::default().check().is_ok());
        let bad = SamplerConfig { top_p: 0.0, ..SamplerConfig::default() };
        assert!(bad.check().unwrap_err().contains("top_p"));
        let bad = SamplerConfig { temperature: -1.0, ..SamplerConfig::default() };
        assert!(bad.check().unwrap_err().contains("temperature"));
        let bad = SamplerConfig { repetition_penalty: 0.0, ..SamplerConfig::default() };
        assert!(bad.check().unwrap_err().contains("repetition_penalty"));
    }

    #[test]
    fn log_softmax_matches_by_hand() {
        let l = [1.0f32, 2.0, 3.0];
        let z = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        assert!((log_softmax_at(&l, 2) - (3.0 - z)).abs() < 1e-12);
        // Large logits do not overflow.
        let big = [1000.0f32, 1000.0];
        assert!((log_softmax_at(&big, 0) - 0.5f64.ln()).abs() < 1e-12);
    }
}
