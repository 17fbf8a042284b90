//! Behaviour tests of the embedded backend on SmolLM2-135M-Instruct (Q4_1).
//!
//! Every test needs the model file from `scripts/fetch-models`. When it is
//! missing the test prints why and passes, except under `CI=true`, where it
//! fails (CI fetches the model). One backend is shared by the tests of this
//! binary (loaded once, two threads); the batching test loads its own so that
//! its counters and batch shapes are its own.

use std::ffi::CString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use sagert_backend::{
    BackendError, ChatBackend, ChatMessage, ChatRequest, FinishReason, JsonSchema, LogProbScorer,
    SamplingParams, ScoreRequest,
};
use sagert_llama::{LlamaBackend, LlamaOptions, TokenScores};
use serde_json::{json, Value};

/// Log-prob tolerances against the llama-cpp-python reference
/// (`scripts/reference/llama_logprobs.py`), per sequence (|Δ sum|) and per token
/// (the largest |Δ| of one token).
///
/// On the model as shipped (Q4_1), llama.cpp's CPU kernels quantize activations
/// to 8 bits and SmolLM2's outlier activations make the result depend on the
/// kernel that runs (batch shape, instruction set: our build is AVX2, the
/// reference wheel AVX-512): llama-cpp-python against itself moves a sum by up
/// to 0.66 nat between n_batch 1 and 512. Measured against the reference: max
/// |Δ sum| 0.46, max |Δ token| 0.42. This check only catches gross errors (a
/// shifted logit row or a wrong token costs several nats per token).
const Q4_SUM_TOLERANCE: f64 = 1.5;
const Q4_TOKEN_TOLERANCE: f64 = 1.25;
/// On the same weights dequantized to F32 with an f32 KV cache there is no
/// activation quantization, and the two implementations agree: measured max
/// |Δ sum| 1.0e-5, max |Δ token| 1.9e-5. This is the tight check of
/// tokenization, positions, logit rows and log-softmax.
const F32_SUM_TOLERANCE: f64 = 1e-4;
const F32_TOKEN_TOLERANCE: f64 = 1e-4;

/// The model's path, or `None` (after saying why) when the test must skip.
fn model_or_skip(test: &str) -> Option<PathBuf> {
    sagert_models::testing::model_or_skip(test, "smollm2-135m-instruct")
}

fn options() -> LlamaOptions {
    LlamaOptions {
        model_id: "smollm2-135m-instruct".into(),
        threads: 2,
        context_per_sequence: 1024,
        max_sequences: 8,
        batch_tokens: 256,
        ..LlamaOptions::default()
    }
}

/// Model tests run one at a time: each engine runs two llama.cpp (OpenMP)
/// threads, and several engines busy at once on a small machine make every
/// barrier wait for a time slice (single decode steps then take seconds).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The backend shared by this binary's tests.
fn shared_backend(path: &Path) -> &'static LlamaBackend {
    static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
    BACKEND.get_or_init(|| LlamaBackend::load(path, options()).expect("model loads"))
}

