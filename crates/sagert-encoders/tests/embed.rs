//! Behaviour tests of the MiniLM sentence embedder.
//!
//! The reference vectors and token ids in `fixtures/embed_minilm.json` come
//! from sentence-transformers (`scripts/reference/minilm_reference.py`). Tests
//! that need the model skip, with a printed reason, when it is not in the
//! cache, except under `CI=true`, where a missing model fails them (CI fetches
//! it with `scripts/fetch-models minilm-l6`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sagert_encoders::embed::{cosine, EmbedError, EmbedOptions, Embedder};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    max_seq_length: usize,
    dim: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    token_ids: Vec<u32>,
    vector: Vec<f32>,
}

fn fixture() -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embed_minilm.json");
    let text = std::fs::read_to_string(&path).expect("read the fixture");
    serde_json::from_str(&text).expect("parse the fixture")
}

fn model_dir() -> PathBuf {
    let cache = std::env::var_os("SAGERT_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/sagert"));
    cache.join("models/minilm-l6")
}

const OPTIONS: EmbedOptions = EmbedOptions { threads: 2, batch_size: 4 };

/// The embedder shared by this binary's tests, or `None` (with the reason
/// printed) when the model is not in the cache and this is not CI.
fn embedder() -> Option<&'static Embedder> {
    static EMBEDDER: OnceLock<Option<Embedder>> = OnceLock::new();
    EMBEDDER
        .get_or_init(|| {
            let dir = model_dir();
            if !dir.join("model.safetensors").is_file() {
                let reason = format!(
                    "the MiniLM model is not in {} (run scripts/fetch-models minilm-l6)",
                    dir.display()
                );
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("{reason}; CI must fetch it");
                }
                return None;
            }
            Some(Embedder::load(&dir, OPTIONS).expect("load the MiniLM model"))
        })
        .as_ref()
        .or_else(|| {
            // Straight to stderr, past the test harness's capture, once.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "skipping the MiniLM tests: the model is not in {} \
                     (run scripts/fetch-models minilm-l6)",
                    model_dir().display()
                );
            });
            None
        })
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn vectors_match_sentence_transformers() {
    let Some(embedder) = embedder() else { return };
    let fixture = fixture();
    assert_eq!(embedder.dim(), fixture.dim);
    assert_eq!(embedder.max_seq_length(), fixture.max_seq_length);

    let texts: Vec<&str> = fixture.cases.iter().map(|c| c.text.as_str()).collect();
    let vectors = embedder.embed(&texts).unwrap();
    let (mut min, mut worst_diff) = (f32::INFINITY, 0f32);
    for (case, vector) in fixture.cases.iter().zip(&vectors) {
        let c = cosine(&case.vector, vector);
        assert!(c >= 0.999, "cosine {c} for {:?}", case.text);
        min = min.min(c);
        worst_diff = worst_diff.max(max_abs_diff(&case.vector, vector));
    }
    eprintln!(
        "{} sentences: min cosine to sentence-transformers {min:.7} (1 - min = {:.1e}), \
         max |difference| {worst_diff:.1e}",
        texts.len(),
        1.0 - min
    );
}

#[test]
fn token_ids_match_the_reference_tokenizer() {
    let Some(embedder) = embedder() else { return };
    for case in fixture().cases {
        assert_eq!(embedder.token_ids(&case.text).unwrap(), case.token_ids, "token ids of {:?}", case.text);
    }
}

#[test]
fn long_texts_are_truncated_to_max_seq_length() {
    let Some(embedder) = embedder() else { return };
    let long = fixture().cases.into_iter().map(|c| c.text).max_by_key(String::len).unwrap();
    let ids = embedder.token_ids(&long).unwrap();
    assert_eq!(ids.len(), embedder.max_seq_length());
    assert_eq!(ids.last(), Some(&102), "ends with [SEP]");

    // Text past the cut does not change the vector.
    let longer = format!("{long} and some more words at the end that are cut off");
    let v = embedder.embed(&[&long, &longer]).unwrap();
    assert!(max_abs_diff(&v[0], &v[1]) < 1e-6);
}

