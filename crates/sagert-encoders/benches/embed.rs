//! Embeddings per second of the MiniLM embedder: 1,000 sentences of mixed
//! length (4 to 200 words), batch 32, 2 threads, best of 3 runs.
//!
//! `cargo bench -p sagert-encoders --bench embed`; `scripts/reference/minilm_bench.py`
//! runs the same sentences through sentence-transformers on torch (2 threads)
//! and prints the ratio. The sentence generator is duplicated there: keep the
//! two in step. `SAGERT_BENCH_THREADS` and `SAGERT_BENCH_BATCH` override the
//! thread count and batch size.

use std::path::PathBuf;
use std::time::Instant;

use sagert_encoders::embed::{EmbedOptions, Embedder};

const WORDS: &str = "the model answers a question about safety policy data review label topic \
    user request benign refuse comply evaluate score judge prompt response taxonomy category \
    example dataset training alignment reward preference rank filter duplicate semantic \
    embedding vector cosine threshold cluster language system assistant careful helpful honest \
    clear short long sentence paragraph report summary metric accuracy precision recall";

/// `count` sentences from a 64-bit LCG: 60% of 4-16 words, 30% of 17-60,
/// 10% of 61-200.
fn sentences(count: usize) -> Vec<String> {
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    (0..count)
        .map(|_| {
            let r = next() % 100;
            let n = if r < 60 {
                4 + next() % 13
            } else if r < 90 {
                17 + next() % 44
            } else {
                61 + next() % 140
            };
            let mut s =
                (0..n).map(|_| words[(next() % words.len() as u64) as usize]).collect::<Vec<_>>().join(" ");
            s.push('.');
            s
        })
        .collect()
}

/// FNV-1a of the sentences joined by newlines: the Python script prints the
/// same, to show both ran the same text.
fn fingerprint(texts: &[String]) -> u64 {
    texts
        .join("\n")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let cache = std::env::var_os("SAGERT_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/sagert"));
    let dir = cache.join("models/minilm-l6");
    if !dir.join("model.safetensors").is_file() {
        println!(
            "skipping the MiniLM benchmark: the model is not in {} (run scripts/fetch-models minilm-l6)",
            dir.display()
        );
        return;
    }
    let options = EmbedOptions {
        threads: env_usize("SAGERT_BENCH_THREADS", 2),
        batch_size: env_usize("SAGERT_BENCH_BATCH", 32),
    };
    let embedder = Embedder::load(&dir, options).expect("load the MiniLM model");
    let texts = sentences(1000);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokens: usize = refs.iter().map(|t| embedder.token_ids(t).expect("tokenize").len()).sum();

    embedder.embed(&refs[..64]).expect("warm up");
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        let vectors = embedder.embed(&refs).expect("embed");
        best = best.min(start.elapsed().as_secs_f64());
        assert_eq!(vectors.len(), refs.len());
    }
    let rate = refs.len() as f64 / best;
    println!(
        "sagert (candle) minilm: {} sentences ({tokens} tokens, text {:016x}), batch {}, \
         {} threads: {rate:.1} embeddings/s ({best:.2} s, best of 3)",
        refs.len(),
        fingerprint(&texts),
        options.batch_size,
        options.threads,
    );
    println!("embeddings_per_s={rate:.3}");
}