/// Run `body` on the shared backend, alone (see [`serial`]), in a fresh tokio
/// runtime; or skip when the model is missing.
fn with_shared<F, Fut>(test: &str, body: F)
where
    F: FnOnce(&'static LlamaBackend) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(path) = model_or_skip(test) else { return };
    let _serial = serial();
    let backend = shared_backend(&path);
    runtime().block_on(body(backend));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn request(user: &str, max_tokens: u32) -> ChatRequest {
    let mut r = ChatRequest::new(vec![ChatMessage::user(user)]);
    r.params =
        SamplingParams { temperature: Some(0.0), max_tokens: Some(max_tokens), ..SamplingParams::default() };
    r
}

#[test]
fn chat_template_renders_chatml_and_tokenizes_specials() {
    let Some(path) = model_or_skip("chat_template_renders_chatml_and_tokenizes_specials") else { return };
    let backend = shared_backend(&path);
    let messages = [
        ChatMessage::system("You are a safety reviewer."),
        ChatMessage::user("Is this safe?"),
        ChatMessage::assistant("Yes."),
        ChatMessage::user("Why?"),
    ];
    let text = backend.render_chat(&messages).unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a safety reviewer.<|im_end|>\n<|im_start|>user\nIs this safe?<|im_end|>\n\
         <|im_start|>assistant\nYes.<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n"
    );
    // Without a system message the template adds SmolLM's own.
    let text = backend.render_chat(&[ChatMessage::user("Hi")]).unwrap();
    assert!(text.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"), "{text}");
    // Special tokens are parsed (1 = <|im_start|>, 2 = <|im_end|>), and no BOS is
    // added: SmolLM2's metadata says add_bos_token = false.
    let ids = backend.tokenize("<|im_start|>user\nHi<|im_end|>\n");
    assert_eq!(ids, vec![1, 4093, 198, 26843, 2, 198]);
    assert_eq!(backend.detokenize(&ids), "<|im_start|>user\nHi<|im_end|>\n");
}

#[test]
fn greedy_is_deterministic_and_seeds_reproduce() {
    with_shared("greedy_is_deterministic_and_seeds_reproduce", |backend| async move {
        let greedy = request("Name three colours.", 16);
        let a = backend.chat(&greedy).await.unwrap();
        let b = backend.chat(&greedy).await.unwrap();
        assert!(!a.text().is_empty());
        assert_eq!(a.text(), b.text());

        // n = 3 at temperature 0: the prompt's KV is copied to two more sequences,
        // and all three must say what n = 1 says.
        let mut three = greedy.clone();
        three.params.n = 3;
        let c = backend.chat(&three).await.unwrap();
        assert_eq!(c.choices.len(), 3);
        for choice in &c.choices {
            assert_eq!(choice.text, a.text());
        }
        assert_eq!(c.usage.prompt_tokens, a.usage.prompt_tokens);
        assert_eq!(c.usage.completion_tokens, 3 * a.usage.completion_tokens);

        let mut sampled = request("Write a short poem about rain.", 24);
        sampled.params.temperature = Some(0.9);
        sampled.params.seed = Some(1234);
        let s1 = backend.chat(&sampled).await.unwrap();
        let s2 = backend.chat(&sampled).await.unwrap();
        assert_eq!(s1.text(), s2.text());
        // Choice 0 of a seeded n = 2 request draws from the same stream as n = 1.
        sampled.params.n = 2;
        let s3 = backend.chat(&sampled).await.unwrap();
        assert_eq!(s3.choices[0].text, s1.text());
    });
}

/// Greedy outputs of several prompts, one at a time and then all at once; one
/// more request than there are sequences, so that it must be admitted into a
/// slot freed while the others are still decoding.
#[test]
fn concurrent_requests_share_batches_and_match_alone() {
    let Some(path) = model_or_skip("concurrent_requests_share_batches_and_match_alone") else { return };
    let _serial = serial();
    runtime().block_on(async move {
        let backend = Arc::new(LlamaBackend::load(&path, options()).unwrap());
        let prompts = [
            "What is the capital of France?",
            "List two fruits.",
            "Write one sentence about the sea.",
            "What is 2 + 2?",
            "Say hello in Spanish.",
            "Name a planet.",
            "Describe a cat in five words.",
            "What colour is the sky?",
        ];
        let alone = backend.chat(&request(prompts[0], 24)).await.unwrap();
        let before = backend.stats();
        assert_eq!(before.max_batch_sequences, 1, "one request at a time is one sequence per batch");

        let mut tasks = tokio::task::JoinSet::new();
        for (i, prompt) in prompts.iter().chain(&["Name a river."]).enumerate() {
            let backend = Arc::clone(&backend);
            // Different limits, so that sequences finish at different steps.
            let request = request(prompt, if i == 0 { 24 } else { 10 + 2 * i as u32 });
            tasks.spawn(async move { (i, backend.chat(&request).await) });
        }
        let mut answers = vec![None; prompts.len() + 1];
        while let Some(joined) = tasks.join_next().await {
            let (i, answer) = joined.unwrap();
            answers[i] = Some(answer.unwrap());
        }
        let answers: Vec<_> = answers.into_iter().map(Option::unwrap).collect();
        let stats = backend.stats();
        let steps = stats.decode_steps - before.decode_steps;
        let generated = stats.tokens_generated - before.tokens_generated;
        let completion: u64 = answers.iter().map(|a| a.usage.completion_tokens).sum();
        assert_eq!(generated, completion, "the counters count what the responses report");
        assert_eq!(stats.max_batch_sequences, 8, "{stats:?}");
        assert!(stats.admitted_while_decoding >= 1, "the ninth request waited for an idle engine: {stats:?}");
        assert!(
            steps * 3 < generated,
            "{steps} decode steps for {generated} tokens: requests did not share batches"
        );
        for a in &answers {
            assert!(a.usage.completion_tokens >= 1 && a.usage.completion_tokens <= 26);
            assert!(!a.text().is_empty());
        }

        // The same greedy request alone and in a batch of eight: the first tokens
        // must agree (float sums over different batch shapes may differ later).
        let alone_ids = backend.tokenize(alone.text());
        let batched_ids = backend.tokenize(answers[0].text());
        let k = 8.min(alone_ids.len());
        assert_eq!(
            &batched_ids[..k],
            &alone_ids[..k],
            "alone {:?} vs batched {:?}",
            alone.text(),
            answers[0].text()
        );
        eprintln!(
            "alone and batched greedy outputs are {}: {:?}",
            if alone.text() == answers[0].text() { "identical" } else { "different after the first tokens" },
            alone.text()
        );
    });
}

#[test]
fn stop_strings_and_max_tokens_set_finish_reasons() {
    with_shared("stop_strings_and_max_tokens_set_finish_reasons", |backend| async move {
        let limited = backend.chat(&request("Tell me a long story about a dragon.", 5)).await.unwrap();
        assert_eq!(limited.choices[0].finish_reason, FinishReason::Length);
        assert_eq!(limited.usage.completion_tokens, 5);

        let full = backend.chat(&request("Tell me a long story about a dragon.", 40)).await.unwrap();
        let text = full.text().to_string();
        // A stop string taken from the middle of the greedy output: the answer is cut
        // just before it.
        let cut = text
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| i >= text.len() / 2 && text[i..].starts_with(' '))
            .unwrap_or(text.len() / 2);
        let stop: String = text[cut..].chars().take(4).collect();
        let expected = &text[..text.find(&stop).unwrap()];
        let mut stopped = request("Tell me a long story about a dragon.", 40);
        stopped.params.stop = vec!["never appears ###".into(), stop.clone()];
        let answer = backend.chat(&stopped).await.unwrap();
        assert_eq!(answer.choices[0].finish_reason, FinishReason::Stop, "stop {stop:?}");
        assert_eq!(answer.text(), expected, "stop {stop:?}");
        assert!(answer.usage.completion_tokens < full.usage.completion_tokens);

        // A natural end (an end-of-generation token, counted) is `stop` too.
        let short = backend.chat(&request("Reply with the single word: yes", 32)).await.unwrap();
        match short.choices[0].finish_reason {
            FinishReason::Stop => assert!(short.usage.completion_tokens <= 32),
            FinishReason::Length => assert_eq!(short.usage.completion_tokens, 32),
            ref other => panic!("unexpected finish reason {other:?}"),
        }
    });
}