#[test]
fn vectors_are_unit_norm_with_the_model_dimension() {
    let Some(embedder) = embedder() else { return };
    let texts = ["", "a", "Unit norm, please.", "   \t\n"];
    for v in embedder.embed(&texts).unwrap() {
        assert_eq!(v.len(), 384);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
}

#[test]
fn a_batch_equals_one_text_at_a_time() {
    let Some(embedder) = embedder() else { return };
    let fixture = fixture();
    let texts: Vec<&str> = fixture.cases.iter().map(|c| c.text.as_str()).collect();
    let batched = embedder.embed(&texts).unwrap();
    for (text, b) in texts.iter().zip(&batched) {
        let single = embedder.embed(&[text]).unwrap().remove(0);
        let diff = max_abs_diff(b, &single);
        assert!(diff < 1e-5, "batch and single differ by {diff} for {text:?}");
    }
}

#[test]
fn output_follows_input_order() {
    let Some(embedder) = embedder() else { return };
    // Different lengths, so sorting by length reorders them internally.
    let texts = [
        "short",
        "a somewhat longer sentence about the weather today",
        "mid length text",
        "the longest of these sentences, which goes on for a while about nothing much at all",
        "tiny",
    ];
    let forward = embedder.embed(&texts).unwrap();
    let reversed: Vec<&str> = texts.iter().rev().copied().collect();
    let backward = embedder.embed(&reversed).unwrap();
    for (i, v) in forward.iter().enumerate() {
        assert!(max_abs_diff(v, &backward[texts.len() - 1 - i]) < 1e-5);
    }
    // And the vectors are those of their own texts, not shuffled copies.
    for (i, text) in texts.iter().enumerate() {
        let own = embedder.embed(&[text]).unwrap().remove(0);
        let best = (0..texts.len())
            .max_by(|&a, &b| cosine(&forward[a], &own).total_cmp(&cosine(&forward[b], &own)))
            .unwrap();
        assert_eq!(best, i, "vector {i} belongs to {:?}", texts[best]);
    }
}

#[test]
fn similar_sentences_are_closer_than_unrelated_ones() {
    let Some(embedder) = embedder() else { return };
    let v = embedder
        .embed(&[
            "A man is playing a guitar.",
            "Someone plays the guitar.",
            "The quarterly budget report is late.",
        ])
        .unwrap();
    let close = cosine(&v[0], &v[1]);
    let far = cosine(&v[0], &v[2]);
    assert!(close > 0.6 && far < 0.3, "close {close}, far {far}");
}

#[test]
fn empty_input_gives_empty_output() {
    let Some(embedder) = embedder() else { return };
    assert!(embedder.embed(&[]).unwrap().is_empty());
}

/// The embedder's work runs on its own named pool, never on candle's
/// process-wide spinning "barrier pool" (threads `candle-bp-N`).
#[cfg(target_os = "linux")]
#[test]
fn work_runs_on_the_embedders_own_threads() {
    let Some(embedder) = embedder() else { return };
    let long: Vec<String> = (0..64).map(|i| format!("sentence {i} {}", "word ".repeat(60))).collect();
    let texts: Vec<&str> = long.iter().map(String::as_str).collect();
    embedder.embed(&texts).unwrap();
    let names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("candle-bp")), "{names:?}");
    let own = names.iter().filter(|n| n.starts_with("sagert-embed")).count();
    assert!(own >= OPTIONS.threads, "{names:?}");
}

#[test]
fn a_missing_folder_names_the_missing_file() {
    let err = Embedder::load(Path::new("/nonexistent/minilm"), OPTIONS).unwrap_err();
    assert!(matches!(err, EmbedError::MissingFile { file: "config.json", .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn a_folder_without_weights_names_model_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
    let err = Embedder::load(dir.path(), OPTIONS).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("model.safetensors"), "{message}");
    assert!(message.contains(&dir.path().display().to_string()), "{message}");
}

#[test]
fn a_bad_config_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::write(dir.path().join(file), "{}").unwrap();
    }
    let err = Embedder::load(dir.path(), OPTIONS).unwrap_err();
    assert!(matches!(err, EmbedError::Config { .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");
}
