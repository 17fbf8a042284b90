//! Behaviour tests of the conversions on SmolLM2-135M-Instruct (Q4_1), checked
//! against llama.cpp itself (through `sagert-llama`).
//!
//! The model tests need the file from `scripts/fetch-models`. When it is missing
//! a test prints why and passes, except under `CI=true`, where it fails (CI
//! fetches the model). The round trip (GGUF → transformers F32 → GGUF F32) is
//! made once per test binary and shared.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use sagert_backend::{ChatBackend, ChatMessage, ChatRequest, SamplingParams};
use sagert_convert::{GgufDtype, HfDtype, Options};
use sagert_llama::{LlamaBackend, LlamaOptions, TokenScores};
use serde_json::Value;

/// Round-trip F32 against llama.cpp's own F32 copy of the same Q4_1 weights,
/// both with an f32 KV cache: per token and per sequence |Δ log-prob|. The
/// weights are bit-identical when dequantization and the q/k permutation are
/// right, so anything above float noise is a bug.
const F32_TOLERANCE: f64 = 1e-4;
/// Round-trip F32 against the Q4_1 original: llama.cpp quantizes activations to
/// 8 bits for Q4_1 matmuls, which moves SmolLM2's log-probs by up to ~0.5 nat
/// per sequence (see sagert-llama's tests); a wrong permutation or a misnamed
/// tensor costs several nats per token.
const Q4_SUM_TOLERANCE: f64 = 1.5;

/// The model's path, or `None` (after saying why) when the test must skip.
fn model_or_skip(test: &str) -> Option<PathBuf> {
    sagert_models::testing::model_or_skip(test, "smollm2-135m-instruct")
}

/// Model tests run one at a time (two llama.cpp threads each on a small machine).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn options(kv_cache_f32: bool) -> LlamaOptions {
    LlamaOptions {
        model_id: "smollm2".into(),
        threads: 2,
        context_per_sequence: 256,
        max_sequences: 4,
        batch_tokens: 128,
        kv_cache_f32,
        ..LlamaOptions::default()
    }
}

fn scratch() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// SmolLM2 dequantized to F32 by llama.cpp's own quantizer: the reference.
fn f32_model(q4: &Path) -> PathBuf {
    // The same file (same name, same recipe) as sagert-llama's tests make.
    let dst = scratch().join("SmolLM2-135M-Instruct.F32.gguf");
    if dst.is_file() {
        return dst;
    }
    // llama.cpp's runtime must be initialised before the quantizer runs.
    drop(LlamaBackend::load(q4, options(false)).expect("model loads"));
    let partial = dst.with_extension(format!("partial-{}", std::process::id()));
    let src = CString::new(q4.to_str().unwrap()).unwrap();
    let out = CString::new(partial.to_str().unwrap()).unwrap();
    // SAFETY: plain C call with valid NUL-terminated paths and llama.cpp's own
    // default parameters; the llama.cpp runtime is initialised above.
    let status = unsafe {
        let mut params = llama_cpp_sys_2::llama_model_quantize_default_params();
        params.ftype = llama_cpp_sys_2::LLAMA_FTYPE_ALL_F32;
        params.allow_requantize = true;
        params.nthread = 2;
        llama_cpp_sys_2::llama_model_quantize(src.as_ptr(), out.as_ptr(), &params)
    };
    assert_eq!(status, 0, "dequantizing {} to F32 failed", q4.display());
    std::fs::rename(&partial, &dst).unwrap();
    dst
}

struct RoundTrip {
    hf: PathBuf,
    gguf: PathBuf,
}