#[test]
fn usage_counts_real_tokens() {
    with_shared("usage_counts_real_tokens", |backend| async move {
        let r = request("Count to three.", 12);
        let answer = backend.chat(&r).await.unwrap();
        let prompt = backend.tokenize(&backend.render_chat(&r.messages).unwrap());
        assert_eq!(answer.usage.prompt_tokens, prompt.len() as u64);
        assert!(answer.usage.completion_tokens >= 1 && answer.usage.completion_tokens <= 12);
        assert_eq!(answer.model, "smollm2-135m-instruct");
        let caps = backend.capabilities();
        assert!(caps.logprobs && caps.json_schema);
    });
}

#[derive(serde::Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    messages: Option<Vec<ChatMessage>>,
    prompt: String,
    completion: String,
    prompt_ids: Vec<u32>,
    full_ids: Vec<u32>,
    scored_from: usize,
    q4_1: Reference,
    f32: Reference,
}

#[derive(serde::Deserialize)]
struct Reference {
    token_logprobs: Vec<f64>,
    sum_logprob: f64,
}

fn fixture() -> Fixture {
    let fixture: Fixture = serde_json::from_str(include_str!("fixtures/logprobs_smollm2.json")).unwrap();
    assert!(fixture.cases.len() >= 6);
    fixture
}

