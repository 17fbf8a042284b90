//! The SAGE-shaped workload of prefix reuse: one raw text of about 800 tokens
//! sent with each of the 9 jailbreak-type extraction instructions at once (as
//! the query-extraction stage does), with and without the prefix cache. Prints
//! wall time, tokens decoded and the speed-up.
//!
//! `cargo bench -p sagert-llama --bench prefix` (threads: `SAGERT_BENCH_THREADS`,
//! default 2). Skips with a message when the model is not fetched.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use sagert_backend::{ChatBackend, ChatMessage, ChatRequest, SamplingParams};
use sagert_llama::{LlamaBackend, LlamaOptions};

/// New tokens per answer: short, so that prefill is what the cache changes.
const NEW_TOKENS: u32 = 32;

/// The nine jailbreak types of SAGE (placeholders: what matters is the shape).
const TYPES: [&str; 9] = [
    "direct",
    "biased",
    "toxic completion",
    "fictional scenario",
    "role-play",
    "story writing",
    "coding task",
    "sub-task decomposition",
    "constrained situation",
];

fn model_path() -> PathBuf {
    let cache = std::env::var_os("SAGERT_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache").join("sagert")
    });
    cache.join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// A neutral placeholder document of about 800 tokens.
fn raw_text() -> String {
    (0..26)
        .map(|i| {
            format!(
                "Section {i}. The placeholder article discusses topic {i} in neutral terms, \
                 with a few dates, names of towns and ordinary details. "
            )
        })
        .collect()
}

fn requests() -> Vec<ChatRequest> {
    let text = raw_text();
    TYPES
        .iter()
        .map(|kind| {
            let mut r = ChatRequest::new(vec![
                ChatMessage::system("You turn documents into test queries for a safety benchmark."),
                ChatMessage::user(format!(
                    "Document:\n{text}\n\nWrite one query of the type \"{kind}\" about the document."
                )),
            ]);
            r.params = SamplingParams {
                temperature: Some(0.0),
                max_tokens: Some(NEW_TOKENS),
                ..SamplingParams::default()
            };
            r
        })
        .collect()
}

fn main() {
    let path = model_path();
    if !path.is_file() {
        eprintln!("skipped prefix bench: {} missing; run scripts/fetch-models", path.display());
        return;
    }
    let threads = std::env::var("SAGERT_BENCH_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let requests = requests();
    let mut seconds = [0.0; 2];
    for (i, prefix_cache) in [false, true].into_iter().enumerate() {
        let options = LlamaOptions {
            model_id: "smollm2-135m-instruct".into(),
            threads,
            context_per_sequence: 1024,
            max_sequences: 9,
            batch_tokens: 512,
            prefix_cache,
            ..LlamaOptions::default()
        };
        let backend = Arc::new(LlamaBackend::load(&path, options).expect("model loads"));
        let prompt_tokens = backend.tokenize(&backend.render_chat(&requests[0].messages).unwrap()).len();
        let texts = runtime.block_on(async {
            // Warm-up on an unrelated prompt: graph allocation, no shared prefix.
            let mut warm = ChatRequest::new(vec![ChatMessage::user("Hello.")]);
            warm.params.max_tokens = Some(4);
            backend.chat(&warm).await.unwrap();
            let before = backend.stats();
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for (k, r) in requests.iter().cloned().enumerate() {
                let backend = Arc::clone(&backend);
                tasks.spawn(async move { (k, backend.chat(&r).await.unwrap().text().to_string()) });
            }
            let mut texts = vec![String::new(); requests.len()];
            while let Some(joined) = tasks.join_next().await {
                let (k, text) = joined.unwrap();
                texts[k] = text;
            }
            seconds[i] = started.elapsed().as_secs_f64();
            let stats = backend.stats();
            println!(
                "prefix_cache={prefix_cache}: 9 x {prompt_tokens}-token prompts + {NEW_TOKENS} new tokens in {:.2}s; \
                 {} tokens decoded in {} steps, {} prompt tokens reused",
                seconds[i],
                stats.tokens_decoded - before.tokens_decoded,
                stats.decode_steps - before.decode_steps,
                stats.prompt_tokens_reused - before.prompt_tokens_reused,
            );
            texts
        });
        let _ = texts;
    }
    println!("speed-up with prefix reuse: {:.2}x", seconds[0] / seconds[1]);
}
