//! Behaviour tests of constrained decoding (`sagert_llama::constrained`) on the
//! vocabulary of SmolLM2-135M-Instruct (Q4_1): masks against texts tokenized by
//! llama.cpp, forbidden tokens, and random sampling through our sampler whose
//! every finished output must parse and fit its schema.
//!
//! The model file comes from `scripts/fetch-models`. When it is missing the
//! tests print why and pass, except under `CI=true`, where they fail. Only the
//! vocabulary is loaded (no weights), once for the binary; no forward pass runs.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use llama_cpp_2::llama_backend::LlamaBackend as LlamaRuntime;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use sagert_backend::json::validate;
use sagert_llama::sampler::{Rng, Sampler, SamplerConfig};
use sagert_llama::{Grammars, LlamaError, Matcher};
use serde_json::{json, Value};

/// The model's path, or `None` (after saying why) when the test must skip.
fn model_or_skip(test: &str) -> Option<PathBuf> {
    sagert_models::testing::model_or_skip(test, "smollm2-135m-instruct")
}

/// The model's vocabulary and its grammars, loaded once for this binary (this
/// binary owns llama.cpp's one-per-process initialisation).
struct Fixture {
    model: Arc<LlamaModel>,
    grammars: Grammars,
}

fn fixture(test: &str) -> Option<&'static Fixture> {
    let path = model_or_skip(test)?;
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    static RUNTIME: OnceLock<LlamaRuntime> = OnceLock::new();
    Some(FIXTURE.get_or_init(|| {
        let runtime = RUNTIME.get_or_init(|| {
            let mut runtime = LlamaRuntime::init().expect("llama.cpp initialises");
            runtime.void_logs();
            runtime
        });
        let params = LlamaModelParams::default().with_vocab_only(true);
        let model = Arc::new(LlamaModel::load_from_file(runtime, path, &params).expect("vocabulary loads"));
        let grammars = Grammars::new(Arc::clone(&model)).expect("grammars build");
        Fixture { model, grammars }
    }))
}

impl Fixture {
    fn tokenize(&self, text: &str) -> Vec<u32> {
        self.model.vocab().tokenize(text.as_bytes(), false, false).into_iter().map(|t| t.0 as u32).collect()
    }

    fn piece(&self, token: u32) -> Vec<u8> {
        self.model.vocab().token_to_piece(LlamaToken(token as i32), false, None)
    }

    /// The single token llama.cpp makes of `text`.
    fn token(&self, text: &str) -> u32 {
        let tokens = self.tokenize(text);
        assert_eq!(tokens.len(), 1, "{text:?} is one token");
        tokens[0]
    }

    fn vocab_size(&self) -> usize {
        self.model.vocab().n_tokens() as usize
    }

    fn is_eog(&self, token: u32) -> bool {
        self.model.vocab().is_eog(LlamaToken(token as i32))
    }

    fn matcher(&self, schema: &Value) -> Matcher {
        self.grammars.json_schema(schema).expect("schema compiles")
    }
}

/// The logits `mask_logits` leaves of an all-zero row.
fn mask(matcher: &mut Matcher, vocab: usize) -> Vec<f32> {
    let mut logits = vec![0.0; vocab];
    matcher.mask_logits(&mut logits).expect("mask computes");
    logits
}

/// Feed `tokens` through the matcher, each checked against the mask first;
/// returns the index of the first token the mask forbids.
fn drive(f: &Fixture, matcher: &mut Matcher, tokens: &[u32]) -> Result<(), usize> {
    for (i, &t) in tokens.iter().enumerate() {
        if mask(matcher, f.vocab_size())[t as usize] == f32::NEG_INFINITY {
            return Err(i);
        }
        matcher.consume(t).expect("an allowed token is consumed");
    }
    Ok(())
}

/// Whether llama.cpp's tokens of `text` are allowed all the way and leave a
/// complete value (an end-of-generation token allowed).
fn accepts(f: &Fixture, schema: &Value, text: &str) -> bool {
    let mut m = f.matcher(schema);
    let tokens = f.tokenize(text);
    if drive(f, &mut m, &tokens).is_err() {
        return false;
    }
    let eos = f.grammars.eos_tokens()[0];
    m.is_finished() || mask(&mut m, f.vocab_size())[eos as usize].is_finite()
}