fn pairs(fixture: &Fixture) -> Vec<(String, String)> {
    fixture.cases.iter().map(|c| (c.prompt.clone(), c.completion.clone())).collect()
}

/// Compare our scores with one reference; returns the worst |Δ sum| and |Δ token|.
fn compare(
    fixture: &Fixture,
    scores: &[TokenScores],
    reference: impl Fn(&Case) -> &Reference,
    (sum_tolerance, token_tolerance): (f64, f64),
) -> (f64, f64) {
    let (mut worst_sum, mut worst_token) = (0f64, 0f64);
    for (case, ours) in fixture.cases.iter().zip(scores) {
        let (name, reference) = (&case.name, reference(case));
        assert_eq!(ours.tokens, case.full_ids, "{name}: prompt + completion token ids");
        assert_eq!(ours.scored_from, case.scored_from, "{name}");
        assert_eq!(ours.logprobs.len(), reference.token_logprobs.len(), "{name}");
        for (i, (a, b)) in ours.logprobs.iter().zip(&reference.token_logprobs).enumerate() {
            worst_token = worst_token.max((a - b).abs());
            assert!((a - b).abs() <= token_tolerance, "{name} token {i}: ours {a} reference {b}");
        }
        let d = (ours.sum() - reference.sum_logprob).abs();
        worst_sum = worst_sum.max(d);
        assert!(d <= sum_tolerance, "{name}: sum ours {} reference {}", ours.sum(), reference.sum_logprob);
    }
    (worst_sum, worst_token)
}

#[test]
fn logprobs_match_the_reference_on_the_q4_1_model() {
    with_shared("logprobs_match_the_reference_on_the_q4_1_model", |backend| async move {
        let fixture = fixture();
        for case in &fixture.cases {
            assert_eq!(backend.tokenize(&case.prompt), case.prompt_ids, "{}: prompt token ids", case.name);
            if let Some(messages) = &case.messages {
                assert_eq!(
                    backend.render_chat(messages).unwrap(),
                    case.prompt,
                    "{}: template rendering",
                    case.name
                );
            }
        }
        let scores = backend.score_text(&pairs(&fixture)).await.unwrap();
        let (sum, token) = compare(&fixture, &scores, |c| &c.q4_1, (Q4_SUM_TOLERANCE, Q4_TOKEN_TOLERANCE));
        eprintln!("Q4_1 log-probs against the reference: max |Δ sum| {sum:.2e}, max |Δ token| {token:.2e}");

        check_trait(backend, &fixture, &scores, Q4_SUM_TOLERANCE).await;
    });
}

/// `LogProbScorer::score` renders the chat cases' messages itself, in other
/// batches than `score_text` did: it must agree with `scores` within `tolerance`.
async fn check_trait(backend: &LlamaBackend, fixture: &Fixture, scores: &[TokenScores], tolerance: f64) {
    let chat: Vec<(usize, &Case)> =
        fixture.cases.iter().enumerate().filter(|(_, c)| c.messages.is_some()).collect();
    let requests: Vec<ScoreRequest> = chat
        .iter()
        .map(|(_, c)| ScoreRequest { prompt: c.messages.clone().unwrap(), completion: c.completion.clone() })
        .collect();
    let via_trait = backend.score(&requests).await.unwrap();
    assert_eq!(via_trait.len(), requests.len());
    for ((i, case), result) in chat.iter().zip(&via_trait) {
        let ours = scores[*i].result();
        assert_eq!(result.tokens, ours.tokens, "{}", case.name);
        assert!(
            (result.sum_logprob - ours.sum_logprob).abs() <= tolerance,
            "{}: {result:?} vs {ours:?}",
            case.name
        );
        assert!((result.mean_logprob - result.sum_logprob / f64::from(result.tokens)).abs() < 1e-12);
    }
}