/// GGUF Q4_1 → transformers (F32) → GGUF (F32), once per test binary, in a
/// scratch directory of this process. A static is never dropped, so the
/// directories of earlier runs (over an hour old) are removed here instead.
fn round_trip(q4: &Path) -> &'static RoundTrip {
    static ONCE: OnceLock<RoundTrip> = OnceLock::new();
    ONCE.get_or_init(|| {
        const PREFIX: &str = "sagert-convert-roundtrip-";
        for entry in std::fs::read_dir(scratch()).unwrap().flatten() {
            let old = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            if entry.file_name().to_string_lossy().starts_with(PREFIX)
                && old.is_some_and(|age| age.as_secs() > 3600)
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = scratch().join(format!("{PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let hf = dir.join("smollm2-hf");
        let gguf = dir.join("smollm2-rt.f32.gguf");
        let opts = Options { threads: 2, progress: None };
        let t = Instant::now();
        let to_hf = sagert_convert::gguf_to_hf(q4, &hf, HfDtype::F32, &opts).unwrap();
        eprintln!(
            "gguf -> hf (f32): {:.1}s, {} tensors, {} bytes",
            t.elapsed().as_secs_f64(),
            to_hf.tensors,
            to_hf.bytes
        );
        let t = Instant::now();
        let back = sagert_convert::hf_to_gguf(&hf, &gguf, GgufDtype::F32, &opts).unwrap();
        eprintln!(
            "hf -> gguf (f32): {:.1}s, {} tensors, {} bytes",
            t.elapsed().as_secs_f64(),
            back.tensors,
            back.bytes
        );
        assert_eq!(to_hf.tensors, back.tensors, "every tensor comes back");
        assert_eq!(to_hf.params, back.params, "hyperparameters survive the round trip");
        RoundTrip { hf, gguf }
    })
}

fn pairs() -> Vec<(String, String)> {
    [
        ("The capital of France is", " Paris, a city on the Seine."),
        ("<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n", "Red, green and blue."),
        ("def square(x):\n", "    return x * x\n"),
        ("Safety matters because", " people can get hurt when systems fail 123 times."),
        ("你好，", "世界！这是一个测试。"),
    ]
    .iter()
    .map(|(p, c)| (p.to_string(), c.to_string()))
    .collect()
}

/// The largest per-token and per-sequence |Δ| between two scorings of the same pairs.
fn deltas(a: &[TokenScores], b: &[TokenScores]) -> (f64, f64) {
    let (mut token, mut sum) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.tokens, y.tokens, "same token ids");
        assert_eq!(x.scored_from, y.scored_from);
        for (p, q) in x.logprobs.iter().zip(&y.logprobs) {
            token = token.max((p - q).abs());
        }
        sum = sum.max((x.sum() - y.sum()).abs());
    }
    (token, sum)
}

fn greedy(user: &str) -> ChatRequest {
    let mut r = ChatRequest::new(vec![ChatMessage::user(user)]);
    r.params = SamplingParams { temperature: Some(0.0), max_tokens: Some(20), ..SamplingParams::default() };
    r
}

