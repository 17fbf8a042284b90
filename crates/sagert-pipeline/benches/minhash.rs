//! MinHash-LSH near-duplicate detection throughput, for `scripts/bench-minhash`.
//!
//! Generates synthetic texts deterministically (lowercase words from a fixed
//! vocabulary, 10% of them copies of an earlier text with one or two words
//! replaced), writes them to `texts.txt`, then times signatures (128
//! permutations) + LSH banding (threshold 0.8) + candidate pairs, on all
//! rayon threads and on one, for both datasketch schemes. Writes the pairs to
//! `pairs-<scheme>.txt` (`i j` per line, `i < j`) and the figures to
//! `rust.json` for `scripts/minhash_reference.py` to compare with datasketch.
//!
//! Knobs (environment): `SAGERT_BENCH_OUT` (output folder, default
//! `target/bench-minhash`), `SAGERT_BENCH_TEXTS` (100000),
//! `SAGERT_BENCH_REPEATS` (3; the best run counts).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use sagert_pipeline::dedup::{banded_pairs, normalize, LshParams, MinHasher, Scheme, MINHASH_SEED};

const NUM_PERM: usize = 128;
const THRESHOLD: f64 = 0.8;
const SEED: u64 = 0x5a6e_2024;

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

/// A pronounceable lowercase word of two to four syllables.
fn word(rng: &mut fastrand::Rng) -> String {
    const ONSETS: &[&str] =
        &["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "st", "tr"];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou"];
    let mut w = String::new();
    for _ in 0..rng.usize(2..=4) {
        w.push_str(ONSETS[rng.usize(..ONSETS.len())]);
        w.push_str(VOWELS[rng.usize(..VOWELS.len())]);
    }
    w
}

/// `n` texts and the planted `(source, copy)` pairs.
fn generate(n: usize) -> (Vec<String>, Vec<(usize, usize)>) {
    let mut rng = fastrand::Rng::with_seed(SEED);
    let vocab: Vec<String> = (0..20_000).map(|_| word(&mut rng)).collect();
    // Skewed towards the start of the vocabulary, as word frequencies are.
    let pick = |rng: &mut fastrand::Rng| vocab[(vocab.len() as f64 * rng.f64().powi(2)) as usize].as_str();
    let mut texts: Vec<String> = Vec::with_capacity(n);
    let mut planted = Vec::new();
    for i in 0..n {
        let text = if i > 0 && rng.f64() < 0.1 {
            let source = rng.usize(..i);
            let mut words: Vec<&str> = texts[source].split(' ').collect();
            for _ in 0..rng.usize(1..=2) {
                let k = rng.usize(..words.len());
                words[k] = pick(&mut rng);
            }
            planted.push((source, i));
            words.join(" ")
        } else {
            (0..rng.usize(12..=40)).map(|_| pick(&mut rng)).collect::<Vec<_>>().join(" ")
        };
        texts.push(text);
    }
    (texts, planted)
}

/// Signatures, banding and candidate pairs: what is timed.
fn detect(hasher: &MinHasher, params: LshParams, texts: &[&str]) -> Vec<(usize, usize)> {
    let signatures = hasher.signatures(texts);
    banded_pairs(&signatures, params)
}

/// The best of `repeats` runs, in seconds, and the pairs.
fn time(repeats: usize, f: impl Fn() -> Vec<(usize, usize)>) -> (f64, Vec<(usize, usize)>) {
    let mut best = f64::INFINITY;
    let mut pairs = Vec::new();
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        pairs = f();
        best = best.min(start.elapsed().as_secs_f64());
    }
    (best, pairs)
}

/// The best times of signatures alone and of banding + pairs alone.
fn breakdown(repeats: usize, hasher: &MinHasher, params: LshParams, texts: &[&str]) -> (f64, f64) {
    let (mut sig_secs, mut lsh_secs) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        let signatures = hasher.signatures(texts);
        sig_secs = sig_secs.min(start.elapsed().as_secs_f64());
        let start = Instant::now();
        let pairs = banded_pairs(&signatures, params);
        lsh_secs = lsh_secs.min(start.elapsed().as_secs_f64());
        std::hint::black_box(pairs);
    }
    (sig_secs, lsh_secs)
}

fn main() {
    let out = std::env::var_os("SAGERT_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-minhash"));
    let n = env_usize("SAGERT_BENCH_TEXTS", 100_000);
    let repeats = env_usize("SAGERT_BENCH_REPEATS", 3);
    std::fs::create_dir_all(&out).expect("create the output folder");

    let (texts, planted) = generate(n);
    // The Python reference tokenises with `str.split()`: that is only the
    // same shingling as ours if the texts are already normalised.
    assert!(texts.iter().all(|t| normalize(t) == *t), "bench texts must be normalised");
    std::fs::write(out.join("texts.txt"), texts.join("\n") + "\n").expect("write texts.txt");
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();

    let params = LshParams::optimal(THRESHOLD, NUM_PERM);
    let threads = rayon::current_num_threads();
    let single = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    println!(
        "minhash bench: {n} texts ({} planted near duplicates), {NUM_PERM} permutations, threshold \
         {THRESHOLD}, {} bands x {} rows",
        planted.len(),
        params.bands,
        params.rows
    );

    let mut schemes = serde_json::Map::new();
    for scheme in [Scheme::Affine32, Scheme::Legacy] {
        let hasher = MinHasher::with_scheme(NUM_PERM, MINHASH_SEED, scheme);
        let (secs, pairs) = time(repeats, || detect(&hasher, params, &texts));
        let (secs_1, pairs_1) = time(repeats, || single.install(|| detect(&hasher, params, &texts)));
        assert_eq!(pairs, pairs_1, "one thread and {threads} found different pairs");
        let (sig_secs, lsh_secs) = single.install(|| breakdown(repeats, &hasher, params, &texts));
        println!(
            "rust {:<8}: 1 thread: signatures {sig_secs:.3} s, LSH banding + pairs {lsh_secs:.3} s",
            scheme.name()
        );
        let found: std::collections::HashSet<(usize, usize)> = pairs.iter().copied().collect();
        let planted_found = planted.iter().filter(|p| found.contains(p)).count();
        println!(
            "rust {:<8}: {:>10.0} texts/s on {threads} threads ({secs:.3} s), {:>10.0} texts/s on 1 \
             thread ({secs_1:.3} s); {} candidate pairs, {planted_found}/{} planted found",
            scheme.name(),
            n as f64 / secs,
            n as f64 / secs_1,
            pairs.len(),
            planted.len()
        );
        let mut text = String::with_capacity(pairs.len() * 14);
        for (i, j) in &pairs {
            writeln!(text, "{i} {j}").expect("write to a String");
        }
        std::fs::write(out.join(format!("pairs-{}.txt", scheme.name())), text).expect("write pairs");
        schemes.insert(
            scheme.name().into(),
            serde_json::json!({
                "secs": secs,
                "secs_1_thread": secs_1,
                "pairs": pairs.len(),
                "planted_found": planted_found,
            }),
        );
    }
    let summary = serde_json::json!({
        "texts": n,
        "planted": planted.len(),
        "num_perm": NUM_PERM,
        "threshold": THRESHOLD,
        "bands": params.bands,
        "rows": params.rows,
        "threads": threads,
        "schemes": schemes,
    });
    let json = serde_json::to_string_pretty(&summary).expect("serialise the summary");
    std::fs::write(out.join("rust.json"), json).expect("write rust.json");
    println!("wrote {}", out.display());
}