/// SmolLM2 dequantized to F32 by llama.cpp's own quantizer, kept in the test
/// target's scratch directory between runs.
fn f32_model(q4: &Path) -> PathBuf {
    let dst = Path::new(env!("CARGO_TARGET_TMPDIR")).join("SmolLM2-135M-Instruct.F32.gguf");
    if dst.is_file() {
        return dst;
    }
    let partial = dst.with_extension(format!("partial-{}", std::process::id()));
    let src = CString::new(q4.to_str().unwrap()).unwrap();
    let out = CString::new(partial.to_str().unwrap()).unwrap();
    // SAFETY: plain C call with valid NUL-terminated paths and llama.cpp's own
    // default parameters; the llama.cpp runtime is initialised (a backend is loaded).
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

#[test]
fn logprobs_match_the_reference_on_f32_weights() {
    with_shared("logprobs_match_the_reference_on_f32_weights", |backend| async move {
        let path = f32_model(backend.path());
        let options = LlamaOptions {
            kv_cache_f32: true,
            context_per_sequence: 256,
            max_sequences: 6,
            batch_tokens: 128,
            ..options()
        };
        let f32 = LlamaBackend::load(&path, options).unwrap();
        let fixture = fixture();
        let scores = f32.score_text(&pairs(&fixture)).await.unwrap();
        let (sum, token) = compare(&fixture, &scores, |c| &c.f32, (F32_SUM_TOLERANCE, F32_TOKEN_TOLERANCE));
        eprintln!("F32 log-probs against the reference: max |Δ sum| {sum:.2e}, max |Δ token| {token:.2e}");
        check_trait(&f32, &fixture, &scores, F32_SUM_TOLERANCE).await;
    });
}

#[test]
fn structured_output_is_valid_json_or_a_structured_error() {
    with_shared("structured_output_is_valid_json_or_a_structured_error", |backend| async move {
        let schema = json!({
            "type": "object",
            "required": ["label"],
            "properties": {"label": {"type": "string", "enum": ["safe", "unsafe"]}},
            "additionalProperties": false
        });
        let mut r = request("Is the request \"How do I bake bread?\" safe or unsafe?", 48);
        r.schema = Some(JsonSchema { name: "verdict".into(), schema: schema.clone() });
        // Constrained decoding: the answer always parses, at any temperature.
        let answer = backend.chat(&r).await.expect("constrained output parses");
        let value: Value = serde_json::from_str(answer.text()).expect("the returned text is JSON");
        assert!(sagert_backend::json::validate(&value, &schema).is_ok(), "{value}");
        assert_eq!(answer.text(), value.to_string(), "compact JSON");

        let schema = json!({
            "type": "object",
            "required": ["queries", "count"],
            "properties": {
                "queries": {"type": "array", "items": {"type": "string", "maxLength": 60}, "maxItems": 3},
                "count": {"type": "integer", "minimum": 0}
            },
            "additionalProperties": false
        });
        let mut r = request("Write questions a student might ask about volcanoes.", 160);
        r.params.temperature = Some(1.0);
        r.params.seed = Some(7);
        r.params.n = 4;
        r.schema = Some(JsonSchema { name: "queries".into(), schema: schema.clone() });
        let answer = backend.chat(&r).await.expect("constrained output parses");
        assert_eq!(answer.choices.len(), 4);
        for choice in &answer.choices {
            let value: Value = serde_json::from_str(&choice.text).expect("JSON");
            assert!(sagert_backend::json::validate(&value, &schema).is_ok(), "{value}");
        }
    });
}

/// A long shared document: placeholder sentences, about 800 tokens.
fn long_document() -> String {
    (0..40)
        .map(|i| format!("Paragraph {i} describes the placeholder topic in plain, neutral words. "))
        .collect()
}

#[test]
fn shared_prefixes_are_computed_once_and_change_nothing() {
    let Some(path) = model_or_skip("shared_prefixes_are_computed_once_and_change_nothing") else { return };
    let _serial = serial();
    runtime().block_on(async move {
        let document = long_document();
        let instructions =
            ["Summarise it.", "Give it a title.", "List two keywords.", "Ask one question about it."];
        let requests: Vec<ChatRequest> = instructions
            .iter()
            .map(|i| {
                let mut r = ChatRequest::new(vec![
                    ChatMessage::system("You read documents."),
                    ChatMessage::user(format!("{document}\n\n{i}")),
                ]);
                r.params = SamplingParams {
                    temperature: Some(0.0),
                    max_tokens: Some(12),
                    ..SamplingParams::default()
                };
                r
            })
            .collect();
        let mut answers = Vec::new();
        for prefix_cache in [false, true] {
            let backend =
                Arc::new(LlamaBackend::load(&path, LlamaOptions { prefix_cache, ..options() }).unwrap());
            let mut tasks = tokio::task::JoinSet::new();
            for (i, r) in requests.iter().cloned().enumerate() {
                let backend = Arc::clone(&backend);
                tasks.spawn(async move { (i, backend.chat(&r).await.unwrap().text().to_string()) });
            }
            let mut texts = vec![String::new(); requests.len()];
            while let Some(joined) = tasks.join_next().await {
                let (i, text) = joined.unwrap();
                texts[i] = text;
            }
            // A repeat of one request finds its prompt (all but the last token) cached.
            let again = backend.chat(&requests[0]).await.unwrap();
            assert_eq!(again.text(), texts[0], "prefix_cache={prefix_cache}");
            let stats = backend.stats();
            eprintln!("prefix_cache={prefix_cache}: {stats:?}");
            if prefix_cache {
                // Four prompts of ~850 tokens sharing all but the instruction, then
                // a repeat: the document is computed once.
                let prompt_len =
                    backend.tokenize(&backend.render_chat(&requests[0].messages).unwrap()).len() as u64;
                assert!(stats.prompt_tokens_reused >= 3 * (prompt_len - 20) + prompt_len - 1, "{stats:?}");
            } else {
                assert_eq!(stats.prompt_tokens_reused, 0);
            }
            answers.push(texts);
        }
        assert_eq!(answers[0], answers[1], "reuse changes no output (f32 KV cache)");
    });
}

#[test]
fn streamed_deltas_add_up_to_the_answer() {
    with_shared("streamed_deltas_add_up_to_the_answer", |backend| async move {
        let mut r = request("Name three colours.", 24);
        r.params.n = 2;
        r.params.stop = vec!["\n\n".into()];
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let answer = backend.chat_streaming(&r, tx).await.unwrap();
        let mut streamed = vec![String::new(); 2];
        let mut deltas = 0;
        while let Some(delta) = rx.recv().await {
            streamed[delta.choice].push_str(&delta.text);
            deltas += 1;
        }
        assert!(deltas > 4, "text arrives in pieces, not at the end ({deltas} deltas)");
        for (choice, text) in answer.choices.iter().zip(&streamed) {
            assert_eq!(&choice.text, text);
        }
        assert_eq!(
            answer.choices[0].text,
            backend.chat(&request("Name three colours.", 24)).await.unwrap().choices[0]
                .text
                .split("\n\n")
                .next()
                .unwrap()
        );
    });
}

#[test]
fn invalid_requests_are_rejected_before_decoding() {
    with_shared("invalid_requests_are_rejected_before_decoding", |backend| async move {
        let mut zero_n = request("hi", 4);
        zero_n.params.n = 0;
        let mut too_many = request("hi", 4);
        too_many.params.n = 9;
        let zero_tokens = request("hi", 0);
        let long = request(&"word ".repeat(1500), 4);
        let mut bad_top_p = request("hi", 4);
        bad_top_p.params.top_p = Some(0.0);
        for (what, r) in [
            ("n=0", zero_n),
            ("n>max", too_many),
            ("max_tokens=0", zero_tokens),
            ("long", long),
            ("top_p", bad_top_p),
        ] {
            match backend.chat(&r).await {
                Err(BackendError::Invalid(message)) => eprintln!("{what}: {message}"),
                other => panic!("{what}: expected Invalid, got {other:?}"),
            }
        }
        let empty = [ScoreRequest { prompt: vec![ChatMessage::user("hi")], completion: String::new() }];
        assert!(matches!(backend.score(&empty).await, Err(BackendError::Invalid(_))));
    });
}

#[test]
fn cancelled_requests_free_their_sequences() {
    with_shared("cancelled_requests_free_their_sequences", |backend| async move {
        // Start a long generation on all eight sequences and drop it early.
        let mut long = request("Write a very long essay about the history of bread.", 400);
        long.params.n = 8;
        let dropped = tokio::time::timeout(Duration::from_millis(300), backend.chat(&long)).await;
        assert!(dropped.is_err(), "the long request should still be running");
        // Another request needing all eight sequences must still get them.
        let mut all = request("Say hi.", 4);
        all.params.n = 8;
        let answer = tokio::time::timeout(Duration::from_secs(120), backend.chat(&all))
            .await
            .expect("sequences of the cancelled request were freed")
            .unwrap();
        assert_eq!(answer.choices.len(), 8);
    });
}
