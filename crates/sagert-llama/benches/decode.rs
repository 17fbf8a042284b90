//! Decode throughput of the embedded backend on SmolLM2-135M-Instruct (Q4_1):
//! tokens/s of one request alone, and aggregate tokens/s of 16 concurrent
//! requests of 64 tokens each (continuous batching over `max_sequences`).
//!
//! `cargo bench -p sagert-llama --bench decode` (threads: `SAGERT_BENCH_THREADS`,
//! default 2). Skips with a message when the model is not fetched.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use sagert_backend::{ChatBackend, ChatMessage, ChatRequest, SamplingParams};
use sagert_llama::{LlamaBackend, LlamaOptions};

const TOKENS: u32 = 64;
const CONCURRENT: usize = 16;

fn model_path() -> PathBuf {
    let cache = std::env::var_os("SAGERT_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache").join("sagert")
    });
    cache.join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// A sampled request (so that it rarely ends early) with a fixed seed.
fn request(i: usize) -> ChatRequest {
    let mut r = ChatRequest::new(vec![ChatMessage::user(format!(
        "Write a long, detailed story about traveller number {i} crossing a desert."
    ))]);
    r.params = SamplingParams {
        temperature: Some(0.8),
        max_tokens: Some(TOKENS),
        seed: Some(i as u64),
        ..SamplingParams::default()
    };
    r
}

fn main() {
    let path = model_path();
    if !path.is_file() {
        eprintln!("skipped decode bench: {} missing; run scripts/fetch-models", path.display());
        return;
    }
    let threads = std::env::var("SAGERT_BENCH_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let options = LlamaOptions {
        model_id: "smollm2-135m-instruct".into(),
        threads,
        context_per_sequence: 512,
        max_sequences: CONCURRENT,
        batch_tokens: 512,
        ..LlamaOptions::default()
    };
    let backend = Arc::new(LlamaBackend::load(&path, options).expect("model loads"));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    runtime.block_on(async {
        // Warm-up: first graph allocation.
        backend.chat(&request(0)).await.unwrap();

        let mut generated = 0;
        let started = Instant::now();
        for i in 0..3 {
            generated += backend.chat(&request(100 + i)).await.unwrap().usage.completion_tokens;
        }
        let alone = started.elapsed().as_secs_f64();
        println!(
            "batch 1: {generated} tokens in {alone:.2}s = {:.1} tokens/s (prompt prefill included)",
            generated as f64 / alone
        );

        let before = backend.stats();
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..CONCURRENT {
            let backend = Arc::clone(&backend);
            tasks.spawn(async move { backend.chat(&request(200 + i)).await.unwrap().usage.completion_tokens });
        }
        let mut generated = 0;
        while let Some(tokens) = tasks.join_next().await {
            generated += tokens.unwrap();
        }
        let together = started.elapsed().as_secs_f64();
        let stats = backend.stats();
        println!(
            "{CONCURRENT} concurrent x {TOKENS}: {generated} tokens in {together:.2}s = {:.1} tokens/s aggregate \
             ({} decode steps, up to {} sequences per batch)",
            generated as f64 / together,
            stats.decode_steps - before.decode_steps,
            stats.max_batch_sequences
        );
    });
}