const QUERIES: &str = r#"{"type":"object","properties":{"queries":{"type":"array","items":{"type":"string"}}},"required":["queries"]}"#;

#[test]
fn grammars_and_matchers_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Grammars>();
    send::<Matcher>();
}

#[test]
fn eos_tokens_are_special_and_allowed_only_at_the_end() {
    let Some(f) = fixture("eos_tokens_are_special_and_allowed_only_at_the_end") else { return };
    let eos = f.grammars.eos_tokens();
    assert!(!eos.is_empty());
    assert_eq!(eos[0], f.model.vocab().eos().0 as u32, "the model's own EOS comes first");
    // SmolLM2's chat turns end with <|im_end|>: it must end a constrained choice.
    let im_end = f.model.vocab().tokenize(b"<|im_end|>", false, true)[0].0 as u32;
    assert!(eos.contains(&im_end), "<|im_end|> ({im_end}) among {eos:?}");
    for &t in eos {
        assert!(f.is_eog(t), "{t} is an end-of-generation token");
        assert_eq!(f.grammars.token_bytes(t)[0], 0xFF, "{t} is special in the trie");
    }
    // <|im_start|> is a control token that does not end generation: special, never allowed.
    let im_start = f.model.vocab().tokenize(b"<|im_start|>", false, true)[0].0 as u32;
    assert!(!f.is_eog(im_start));
    assert_eq!(f.grammars.token_bytes(im_start)[0], 0xFF);

    let mut m = f.matcher(&serde_json::from_str(QUERIES).unwrap());
    let row = mask(&mut m, f.vocab_size());
    for &t in eos.iter().chain([&im_start]) {
        assert_eq!(row[t as usize], f32::NEG_INFINITY, "token {t} at the start");
    }
}

#[test]
fn valid_json_tokenized_by_llama_cpp_passes_every_mask() {
    let Some(f) = fixture("valid_json_tokenized_by_llama_cpp_passes_every_mask") else { return };
    let schema: Value = serde_json::from_str(QUERIES).unwrap();
    for text in [
        r#"{"queries":["how to bake bread","best pizza in town"]}"#,
        r#"{"queries": ["a \"quoted\" word", "naïve café ☕"]}"#,
        "{\n  \"queries\": []\n}",
    ] {
        let mut m = f.matcher(&schema);
        let tokens = f.tokenize(text);
        if let Err(i) = drive(f, &mut m, &tokens) {
            let done =
                String::from_utf8_lossy(&tokens[..i].iter().flat_map(|&t| f.piece(t)).collect::<Vec<_>>())
                    .into_owned();
            panic!(
                "{text:?}: token {i} ({:?}) forbidden after {done:?}",
                String::from_utf8_lossy(&f.piece(tokens[i]))
            );
        }
        // Nothing may follow the closing brace (no trailing whitespace): the
        // matcher is finished and its mask holds the end-of-generation tokens only.
        assert!(m.is_finished(), "{text:?}: finished at the closing brace");
        let eos = f.grammars.eos_tokens();
        let row = mask(&mut m, f.vocab_size());
        let allowed: Vec<u32> = (0..row.len() as u32).filter(|&t| row[t as usize].is_finite()).collect();
        let mut expected = eos.to_vec();
        expected.sort_unstable();
        assert_eq!(allowed, expected, "{text:?}: only EOS after the end");
        m.consume(eos[0]).unwrap();
        assert!(m.is_finished(), "{text:?}: finished after EOS");
    }
}

