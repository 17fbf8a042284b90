//! Parse failures of a small model on extraction prompts, with and without
//! constrained decoding: 200 prompts asking SmolLM2-135M to extract fields from
//! a short placeholder record into JSON under a schema.
//!
//! - unconstrained: the schema instructions in the system message (what
//!   prompt-mode structured output sends), the raw answer checked with
//!   `sagert_backend::json::check_structured` (no repair round);
//! - constrained: the same request with the schema attached, decoded under its
//!   grammar; the answer checked the same way.
//!
//! `cargo bench -p sagert-llama --bench structured` (threads:
//! `SAGERT_BENCH_THREADS`, default 2; prompts: `SAGERT_BENCH_PROMPTS`, default
//! 200). Skips with a message when the model is not fetched.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use sagert_backend::json::{check_structured, schema_instructions};
use sagert_backend::{ChatBackend, ChatMessage, ChatRequest, JsonSchema, SamplingParams};
use sagert_llama::{LlamaBackend, LlamaOptions};
use serde_json::json;

fn model_path() -> PathBuf {
    let cache = std::env::var_os("SAGERT_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache").join("sagert")
    });
    cache.join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn schema() -> JsonSchema {
    JsonSchema {
        name: "record".into(),
        schema: json!({
            "type": "object",
            "required": ["name", "city", "age", "topics"],
            "properties": {
                "name": {"type": "string", "maxLength": 40},
                "city": {"type": "string", "maxLength": 40},
                "age": {"type": "integer", "minimum": 0, "maximum": 130},
                "topics": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 4}
            },
            "additionalProperties": false
        }),
    }
}

const NAMES: [&str; 10] = ["Ana", "Bo", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana", "Ivo", "Jun"];
const CITIES: [&str; 8] = ["Lisbon", "Oslo", "Lima", "Pune", "Kyoto", "Accra", "Quito", "Turin"];
const TOPICS: [&str; 6] = ["gardening", "chess", "rivers", "baking", "trains", "poetry"];

fn prompt(i: usize) -> String {
    format!(
        "Extract the person's details from this note.\n\nNote: {} is {} years old, lives in {} and \
         writes a blog about {} and {}.",
        NAMES[i % NAMES.len()],
        18 + (i * 7) % 60,
        CITIES[i % CITIES.len()],
        TOPICS[i % TOPICS.len()],
        TOPICS[(i / 3 + 1) % TOPICS.len()],
    )
}

fn main() {
    let path = model_path();
    if !path.is_file() {
        eprintln!("skipped structured bench: {} missing; run scripts/fetch-models", path.display());
        return;
    }
    let threads = std::env::var("SAGERT_BENCH_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let prompts = std::env::var("SAGERT_BENCH_PROMPTS").ok().and_then(|t| t.parse().ok()).unwrap_or(200);
    let options = LlamaOptions {
        model_id: "smollm2-135m-instruct".into(),
        threads,
        context_per_sequence: 512,
        max_sequences: 16,
        batch_tokens: 512,
        ..LlamaOptions::default()
    };
    let backend = Arc::new(LlamaBackend::load(&path, options).expect("model loads"));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let schema = schema();
    let instructions = schema_instructions(&schema);
    for constrained in [false, true] {
        let started = Instant::now();
        let (failures, tokens, examples) = runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..prompts {
                let backend = Arc::clone(&backend);
                let schema = schema.clone();
                let instructions = instructions.clone();
                tasks.spawn(async move {
                    let mut r = ChatRequest::new(vec![
                        ChatMessage::system(instructions),
                        ChatMessage::user(prompt(i)),
                    ]);
                    r.params = SamplingParams {
                        temperature: Some(0.7),
                        max_tokens: Some(128),
                        seed: Some(i as u64),
                        ..SamplingParams::default()
                    };
                    if constrained {
                        // The backend adds the same instructions to the system
                        // message; send the bare prompt so both see them once.
                        r.messages.remove(0);
                        r.schema = Some(schema.clone());
                    }
                    match backend.chat(&r).await {
                        Ok(answer) => {
                            let ok = check_structured(answer.text(), &schema.schema).is_ok();
                            (ok, answer.usage.completion_tokens, answer.text().to_string())
                        }
                        Err(e) => (false, 0, e.to_string()),
                    }
                });
            }
            let mut failures = 0;
            let mut tokens = 0;
            let mut examples = Vec::new();
            while let Some(joined) = tasks.join_next().await {
                let (ok, t, text) = joined.unwrap();
                tokens += t;
                if !ok {
                    failures += 1;
                    if examples.len() < 2 {
                        examples.push(text);
                    }
                }
            }
            (failures, tokens, examples)
        });
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "constrained={constrained}: {failures}/{prompts} answers fail to parse or validate ({:.1}%), \
             {tokens} tokens in {seconds:.1}s ({:.1} tokens/s)",
            100.0 * failures as f64 / prompts as f64,
            tokens as f64 / seconds
        );
        for example in examples {
            println!("  e.g. {:?}", example.chars().take(160).collect::<String>());
        }
    }
}