#[test]
fn round_trip_scores_and_generates_like_llama_cpps_f32_copy() {
    let Some(q4) = model_or_skip("round_trip_scores_and_generates_like_llama_cpps_f32_copy") else { return };
    let _serial = serial();
    let rt = round_trip(&q4);
    let reference = f32_model(&q4);

    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(rt.hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    assert_eq!(config["num_key_value_heads"], 3);
    assert_eq!(config["tie_word_embeddings"], true);
    assert_eq!(config["rms_norm_eps"], 1e-5);
    let tokenizer_config: Value =
        serde_json::from_str(&std::fs::read_to_string(rt.hf.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(tokenizer_config["eos_token"], "<|im_end|>");
    assert!(tokenizer_config["chat_template"].as_str().unwrap().contains("<|im_start|>"));

    runtime().block_on(async {
        let ours = LlamaBackend::load(&rt.gguf, options(true)).expect("the round-trip GGUF loads");
        let f32 = LlamaBackend::load(&reference, options(true)).unwrap();
        let q4 = LlamaBackend::load(&q4, options(false)).unwrap();
        let pairs = pairs();
        let a = ours.score_text(&pairs).await.unwrap();
        let b = f32.score_text(&pairs).await.unwrap();
        let c = q4.score_text(&pairs).await.unwrap();
        let (token, sum) = deltas(&a, &b);
        eprintln!("round trip vs llama.cpp F32 copy: max |Δ token| {token:.2e}, max |Δ sum| {sum:.2e}");
        assert!(token <= F32_TOLERANCE && sum <= F32_TOLERANCE, "token {token} sum {sum}");
        let (token, sum) = deltas(&a, &c);
        eprintln!("round trip vs Q4_1 original: max |Δ token| {token:.2e}, max |Δ sum| {sum:.2e}");
        assert!(sum <= Q4_SUM_TOLERANCE, "sum {sum}");

        for prompt in ["Name three colours.", "What is the capital of France?"] {
            let x = ours.chat(&greedy(prompt)).await.unwrap();
            let y = f32.chat(&greedy(prompt)).await.unwrap();
            assert!(!x.text().is_empty());
            assert_eq!(x.text(), y.text(), "{prompt}");
            assert_eq!(x.usage, y.usage);
        }
        // The chat template came through.
        let messages = [ChatMessage::user("Hi")];
        assert_eq!(ours.render_chat(&messages).unwrap(), q4.render_chat(&messages).unwrap());
    });
}

#[derive(serde::Deserialize)]
struct Texts {
    texts: Vec<Text>,
}

#[derive(serde::Deserialize)]
struct Text {
    name: String,
    text: String,
}

/// Every fixture text gets the same ids from llama.cpp and from our tokenizers:
/// the one built from the GGUF, the `tokenizer.json` written next to the
/// transformers weights, and llama.cpp on the round-trip GGUF (whose
/// `tokenizer.ggml.*` came from that tokenizer.json).
#[test]
fn tokenizers_match_llama_cpp_token_for_token() {
    let Some(q4) = model_or_skip("tokenizers_match_llama_cpp_token_for_token") else { return };
    let _serial = serial();
    let rt = round_trip(&q4);
    let texts: Texts = serde_json::from_str(include_str!("fixtures/tokenizer_texts.json")).unwrap();
    assert!(texts.texts.len() >= 30);
    let llama = LlamaBackend::load(&q4, options(false)).unwrap();
    let llama_rt = LlamaBackend::load(&rt.gguf, options(false)).unwrap();
    let from_gguf = sagert_convert::tokenizer_from_gguf(&q4).unwrap();
    let from_dir = sagert_convert::load_tokenizer(&rt.hf).unwrap();
    let mut all: Vec<(String, String)> = texts.texts.into_iter().map(|t| (t.name, t.text)).collect();
    // And the chat template's own output, rendered now.
    let rendered = llama
        .render_chat(&[ChatMessage::system("Be brief."), ChatMessage::user("Tell me a joke 😀 in 日本語.")])
        .unwrap();
    all.push(("rendered_now".into(), rendered));
    let mut failures = Vec::new();
    for (name, text) in &all {
        let want = llama.tokenize(text);
        assert!(!want.is_empty(), "{name}");
        for (which, tok) in [("gguf", &from_gguf), ("tokenizer.json", &from_dir)] {
            let got = tok.encode(text.as_str(), true).unwrap().get_ids().to_vec();
            if got != want {
                failures.push(format!("{name} ({which}): llama.cpp {want:?}\n  ours {got:?}"));
            }
        }
        let back = llama_rt.tokenize(text);
        if back != want {
            failures.push(format!("{name} (round-trip GGUF): {want:?}\n  {back:?}"));
        }
        // Decoding gives the text back (specials included).
        let ids = from_gguf.encode(text.as_str(), true).unwrap().get_ids().to_vec();
        assert_eq!(from_gguf.decode(&ids, false).unwrap(), *text, "{name}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} texts differ:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn q8_0_conversion_loads_and_scores_close_to_f32() {
    let Some(q4) = model_or_skip("q8_0_conversion_loads_and_scores_close_to_f32") else { return };
    let _serial = serial();
    let rt = round_trip(&q4);
    let out = rt.gguf.with_file_name("smollm2-rt.q8_0.gguf");
    let t = Instant::now();
    sagert_convert::hf_to_gguf(&rt.hf, &out, GgufDtype::Q8_0, &Options::default()).unwrap();
    eprintln!("hf -> gguf (q8_0): {:.1}s", t.elapsed().as_secs_f64());
    assert!(std::fs::metadata(&out).unwrap().len() < std::fs::metadata(&rt.gguf).unwrap().len() / 3);
    runtime().block_on(async {
        let q8 = LlamaBackend::load(&out, options(true)).unwrap();
        let f32 = LlamaBackend::load(&rt.gguf, options(true)).unwrap();
        let (token, sum) =
            deltas(&q8.score_text(&pairs()).await.unwrap(), &f32.score_text(&pairs()).await.unwrap());
        eprintln!("Q8_0 vs F32: max |Δ token| {token:.2e}, max |Δ sum| {sum:.2e}");
        assert!(sum <= Q4_SUM_TOLERANCE, "sum {sum}");
    });
}

#[test]
fn an_unsupported_architecture_is_named_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, r#"{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}"#).unwrap();
    let err = sagert_convert::hf_to_gguf(
        dir.path(),
        &dir.path().join("out.gguf"),
        GgufDtype::F32,
        &Options::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains(&config.display().to_string()), "{err}");
    assert!(err.contains("GPT2LMHeadModel"), "{err}");
    assert!(!dir.path().join("out.gguf").exists());

    // A GGUF-looking file that is not one.
    let bogus = dir.path().join("bogus.gguf");
    std::fs::write(&bogus, b"not a gguf").unwrap();
    let err = sagert_convert::tokenizer_from_gguf(&bogus).unwrap_err().to_string();
    assert!(err.contains("bogus.gguf"), "{err}");
}

#[test]
fn the_cache_key_follows_the_directory_contents() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    std::fs::write(dir.path().join("model.safetensors"), b"12345678").unwrap();
    let a = sagert_convert::source_key(dir.path()).unwrap();
    assert_eq!(a, sagert_convert::source_key(dir.path()).unwrap());
    std::fs::write(dir.path().join("config.json"), "{ }").unwrap();
    let b = sagert_convert::source_key(dir.path()).unwrap();
    assert_ne!(a, b);
    std::fs::write(dir.path().join("model.safetensors"), b"123456789").unwrap();
    assert_ne!(b, sagert_convert::source_key(dir.path()).unwrap());
    assert!(sagert_convert::is_hf_model_dir(dir.path()));
}
