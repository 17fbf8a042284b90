//! Texts per second of the toxicity scorer: 1,000 short texts and 200 long
//! ones (over 100 words, so there is no shared padding to skip), made from the
//! reference texts in `tests/fixtures/toxicity_reference.json`.
//!
//! `cargo bench -p sagert-encoders --bench toxicity`. `SAGERT_BENCH_THREADS`
//! and `SAGERT_BENCH_BATCH` override the thread count (2) and batch size (128).

use std::path::{Path, PathBuf};
use std::time::Instant;

use sagert_encoders::toxicity::{ToxicityOptions, ToxicityScorer};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let cache = std::env::var_os("SAGERT_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/sagert"));
    let dir = cache.join("models/toxicity");
    let options = ToxicityOptions {
        threads: env_usize("SAGERT_BENCH_THREADS", 2),
        batch_size: env_usize("SAGERT_BENCH_BATCH", 128),
    };
    let scorer = match ToxicityScorer::load_with(&dir, options) {
        Ok(scorer) => scorer,
        Err(err) => {
            println!("skipping the toxicity benchmark: {err}");
            return;
        }
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/toxicity_reference.json");
    let fixture: Fixture = serde_json::from_str(&std::fs::read_to_string(&path).expect("read the fixture"))
        .expect("parse the fixture");
    let base = &fixture.cases;
    let short: Vec<String> =
        (0..1000).map(|i| format!("{} {}", base[i % 12].text, ["ok", "thanks", "again"][i % 3])).collect();
    let long: Vec<String> = (0..200).map(|i| format!("{} {i}", base[15 + i % 2].text)).collect();
    scorer.score(&[short[0].as_str()]).expect("warm up");
    for (what, texts) in [("short", short), ("long", long)] {
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let start = Instant::now();
            let scores = scorer.score(&texts).expect("score");
            best = best.min(start.elapsed().as_secs_f64());
            assert_eq!(scores.len(), texts.len());
        }
        let rate = texts.len() as f64 / best;
        println!(
            "sagert toxicity: {} {what} texts in {best:.3} s: {rate:.0} texts/s ({} threads, batches of {}, best of 3)",
            texts.len(),
            options.threads,
            options.batch_size,
        );
        println!("{what}_texts_per_s={rate:.1}");
    }
}
