//! Behaviour tests of `sagert_align::data`: reading TRL preference data and
//! sagert's dataset directories, errors with file, line and field, encoding
//! with a chat template (a hand-written word-level tokenizer, and SmolLM2's
//! real one when the model is cached), truncation, stratified nested sampling
//! and collation.
//!
//! Every text is a neutral placeholder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use sagert_align::data::{
    collate, limit, read_preferences, stratified_order, Encoded, Encoder, PreferencePair, Truncation,
};
use sagert_align::AlignError;
use sagert_backend::ChatMessage;
use sagert_pipeline::export::{write_dataset_dir, ExportFormat};
use sagert_pipeline::record::{Dataset, Manifest, PairRecord, Verdicts};
use serde_json::json;

// ---------------------------------------------------------------- helpers

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

fn jsonl(rows: &[serde_json::Value]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

fn standard(prompt: &str, chosen: &str, rejected: &str) -> serde_json::Value {
    json!({"prompt": prompt, "chosen": chosen, "rejected": rejected})
}

fn pair(id: &str, category: &str) -> PreferencePair {
    PreferencePair {
        id: id.into(),
        category: category.into(),
        prompt: vec![ChatMessage::user("How do I bake bread?")],
        chosen: vec![ChatMessage::assistant("Knead the dough.")],
        rejected: vec![ChatMessage::assistant("No idea.")],
        ref_chosen_logps: None,
        ref_rejected_logps: None,
    }
}

// ---------------------------------------------------------------- reading

#[test]
fn reads_standard_jsonl_as_conversations() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(
        tmp.path(),
        "pairs.jsonl",
        jsonl(&[
            json!({"prompt": "How do I bake bread?", "chosen": "Knead the dough.", "rejected": "No idea.",
                   "category": "baking", "extra": [1, 2]}),
            json!({"id": "p2", "prompt": "How do I boil an egg?", "chosen": "Simmer it for nine minutes.",
                   "rejected": "Ask someone else.", "ref_chosen_logps": -12.5, "ref_rejected_logps": -3}),
        ]),
    );
    let pairs = read_preferences(&file, "ignored").unwrap();
    assert_eq!(pairs.len(), 2);
    let a = &pairs[0];
    assert_eq!(a.prompt, vec![ChatMessage::user("How do I bake bread?")]);
    assert_eq!(a.chosen, vec![ChatMessage::assistant("Knead the dough.")]);
    assert_eq!(a.rejected, vec![ChatMessage::assistant("No idea.")]);
    assert_eq!(a.category, "baking");
    assert_eq!((a.ref_chosen_logps, a.ref_rejected_logps), (None, None));
    // No id column: the SHA-256 of the messages.
    assert_eq!(a.id.len(), 64);
    assert!(a.id.bytes().all(|b| b.is_ascii_hexdigit()), "{}", a.id);
    let b = &pairs[1];
    assert_eq!((b.id.as_str(), b.category.as_str()), ("p2", ""));
    assert_eq!((b.ref_chosen_logps, b.ref_rejected_logps), (Some(-12.5), Some(-3.0)));
}

#[test]
fn reads_conversational_jsonl() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(
        tmp.path(),
        "chat.jsonl",
        jsonl(&[json!({
            "id": 7,
            "prompt": [
                {"role": "system", "content": "You answer kitchen questions."},
                {"role": "user", "content": "How do I bake bread?"},
                {"role": "assistant", "content": "Which kind?"},
                {"role": "user", "content": "A plain loaf."}
            ],
            "chosen": [{"role": "assistant", "content": "Knead the dough.", "weight": 1}],
            "rejected": [{"role": "assistant", "content": "No idea."}],
            "taxonomy_path": "food/baking/bread",
            "leaf": "bread"
        })]),
    );
    let pairs = read_preferences(&file, "train").unwrap();
    assert_eq!(pairs.len(), 1);
    let p = &pairs[0];
    assert_eq!(p.id, "7");
    // sagert's exports: the leaf's full path, not the leaf id alone.
    assert_eq!(p.category, "food/baking/bread");
    assert_eq!(
        p.prompt,
        vec![
            ChatMessage::system("You answer kitchen questions."),
            ChatMessage::user("How do I bake bread?"),
            ChatMessage::assistant("Which kind?"),
            ChatMessage::user("A plain loaf."),
        ]
    );
    assert_eq!(p.chosen, vec![ChatMessage::assistant("Knead the dough.")]);
}

