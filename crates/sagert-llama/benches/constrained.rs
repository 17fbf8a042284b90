//! Cost of constrained decoding on SmolLM2-135M-Instruct's 49k vocabulary:
//! building the [`Grammars`] (once per model), compiling a schema (once per
//! choice), and the mask per generated token (`Matcher::mask_logits`, every
//! step of every constrained choice), with `consume` timed beside it.
//!
//! `cargo bench -p sagert-llama --bench constrained`. Tokens come from our
//! sampler over random logits under the mask, so the walk covers strings,
//! numbers, enums and structure the way generation does (a model's logits
//! change which tokens are picked, not what a mask costs). Loads only the
//! vocabulary; skips with a message when the model is not fetched.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_cpp_2::llama_backend::LlamaBackend as LlamaRuntime;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use sagert_llama::sampler::{Rng, Sampler, SamplerConfig};
use sagert_llama::Grammars;
use serde_json::{json, Value};

const RUNS: u64 = 30;
const MAX_TOKENS: usize = 200;

fn model_path() -> PathBuf {
    let cache = std::env::var_os("SAGERT_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache").join("sagert")
    });
    cache.join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Mean, median and 99th percentile of `times`, in microseconds.
fn summary(times: &mut [Duration]) -> String {
    times.sort_unstable();
    let mean = times.iter().sum::<Duration>() / times.len().max(1) as u32;
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    format!("mean {:7.1} µs  p50 {:7.1} µs  p99 {:8.1} µs", micros(mean), micros(at(0.5)), micros(at(0.99)))
}

fn bench_schema(model: &LlamaModel, grammars: &Grammars, name: &str, schema: &Value) {
    let vocab = model.vocab();
    let n = vocab.n_tokens() as usize;
    let (mut compile, mut masks, mut consumes) = (Vec::new(), Vec::new(), Vec::new());
    let mut logits = vec![0.0f32; n];
    for seed in 0..RUNS {
        let t = Instant::now();
        let mut matcher = grammars.json_schema(schema).expect("schema compiles");
        compile.push(t.elapsed());
        let mut sampler = Sampler::new(SamplerConfig::default(), Rng::new(seed, 0));
        let mut noise = Rng::new(seed, 1);
        for _ in 0..MAX_TOKENS {
            for l in logits.iter_mut() {
                *l = (noise.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 8.0;
            }
            let t = Instant::now();
            matcher.mask_logits(&mut logits).expect("mask");
            masks.push(t.elapsed());
            let token = sampler.sample(&logits, &[]);
            if vocab.is_eog(LlamaToken(token as i32)) {
                break;
            }
            let t = Instant::now();
            matcher.consume(token).expect("consume");
            consumes.push(t.elapsed());
            if matcher.is_finished() {
                break;
            }
        }
    }
    println!("{name}: {} tokens over {RUNS} runs", masks.len());
    println!("  compile  {}", summary(&mut compile));
    println!("  mask     {}", summary(&mut masks));
    println!("  consume  {}", summary(&mut consumes));
}

fn main() {
    let path = model_path();
    if !path.is_file() {
        eprintln!("skipped constrained bench: {} missing; run scripts/fetch-models", path.display());
        return;
    }
    let mut runtime = LlamaRuntime::init().expect("llama.cpp initialises");
    runtime.void_logs();
    let params = LlamaModelParams::default().with_vocab_only(true);
    let model = Arc::new(LlamaModel::load_from_file(&runtime, &path, &params).expect("vocabulary loads"));
    let t = Instant::now();
    let grammars = Grammars::new(Arc::clone(&model)).expect("grammars build");
    println!("Grammars::new ({} tokens): {:.1} ms", grammars.vocab_size(), t.elapsed().as_secs_f64() * 1e3);

    let queries = json!({
        "type": "object",
        "properties": {"queries": {"type": "array", "items": {"type": "string", "maxLength": 24}, "maxItems": 4}},
        "required": ["queries"]
    });
    bench_schema(&model, &grammars, "queries (strings)", &queries);
    let mixed = json!({
        "type": "object",
        "properties": {
            "level": {"enum": ["low", "medium", "high"]},
            "count": {"type": "integer", "minimum": 10, "maximum": 999},
            "score": {"type": "number"},
            "author": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 12}, "verified": {"type": "boolean"}},
                "required": ["name", "verified"],
                "additionalProperties": false
            }
        },
        "required": ["level", "count", "score", "author"],
        "additionalProperties": false
    });
    bench_schema(&model, &grammars, "mixed (enum, integer, number, nested)", &mixed);
}