#[test]
fn tokens_that_break_the_json_are_masked() {
    let Some(f) = fixture("tokens_that_break_the_json_are_masked") else { return };
    let schema: Value = serde_json::from_str(QUERIES).unwrap();
    let mut m = f.matcher(&schema);
    let row = mask(&mut m, f.vocab_size());
    for text in ["hello", "[", "1", "\"", "}"] {
        assert_eq!(row[f.token(text) as usize], f32::NEG_INFINITY, "{text:?} at the start");
    }
    assert!(row[f.token("{") as usize].is_finite());
    // Masked rows are -inf, allowed rows keep their logits.
    let mut logits: Vec<f32> = (0..f.vocab_size()).map(|i| (i % 7) as f32).collect();
    m.mask_logits(&mut logits).unwrap();
    let brace = f.token("{") as usize;
    assert_eq!(logits[brace], (brace % 7) as f32);

    // Inside the array a number or a nested object does not fit.
    let mut m = f.matcher(&schema);
    drive(f, &mut m, &f.tokenize(r#"{"queries": ["#)).unwrap();
    let row = mask(&mut m, f.vocab_size());
    for text in ["1", "{", "true", "hello"] {
        assert_eq!(row[f.token(text) as usize], f32::NEG_INFINITY, "{text:?} inside the array");
    }
    assert!(row[f.token("\"") as usize].is_finite());

    // A forbidden token consumed anyway is an error, not a panic.
    let mut m = f.matcher(&schema);
    let e = m.consume(f.token("hello")).unwrap_err();
    assert!(matches!(e, LlamaError::Constraint(_)), "{e}");
    // Logits past the vocabulary are masked; too few logits are an error.
    let mut m = f.matcher(&schema);
    let mut long = vec![0.0; f.vocab_size() + 64];
    m.mask_logits(&mut long).unwrap();
    assert!(long[f.vocab_size()..].iter().all(|l| *l == f32::NEG_INFINITY));
    let e = m.mask_logits(&mut [0.0; 10]).unwrap_err();
    assert!(e.to_string().contains("10 logits"), "{e}");
}

#[test]
fn enums_bounded_integers_nested_objects_and_closed_objects() {
    let Some(f) = fixture("enums_bounded_integers_nested_objects_and_closed_objects") else { return };
    let schema = json!({
        "type": "object",
        "properties": {
            "level": {"enum": ["low", "medium", "high"]},
            "count": {"type": "integer", "minimum": 10},
            "author": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "verified": {"type": "boolean"}},
                "required": ["name", "verified"],
                "additionalProperties": false
            }
        },
        "required": ["level", "count", "author"],
        "additionalProperties": false
    });
    let good = r#"{"level": "medium", "count": 12, "author": {"name": "Ada", "verified": true}}"#;
    assert!(accepts(f, &schema, good), "{good}");
    for bad in [
        // Not one of the enum's values.
        r#"{"level": "extreme", "count": 12, "author": {"name": "Ada", "verified": true}}"#,
        // Below the minimum, and not an integer.
        r#"{"level": "low", "count": 9, "author": {"name": "Ada", "verified": true}}"#,
        r#"{"level": "low", "count": -12, "author": {"name": "Ada", "verified": true}}"#,
        r#"{"level": "low", "count": 12.5, "author": {"name": "Ada", "verified": true}}"#,
        // The nested object misses a required property or has an extra one.
        r#"{"level": "low", "count": 12, "author": {"name": "Ada"}}"#,
        r#"{"level": "low", "count": 12, "author": {"name": "Ada", "verified": true, "age": 3}}"#,
        // An extra top-level property.
        r#"{"level": "low", "count": 12, "author": {"name": "Ada", "verified": true}, "x": 1}"#,
        // Not JSON.
        r#"{"level": "low", "count": 12, "author": {"name": "Ada", "verified": yes}}"#,
    ] {
        assert!(!accepts(f, &schema, bad), "accepted {bad}");
        assert!(validate(&serde_json::from_str(bad).unwrap_or(Value::Null), &schema).is_err(), "{bad}");
    }
    // At the enum's value only its first tokens fit.
    let mut m = f.matcher(&schema);
    drive(f, &mut m, &f.tokenize(r#"{"level": ""#)).unwrap();
    let row = mask(&mut m, f.vocab_size());
    assert!(row[f.token("low") as usize].is_finite());
    assert_eq!(row[f.token("hello") as usize], f32::NEG_INFINITY);
}

#[test]
fn invalid_schemas_are_rejected_with_the_reason() {
    let Some(f) = fixture("invalid_schemas_are_rejected_with_the_reason") else { return };
    let cases = [
        (json!(42), "must be a JSON object"),
        (json!(false), "admits no value"),
        (json!({"type": "integer", "minimum": 5, "maximum": 1}), "nsatisfiable"),
        (json!({"type": "strnig"}), "strnig"),
        (json!({"$ref": "https://example.com/schema.json"}), "example.com"),
    ];
    for (schema, needle) in cases {
        match f.grammars.json_schema(&schema) {
            Err(LlamaError::Invalid(message)) => {
                assert!(message.contains(needle), "{schema}: {message}");
                assert!(message.contains("json schema"), "{message}");
            }
            Err(other) => panic!("{schema}: expected Invalid, got {other}"),
            Ok(_) => panic!("{schema}: accepted"),
        }
    }
    // `true` and the empty schema are any JSON.
    assert!(accepts(f, &json!(true), r#"[1, "two", {"three": null}]"#));
    assert!(accepts(f, &json!({}), "3.5"));
}

/// Sample with random logits (a different row at every step) through our
/// sampler, masked by the matcher, until it ends or `max_tokens`.
fn sample_random(
    f: &Fixture,
    matcher: &mut Matcher,
    config: SamplerConfig,
    seed: u64,
    max_tokens: usize,
) -> (Vec<u8>, bool) {
    let mut sampler = Sampler::new(config, Rng::new(seed, 0));
    let mut noise = Rng::new(seed, 1);
    let mut text = Vec::new();
    let mut logits = vec![0.0; f.vocab_size()];
    for _ in 0..max_tokens {
        for l in logits.iter_mut() {
            *l = (noise.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 8.0;
        }
        matcher.mask_logits(&mut logits).unwrap();
        let token = sampler.sample(&logits, &[]);
        assert!(logits[token as usize].is_finite(), "the sampler drew masked token {token}");
        if f.is_eog(token) {
            return (text, true);
        }
        matcher.consume(token).unwrap();
        text.extend(f.piece(token));
        if matcher.is_finished() {
            return (text, true);
        }
    }
    (text, false)
}

#[test]
fn random_sampling_under_the_mask_always_yields_valid_json() {
    let Some(f) = fixture("random_sampling_under_the_mask_always_yields_valid_json") else { return };
    // Bounded strings and arrays, so that random logits finish in 200 tokens.
    let schema = json!({
        "type": "object",
        "properties": {
            "queries": {"type": "array", "items": {"type": "string", "maxLength": 6}, "minItems": 1, "maxItems": 3},
            "level": {"enum": ["low", "medium", "high"]},
            "count": {"type": "integer", "minimum": 10, "maximum": 999},
            "meta": {
                "type": "object",
                "properties": {"ok": {"type": "boolean"}, "note": {"type": ["string", "null"], "maxLength": 4}},
                "required": ["ok"],
                "additionalProperties": false
            }
        },
        "required": ["queries", "level", "count", "meta"],
        "additionalProperties": false
    });
    let runs = 40;
    let mut finished = 0;
    for seed in 0..runs {
        let mut m = f.matcher(&schema);
        // Mostly tempered sampling with top-p; every fourth run greedy, whose
        // argmax must skip the -inf of masked tokens too.
        let config = match seed % 4 {
            0 => SamplerConfig { temperature: 0.0, ..SamplerConfig::default() },
            1 => SamplerConfig { top_p: 0.9, top_k: 50, ..SamplerConfig::default() },
            _ => SamplerConfig::default(),
        };
        let (bytes, done) = sample_random(f, &mut m, config, seed, 200);
        if !done {
            continue;
        }
        finished += 1;
        let text = String::from_utf8(bytes).unwrap_or_else(|e| panic!("seed {seed}: not UTF-8: {e}"));
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("seed {seed}: {text:?} does not parse: {e}"));
        if let Err(v) = validate(&value, &schema) {
            panic!("seed {seed}: {text:?} breaks the schema: {v}");
        }
    }
    assert!(finished >= runs * 3 / 4, "only {finished} of {runs} random runs finished in 200 tokens");
}