#[test]
fn standard_and_conversational_forms_get_the_same_content_id() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write(tmp.path(), "a.jsonl", jsonl(&[standard("How do I bake bread?", "Knead.", "No.")]));
    let b = write(
        tmp.path(),
        "b.jsonl",
        jsonl(&[json!({
            "prompt": [{"role": "user", "content": "How do I bake bread?"}],
            "chosen": [{"role": "assistant", "content": "Knead."}],
            "rejected": [{"role": "assistant", "content": "No."}]
        })]),
    );
    let c = write(tmp.path(), "c.jsonl", jsonl(&[standard("How do I bake bread?", "Knead.", "Maybe.")]));
    let id = |f: &Path| read_preferences(f, "train").unwrap()[0].id.clone();
    assert_eq!(id(&a), id(&b));
    assert_ne!(id(&a), id(&c));
}

/// Every malformed record is reported with `file:line: field`.
#[test]
fn record_errors_name_file_line_and_field() {
    let ok = standard("How do I bake bread?", "Knead the dough.", "No idea.").to_string();
    let cases: Vec<(Vec<u8>, usize, &str, &str)> = vec![
        (format!("{ok}\n{{\"prompt\": \n").into_bytes(), 2, "-", "not JSON"),
        (format!("{ok}\n\n[1, 2]\n").into_bytes(), 3, "-", "expected a JSON object, found an array"),
        (br#"{"prompt": "Hi?", "chosen": "Hello."}"#.to_vec(), 1, "rejected", "missing"),
        (br#"{"chosen": "Hello.", "rejected": "Bye."}"#.to_vec(), 1, "prompt", "implicit-prompt"),
        (br#"{"prompt": "Hi?", "chosen": 3, "rejected": "Bye."}"#.to_vec(), 1, "chosen", "found a number"),
        (br#"{"prompt": "  ", "chosen": "Hello.", "rejected": "Bye."}"#.to_vec(), 1, "prompt", "empty"),
        (br#"{"prompt": [], "chosen": "Hello.", "rejected": "Bye."}"#.to_vec(), 1, "prompt", "empty list"),
        (br#"{"prompt": "Hi?", "chosen": "Hello.", "rejected": ""}"#.to_vec(), 1, "rejected", "empty"),
        (
            br#"{"prompt": "Hi?", "chosen": [{"role": "user", "content": "Hello."}], "rejected": "Bye."}"#
                .to_vec(),
            1,
            "chosen[0].role",
            "expected `assistant`, found `user`",
        ),
        (
            br#"{"prompt": [{"role": "tool", "content": "x"}], "chosen": "Hello.", "rejected": "Bye."}"#.to_vec(),
            1,
            "prompt[0].role",
            "unknown role `tool`",
        ),
        (
            br#"{"prompt": [{"role": "user", "content": "Hi?"}, {"role": "user"}], "chosen": "A.", "rejected": "B."}"#
                .to_vec(),
            1,
            "prompt[1].content",
            "missing",
        ),
        (
            br#"{"prompt": "Hi?", "chosen": ["Hello."], "rejected": "Bye."}"#.to_vec(),
            1,
            "chosen[0]",
            "expected a {role, content} object, found a string",
        ),
        (
            br#"{"prompt": "Hi?", "chosen": "A.", "rejected": "B.", "ref_chosen_logps": -1.5}"#.to_vec(),
            1,
            "ref_rejected_logps",
            "missing, but `ref_chosen_logps` is given",
        ),
        (
            br#"{"prompt": "Hi?", "chosen": "A.", "rejected": "B.", "ref_chosen_logps": "low", "ref_rejected_logps": 1}"#
                .to_vec(),
            1,
            "ref_chosen_logps",
            "expected a number",
        ),
        (br#"{"prompt": "Hi?", "chosen": "A.", "rejected": "B.", "category": 4}"#.to_vec(), 1, "category", "string"),
        (br#"{"prompt": "Hi?", "chosen": "A.", "rejected": "B.", "id": ""}"#.to_vec(), 1, "id", "empty"),
        ([format!("{ok}\n{ok}\n").as_bytes(), &b"{\"prompt\": \"caf\xE9\"}\n"[..]].concat(), 3, "-", "not UTF-8"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (i, (bytes, line, field, message)) in cases.into_iter().enumerate() {
        let file = write(tmp.path(), &format!("case{i}.jsonl"), &bytes);
        let err = read_preferences(&file, "train").unwrap_err();
        assert!(matches!(err, AlignError::Data { .. }), "case {i}: {err:?}");
        let text = err.to_string();
        let at = format!("{}:{line}: field `{field}`: ", file.display());
        assert!(text.starts_with(&at), "case {i}: {text}\n  wanted it to start with {at}");
        assert!(text.contains(message), "case {i}: {text}\n  wanted {message}");
    }
}

#[test]
fn empty_files_and_bad_paths_are_dataset_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, bytes) in [("empty.jsonl", ""), ("blank.jsonl", "\n  \n\r\n")] {
        let file = write(tmp.path(), name, bytes);
        let err = read_preferences(&file, "train").unwrap_err();
        assert!(matches!(err, AlignError::Dataset { .. }), "{err:?}");
        assert_eq!(err.to_string(), format!("{}: no records", file.display()));
    }
    let txt = write(tmp.path(), "pairs.txt", "x");
    let err = read_preferences(&txt, "train").unwrap_err().to_string();
    assert!(err.contains("unknown format"), "{err}");
    let err = read_preferences(&tmp.path().join("absent.jsonl"), "train").unwrap_err().to_string();
    assert!(err.contains("no such file or directory"), "{err}");

    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    let err = read_preferences(&dir, "validation").unwrap_err();
    assert!(matches!(err, AlignError::Dataset { .. }), "{err:?}");
    let err = err.to_string();
    for looked in ["trl/validation.jsonl", "trl-chat/validation.parquet", "dataset/trl/validation.jsonl"] {
        assert!(err.contains(looked), "{err}\n  wanted {looked}");
    }
    assert!(err.contains("no `validation` split"), "{err}");
}

#[test]
fn a_utf8_byte_order_mark_and_crlf_line_ends_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let row = standard("How do I bake bread?", "Knead.", "No.");
    let file = write(tmp.path(), "bom.jsonl", format!("\u{feff}{row}\r\n{row}\r\n"));
    let pairs = read_preferences(&file, "train").unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[1].rejected, vec![ChatMessage::assistant("No.")]);
}

// ------------------------------------------------------ dataset directories

fn record(i: usize, split: &str) -> PairRecord {
    let leaves = [("food", "baking", "bread"), ("food", "cooking", "eggs"), ("home", "garden", "bread")];
    let (m, u, l) = leaves[i % leaves.len()];
    PairRecord {
        id: format!("{split}-{i}"),
        prompt: format!("How do I bake loaf number {i}?"),
        chosen: format!("Knead the dough {i} times."),
        rejected: "No idea.".into(),
        taxonomy_path: format!("{m}/{u}/{l}"),
        macro_category: m.into(),
        micro_category: u.into(),
        leaf: l.into(),
        topic: format!("topic {i}"),
        topic_id: format!("{m}/{u}/{l}#{i}"),
        jailbreak_type: "direct_request".into(),
        raw_text_format: "forum_post".into(),
        epoch: 0,
        expander_model: "mock".into(),
        generator_model: "mock".into(),
        safe_responder_model: "mock".into(),
        unsafe_responder_model: "mock".into(),
        judge: "classifier".into(),
        seed: 1,
        verdicts: Verdicts::default(),
    }
}

fn export(out: &Path, train: Vec<PairRecord>, test: Vec<PairRecord>) {
    let ds = Dataset { name: "placeholder pairs".into(), train, test, manifest: Manifest::default() };
    write_dataset_dir(out, &ds, &[ExportFormat::Trl, ExportFormat::TrlChat]).unwrap();
}

fn expected(records: &[PairRecord]) -> Vec<PreferencePair> {
    records
        .iter()
        .map(|r| PreferencePair {
            id: r.id.clone(),
            category: r.taxonomy_path.clone(),
            prompt: vec![ChatMessage::user(&r.prompt)],
            chosen: vec![ChatMessage::assistant(&r.chosen)],
            rejected: vec![ChatMessage::assistant(&r.rejected)],
            ref_chosen_logps: None,
            ref_rejected_logps: None,
        })
        .collect()
}

/// Every layout and file of an export reads back as the same pairs: `trl` and
/// `trl-chat`, JSONL and Parquet, from the dataset directory or its run.
#[test]
fn reads_every_file_of_a_sagert_export() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = run.join("dataset");
    let train: Vec<PairRecord> = (0..5).map(|i| record(i, "train")).collect();
    let test: Vec<PairRecord> = (0..2).map(|i| record(i + 10, "test")).collect();
    export(&out, train.clone(), test.clone());
    let (want_train, want_test) = (expected(&train), expected(&test));

    assert_eq!(read_preferences(&out, "train").unwrap(), want_train);
    assert_eq!(read_preferences(&out, "test").unwrap(), want_test);
    assert_eq!(read_preferences(&run, "test").unwrap(), want_test, "a run directory");
    for file in ["trl/train.jsonl", "trl/train.parquet", "trl-chat/train.jsonl", "trl-chat/train.parquet"] {
        assert_eq!(read_preferences(&out.join(file), "ignored").unwrap(), want_train, "{file}");
    }
    // Without `trl/`, the conversational config; without JSONL, Parquet.
    std::fs::remove_dir_all(out.join("trl")).unwrap();
    assert_eq!(read_preferences(&out, "train").unwrap(), want_train);
    std::fs::remove_file(out.join("trl-chat/train.jsonl")).unwrap();
    assert_eq!(read_preferences(&out, "train").unwrap(), want_train);

    // A plain directory of split files.
    let plain = tmp.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    std::fs::copy(out.join("trl-chat/train.parquet"), plain.join("train.parquet")).unwrap();
    assert_eq!(read_preferences(&plain, "train").unwrap(), want_train);
}

#[test]
fn parquet_errors_name_the_row() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("dataset");
    let mut bad = record(1, "train");
    bad.chosen = "   ".into();
    export(&out, vec![record(0, "train"), bad], vec![]);
    let file = out.join("trl-chat/train.parquet");
    let err = read_preferences(&file, "train").unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:2: field `chosen[0].content`: empty", file.display())), "{err}");
    let err = read_preferences(&out.join("trl/train.parquet"), "train").unwrap_err().to_string();
    assert!(err.contains("train.parquet:2: field `chosen`: empty"), "{err}");
    // An empty split's Parquet file has a schema and no rows.
    let err = read_preferences(&out.join("trl/test.parquet"), "test").unwrap_err().to_string();
    assert!(err.ends_with("test.parquet: no records"), "{err}");
}

// ---------------------------------------------------------------- sampling

const SIZES: [(&str, usize); 8] =
    [("a", 40), ("b", 25), ("c", 13), ("d", 9), ("e", 5), ("f", 2), ("g", 1), ("", 6)];

fn categories(sizes: &[(&'static str, usize)]) -> Vec<&'static str> {
    // Interleaved rather than grouped, as a real file might be.
    let mut out: Vec<&str> = sizes.iter().flat_map(|&(c, n)| std::iter::repeat_n(c, n)).collect();
    fastrand::Rng::with_seed(99).shuffle(&mut out);
    out
}

/// Every prefix of the order holds each category within one of its share.
fn assert_every_prefix_stratified(cats: &[&str], order: &[usize]) {
    let n = cats.len();
    let mut sorted = order.to_vec();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "not a permutation");
    let mut total: BTreeMap<&str, usize> = BTreeMap::new();
    for c in cats {
        *total.entry(c).or_default() += 1;
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, &i) in order.iter().enumerate() {
        *seen.entry(cats[i]).or_default() += 1;
        let k = k + 1;
        for (c, &n_c) in &total {
            let got = seen.get(c).copied().unwrap_or(0) as f64;
            let share = (k * n_c) as f64 / n as f64;
            assert!(
                (got - share).abs() < 1.0,
                "prefix {k}: category `{c}` has {got}, its share is {share:.2}"
            );
        }
    }
}

#[test]
fn every_prefix_of_the_order_is_stratified() {
    let cats = categories(&SIZES);
    for seed in 0..20 {
        assert_every_prefix_stratified(&cats, &stratified_order(&cats, seed));
    }
    // Random shapes: up to 40 categories of skewed sizes.
    let mut rng = fastrand::Rng::with_seed(5);
    let names: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
    for _ in 0..40 {
        let mut cats: Vec<&str> = Vec::new();
        for name in names.iter().take(rng.usize(1..40)) {
            let n = if rng.bool() { rng.usize(1..4) } else { rng.usize(1..60) };
            cats.extend(std::iter::repeat_n(name.as_str(), n));
        }
        rng.shuffle(&mut cats);
        assert_every_prefix_stratified(&cats, &stratified_order(&cats, rng.u64(..)));
    }
    assert_eq!(stratified_order(&[], 1), Vec::<usize>::new());
    assert_every_prefix_stratified(&["x"; 7], &stratified_order(&["x"; 7], 3));
}

#[test]
fn the_order_is_seeded() {
    let cats = categories(&SIZES);
    assert_eq!(stratified_order(&cats, 7), stratified_order(&cats, 7));
    assert_ne!(stratified_order(&cats, 7), stratified_order(&cats, 8));
    let first = |seed| stratified_order(&cats, seed)[..10].to_vec();
    assert_ne!(first(1), first(2), "different seeds pick different pairs");
}

#[test]
fn limits_are_nested_proportional_and_in_file_order() {
    let cats = categories(&SIZES);
    let pairs: Vec<PreferencePair> =
        cats.iter().enumerate().map(|(i, c)| pair(&format!("p{i}"), c)).collect();
    let ids = |n: Option<usize>, seed| -> Vec<String> {
        limit(pairs.clone(), n, seed).into_iter().map(|p| p.id).collect()
    };
    let mut previous: BTreeSet<String> = BTreeSet::new();
    for n in [5, 10, 30, 60, 100] {
        let got = ids(Some(n), 42);
        assert_eq!(got.len(), n);
        let index: Vec<usize> = got.iter().map(|id| id[1..].parse().unwrap()).collect();
        assert!(index.windows(2).all(|w| w[0] < w[1]), "file order: {index:?}");
        let set: BTreeSet<String> = got.into_iter().collect();
        assert!(previous.is_subset(&set), "limit {n} does not contain the smaller limit");
        // Proportions: each category within one of n * n_c / total.
        for &(c, n_c) in &SIZES {
            let count = index.iter().filter(|&&i| cats[i] == c).count() as f64;
            let share = (n * n_c) as f64 / cats.len() as f64;
            assert!((count - share).abs() < 1.0, "limit {n}: `{c}` has {count}, share {share:.2}");
        }
        previous = set;
    }
    assert_eq!(ids(None, 42).len(), cats.len());
    assert_eq!(ids(Some(10_000), 42).len(), cats.len());
    assert!(ids(Some(0), 42).is_empty());
    assert_ne!(ids(Some(10), 1), ids(Some(10), 2));
}

// ---------------------------------------------------------------- collation

fn encoded(id: &str, prompt: &[u32], chosen: &[u32], rejected: &[u32]) -> Encoded {
    Encoded {
        id: id.into(),
        category: String::new(),
        prompt: prompt.to_vec(),
        chosen: chosen.to_vec(),
        rejected: rejected.to_vec(),
        ref_chosen_logps: None,
        ref_rejected_logps: None,
        truncated: false,
    }
}

#[test]
fn collate_pads_chosen_rows_then_rejected_rows() {
    let a = encoded("a", &[1, 2], &[3, 4, 9], &[5, 9]);
    let b = encoded("b", &[6], &[7, 9], &[8, 8, 8, 9]);
    let batch = collate(&[&a, &b], 99, &Device::Cpu).unwrap();
    assert_eq!(batch.input_ids.dtype(), DType::U32);
    assert_eq!(batch.loss_mask.dtype(), DType::F32);
    assert_eq!(
        batch.input_ids.to_vec2::<u32>().unwrap(),
        vec![vec![1, 2, 3, 4, 9], vec![6, 7, 9, 99, 99], vec![1, 2, 5, 9, 99], vec![6, 8, 8, 8, 9]]
    );
    assert_eq!(
        batch.loss_mask.to_vec2::<f32>().unwrap(),
        vec![
            vec![0., 0., 1., 1., 1.],
            vec![0., 1., 1., 0., 0.],
            vec![0., 0., 1., 1., 0.],
            vec![0., 1., 1., 1., 1.]
        ]
    );
    assert_eq!(batch.ids, ["a", "b"]);
    assert_eq!(batch.tokens, 5 + 3 + 4 + 5);

    let empty = collate(&[], 0, &Device::Cpu).unwrap();
    assert_eq!((empty.input_ids.dims(), empty.tokens), (&[0, 0][..], 0));
}

// ------------------------------------------- encoding: a word-level tokenizer

/// A tiny word-level tokenizer: words and punctuation split by
/// `\w+|[^\w\s]+`, three special tokens.
const WORDS: [&str; 22] = [
    "<s>",
    "</s>",
    "<pad>",
    "<unk>",
    "user",
    "assistant",
    "system",
    ":",
    "how",
    "do",
    "i",
    "bake",
    "bread",
    "?",
    "knead",
    "the",
    "dough",
    "no",
    "idea",
    "be",
    "brief",
    ".",
];

fn word_ids(text: &str) -> Vec<u32> {
    text.split(' ').map(|w| WORDS.iter().position(|x| *x == w).unwrap() as u32).collect()
}

/// A model directory with the word-level tokenizer and `config` as its
/// `tokenizer_config.json`.
fn word_model(dir: &Path, config: serde_json::Value) -> PathBuf {
    let vocab: serde_json::Map<String, serde_json::Value> =
        WORDS.iter().enumerate().map(|(i, w)| (w.to_string(), json!(i))).collect();
    let added: Vec<serde_json::Value> = ["<s>", "</s>", "<pad>"]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::create_dir_all(dir).unwrap();
    write(dir, "tokenizer.json", tokenizer.to_string());
    write(dir, "tokenizer_config.json", config.to_string());
    dir.to_path_buf()
}

/// Turns end with EOS and a newline; BOS is in the template.
const EOS_TURNS: &str =
    "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}{{ eos_token }}\n\
                         {% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";
/// Turns end with a newline only; no BOS in the template.
const PLAIN_TURNS: &str =
    "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";

fn bread() -> PreferencePair {
    PreferencePair {
        id: "bread-1".into(),
        category: "baking".into(),
        prompt: vec![ChatMessage::user("how do i bake bread ?")],
        chosen: vec![ChatMessage::assistant("knead the dough")],
        rejected: vec![ChatMessage::assistant("no idea")],
        ref_chosen_logps: Some(-1.0),
        ref_rejected_logps: Some(-2.0),
    }
}

#[test]
fn a_template_eos_is_kept_once_and_not_appended_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = word_model(
        &tmp.path().join("m"),
        json!({"chat_template": EOS_TURNS, "bos_token": "<s>", "eos_token": {"content": "</s>"},
               "pad_token": "<pad>", "add_bos_token": true}),
    );
    let enc = Encoder::from_model_dir(&dir).unwrap();
    assert_eq!((enc.eos_id(), enc.pad_id()), (1, 2));
    let e = enc.encode(&bread(), &Truncation::default()).unwrap();
    // The template writes BOS itself: it is not prepended a second time.
    assert_eq!(e.prompt, word_ids("<s> user : how do i bake bread ? </s> assistant :"));
    assert_eq!(e.chosen, word_ids("knead the dough </s>"));
    assert_eq!(e.rejected, word_ids("no idea </s>"));
    assert_eq!((e.id.as_str(), e.category.as_str(), e.truncated), ("bread-1", "baking", false));
    assert_eq!((e.ref_chosen_logps, e.ref_rejected_logps), (Some(-1.0), Some(-2.0)));
    assert_eq!(enc.render_prompt(&bread().prompt).unwrap(), e.prompt);

    // Two assistant turns: the first keeps its closing EOS, the end has one.
    let mut two = bread();
    two.chosen.push(ChatMessage::assistant("be brief ."));
    let e = enc.encode(&two, &Truncation::default()).unwrap();
    assert_eq!(e.chosen, word_ids("knead the dough </s> assistant : be brief . </s>"));
}

#[test]
fn eos_is_appended_and_bos_prepended_when_the_template_lacks_them() {
    let tmp = tempfile::tempdir().unwrap();
    let config =
        json!({"chat_template": PLAIN_TURNS, "bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true});
    let enc = Encoder::from_model_dir(&word_model(&tmp.path().join("m"), config.clone())).unwrap();
    // No pad token: EOS pads.
    assert_eq!(enc.pad_id(), 1);
    let e = enc.encode(&bread(), &Truncation::default()).unwrap();
    assert_eq!(e.prompt, word_ids("<s> user : how do i bake bread ? assistant :"));
    assert_eq!(e.chosen, word_ids("knead the dough </s>"));

    // Without add_bos_token, no BOS.
    let mut config = config;
    config["add_bos_token"] = json!(false);
    let enc = Encoder::from_model_dir(&word_model(&tmp.path().join("n"), config)).unwrap();
    let e = enc.encode(&bread(), &Truncation::default()).unwrap();
    assert_eq!(e.prompt, word_ids("user : how do i bake bread ? assistant :"));

    // When the prompt is cut, a prepended BOS stays first.
    let long = Truncation { max_prompt_length: 4, max_length: 6 };
    let e = Encoder::from_model_dir(&tmp.path().join("m")).unwrap().encode(&bread(), &long).unwrap();
    assert_eq!(e.prompt, word_ids("<s> ? assistant :"));
    assert_eq!(e.chosen, word_ids("knead the"));
    assert!(e.truncated);
}

#[test]
fn encoder_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let no_template = word_model(&tmp.path().join("a"), json!({"eos_token": "</s>"}));
    let err = Encoder::from_model_dir(&no_template).unwrap_err().to_string();
    assert!(err.contains("tokenizer_config.json: no chat template"), "{err}");
    // transformers' separate template file is read.
    write(&no_template, "chat_template.jinja", PLAIN_TURNS);
    assert!(Encoder::from_model_dir(&no_template).is_ok());

    let no_eos = word_model(&tmp.path().join("b"), json!({"chat_template": PLAIN_TURNS}));
    let err = Encoder::from_model_dir(&no_eos).unwrap_err().to_string();
    assert!(err.contains("no `eos_token`"), "{err}");
    let unknown_eos =
        word_model(&tmp.path().join("c"), json!({"chat_template": PLAIN_TURNS, "eos_token": "<end>"}));
    let err = Encoder::from_model_dir(&unknown_eos).unwrap_err().to_string();
    assert!(err.contains("eos_token `<end>` is not in tokenizer.json's vocabulary"), "{err}");

    // A named template list takes `default`.
    let named = word_model(
        &tmp.path().join("d"),
        json!({"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": PLAIN_TURNS}],
               "eos_token": "</s>"}),
    );
    let e = Encoder::from_model_dir(&named).unwrap().encode(&bread(), &Truncation::default()).unwrap();
    assert_eq!(e.prompt, word_ids("user : how do i bake bread ? assistant :"));

    // A template that renders earlier turns differently once a reply follows.
    let rewrites = "{% for m in messages %}{% if add_generation_prompt %}[{{ m.content }}]{% else %}\
                    ({{ m.content }}){% endif %}{% endfor %}";
    let dir = word_model(&tmp.path().join("e"), json!({"chat_template": rewrites, "eos_token": "</s>"}));
    let err = Encoder::from_model_dir(&dir).unwrap().encode(&bread(), &Truncation::default()).unwrap_err();
    let err = err.to_string();
    assert!(err.contains("pair `bread-1`: chosen: the rendered conversation does not start with"), "{err}");

    let enc = Encoder::from_model_dir(&named).unwrap();
    let err = enc.encode(&bread(), &Truncation { max_prompt_length: 9, max_length: 9 }).unwrap_err();
    assert!(err.to_string().contains("max_prompt_length (9) must be below max_length (9)"), "{err}");
    let err = Encoder::from_model_dir(&tmp.path().join("absent")).unwrap_err().to_string();
    assert!(err.contains("not a directory"), "{err}");
}

// ------------------------------------------------------ encoding: SmolLM2

/// SmolLM2's rendering of a lone user turn: its template adds a default system
/// message.
const SMOL_PROMPT: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
                           Face<|im_end|>\n<|im_start|>user\nHow do I bake bread?<|im_end|>\n<|im_start|>assistant\n";

fn smol_pair(id: &str, prompt: &str, chosen: &str, rejected: &str) -> PreferencePair {
    PreferencePair {
        id: id.into(),
        category: String::new(),
        prompt: vec![ChatMessage::user(prompt)],
        chosen: vec![ChatMessage::assistant(chosen)],
        rejected: vec![ChatMessage::assistant(rejected)],
        ref_chosen_logps: None,
        ref_rejected_logps: None,
    }
}

/// Everything that needs SmolLM2's real tokenizer and template, against one
/// conversion of the cached GGUF.
#[test]
fn smollm2_encoding_eos_truncation_and_masks() {
    let Some(gguf) = sagert_models::testing::model_or_skip(
        "smollm2_encoding_eos_truncation_and_masks",
        "smollm2-135m-instruct",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf");
    sagert_convert::gguf_to_hf(&gguf, &dir, sagert_convert::HfDtype::F16, &Default::default()).unwrap();
    let enc = Encoder::from_model_dir(&dir).unwrap();
    let tok = enc.tokenizer();
    let eos = tok.token_to_id("<|im_end|>").unwrap();
    assert_eq!((enc.eos_id(), enc.pad_id()), (eos, eos), "SmolLM2 pads with <|im_end|>");
    let decode = |ids: &[u32]| tok.decode(ids, false).unwrap();

    // The prompt decodes to the rendered prompt; each completion to its text
    // and one EOS, without the newline the template writes after it.
    let chosen_text = "Mix flour, water, yeast and salt, knead, let it rise, then bake it.";
    let p = smol_pair("smol-1", "How do I bake bread?", chosen_text, "I don't know.");
    let e = enc.encode(&p, &Truncation::default()).unwrap();
    assert_eq!(decode(&e.prompt), SMOL_PROMPT);
    assert_eq!(e.prompt, enc.render_prompt(&p.prompt).unwrap());
    let im_start = tok.token_to_id("<|im_start|>").unwrap();
    assert_eq!(e.prompt.iter().filter(|&&t| t == im_start).count(), 3, "no BOS added to the template's");
    for (side, text) in [(&e.chosen, chosen_text), (&e.rejected, "I don't know.")] {
        assert_eq!(side.iter().filter(|&&t| t == eos).count(), 1, "{}", decode(side));
        assert_eq!(side.last(), Some(&eos));
        assert_eq!(decode(side), format!("{text}<|im_end|>"));
    }
    assert!(!e.truncated);

    // Truncation: full lengths first, then the rule's exact cuts.
    let long_prompt = "Tell me about bread. ".repeat(60);
    let long_chosen = "Bread is made from flour and water. ".repeat(30);
    let p = smol_pair("smol-long", long_prompt.trim_end(), long_chosen.trim_end(), "It is food.");
    let unlimited = Truncation { max_prompt_length: 100_000, max_length: 200_000 };
    let full = enc.encode(&p, &unlimited).unwrap();
    let (pl, cl, rl) = (full.prompt.len(), full.chosen.len(), full.rejected.len());
    assert!(pl > 300 && cl > 200 && rl < 20, "{pl} {cl} {rl}");
    assert!(!full.truncated);

    let limits = Truncation { max_prompt_length: 64, max_length: 128 };
    let cut = enc.encode(&p, &limits).unwrap();
    assert!(cut.truncated);
    assert_eq!(cut.prompt, full.prompt[pl - 64..], "keep the prompt's end");
    assert_eq!(cut.chosen, full.chosen[..64], "128 - 64 tokens of the completion");
    assert_eq!(cut.rejected, full.rejected, "the short completion is untouched");
    assert!(decode(&cut.prompt).ends_with(".<|im_end|>\n<|im_start|>assistant\n"), "{}", decode(&cut.prompt));

    // A prompt already short enough is kept; completions get what is left.
    let p2 = smol_pair("smol-mid", "How do I bake bread?", long_chosen.trim_end(), "It is food.");
    let short_prompt = enc.encode(&p2, &unlimited).unwrap();
    let limits = Truncation { max_prompt_length: 100, max_length: 150 };
    let cut2 = enc.encode(&p2, &limits).unwrap();
    let p2_len = short_prompt.prompt.len();
    assert!(p2_len < 100);
    assert_eq!(cut2.prompt, short_prompt.prompt);
    assert_eq!(cut2.chosen, short_prompt.chosen[..150 - p2_len]);
    assert!(cut2.truncated);

    // Collation: the mask covers exactly each completion, after its prompt.
    let items = [&e, &cut, &cut2];
    let batch = collate(&items, enc.pad_id(), &Device::Cpu).unwrap();
    let ids = batch.input_ids.to_vec2::<u32>().unwrap();
    let mask = batch.loss_mask.to_vec2::<f32>().unwrap();
    let width = items.iter().map(|x| x.prompt.len() + x.chosen.len().max(x.rejected.len())).max().unwrap();
    assert_eq!(batch.input_ids.dims(), [6, width]);
    let mut real = 0;
    for (row, (ids, mask)) in ids.iter().zip(&mask).enumerate() {
        let item = items[row % 3];
        let completion = if row < 3 { &item.chosen } else { &item.rejected };
        let masked: Vec<u32> = ids.iter().zip(mask).filter(|(_, &m)| m == 1.0).map(|(&t, _)| t).collect();
        assert_eq!(&masked, completion, "row {row}");
        let first = mask.iter().position(|&m| m == 1.0).unwrap();
        assert_eq!(first, item.prompt.len(), "row {row}: the mask starts after the prompt");
        assert_eq!(&ids[..first], &item.prompt[..]);
        assert!(ids[first + completion.len()..].iter().all(|&t| t == enc.pad_id()));
        real += item.prompt.len() + completion.len();
    }
    assert_eq!(batch.tokens, real);
    assert_eq!(
        decode(&ids[0][e.prompt.len()..e.prompt.len() + e.chosen.len()]),
        format!("{chosen_text}<|im_end|>")
    );
}
