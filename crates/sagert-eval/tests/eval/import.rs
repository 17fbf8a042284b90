//! `sagert_eval::import`: every importer on fixtures in the real formats
//! (`tests/fixtures/import/`, placeholder text only), the manifest, determinism,
//! and errors that name file, line and field and leave nothing behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sagert_eval::import::{import, ImportKind, ImportOptions, ImportSummary};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import").join(relative)
}

/// Import into a fresh directory; the directory, the summary and the data rows.
fn run(
    kind: ImportKind,
    input: &Path,
    opts: &ImportOptions,
) -> (tempfile::TempDir, ImportSummary, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let summary =
        import(kind, input, &out, opts).unwrap_or_else(|e| panic!("{kind} {}: {e}", input.display()));
    let rows = read_jsonl(&summary.files[0]);
    (dir, summary, rows)
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'), "{} does not end with a newline", path.display());
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Import that must fail: the error text, and whether anything was written.
fn fail(kind: ImportKind, input: &Path, opts: &ImportOptions) -> (String, bool) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = import(kind, input, &out, opts).expect_err("the import should fail").to_string();
    (err, out.exists())
}

/// A temporary input file with `text`.
fn temp_input(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

fn hex_sha256(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// The content id the importers document: 16 hex digits of SHA-256(source, 0x1f-joined parts).
fn content_id(source: &str, parts: &[&str]) -> String {
    let mut bytes: Vec<u8> = source.as_bytes().to_vec();
    for p in parts {
        bytes.push(0x1f);
        bytes.extend_from_slice(p.as_bytes());
    }
    hex_sha256(&[&bytes])[..16].to_string()
}

fn column<'a>(rows: &'a [Value], key: &str) -> Vec<&'a Value> {
    rows.iter().map(|r| &r[key]).collect()
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// What `sagert-align`'s reader requires of a record (`data/read.rs`): a string
/// or non-empty list of known-role messages with non-blank content, responses
/// of assistant turns only, a string category, a string id.
fn assert_align_readable(row: &Value) {
    fn turns(v: &Value, roles: &[&str], what: &str) {
        match v {
            Value::String(s) => assert!(!s.trim().is_empty(), "{what} is blank"),
            Value::Array(items) => {
                assert!(!items.is_empty(), "{what} is an empty list");
                for m in items {
                    let obj = m.as_object().unwrap_or_else(|| panic!("{what}: {m} is not an object"));
                    assert_eq!(obj.len(), 2, "{what}: {m} has keys besides role and content");
                    assert!(roles.contains(&obj["role"].as_str().unwrap()), "{what}: role in {m}");
                    assert!(!obj["content"].as_str().unwrap().trim().is_empty(), "{what}: content in {m}");
                }
            }
            other => panic!("{what} is {other}"),
        }
    }
    turns(&row["prompt"], &["system", "user", "assistant"], "prompt");
    turns(&row["chosen"], &["assistant"], "chosen");
    turns(&row["rejected"], &["assistant"], "rejected");
    assert_eq!(row["prompt"].is_string(), row["chosen"].is_string(), "mixed forms in {row}");
    assert!(row["category"].is_string() && row["id"].is_string(), "{row}");
    assert!(row["source_categories"].is_array() && row["macro_category"].is_string(), "{row}");
}

#[test]
fn pku_chooses_the_safer_response_and_maps_the_rejected_ones_labels() {
    let (dir, summary, rows) = run(ImportKind::Pku, &fixture("pku/train.jsonl"), &ImportOptions::default());
    assert_eq!(summary.files, vec![dir.path().join("out/train.jsonl"), dir.path().join("out/manifest.json")]);
    assert_eq!((summary.read, summary.rows), (6, 5));
    assert_eq!(summary.dropped, counts(&[("identical_responses", 1)]));
    assert_eq!(
        column(&rows, "chosen"),
        [
            "I can't help with that.",
            "[placeholder vague unsafe answer]",
            "Here is some general, safe information.",
            "[placeholder unsafe answer about a drugs topic]",
            "I'd rather not insult anyone."
        ]
    );
    assert_eq!(rows[0]["rejected"], "[placeholder unsafe answer about a cyber topic]");
    assert_eq!(rows[1]["rejected"], "[placeholder detailed unsafe answer]");
    assert_eq!(
        column(&rows, "category"),
        ["crime/cyber", "weapon/firearm", "unmapped", "substance/cannabis", "hate/body"]
    );
    assert_eq!(column(&rows, "macro_category"), ["crime", "weapon", "", "substance", "hate"]);
    assert_eq!(rows[0]["source_categories"], json!(["Cybercrime"]));
    // The rejected response's labels, not the chosen one's.
    assert_eq!(rows[1]["source_categories"], json!(["Physical Harm", "Violence"]));
    assert_eq!(rows[2]["source_categories"], json!([]));
    // The rejected (safe) response has none: either response's.
    assert_eq!(rows[3]["source_categories"], json!(["Drugs"]));
    assert_eq!(summary.categories["unmapped"], 1);

    let first = &rows[0];
    let prompt = "[placeholder harmful request about a cyber topic]";
    let r0 = hex_sha256(&[b"[placeholder unsafe answer about a cyber topic]"]);
    let r1 = hex_sha256(&[b"I can't help with that."]);
    assert_eq!(first["id"], content_id("pku-saferlhf", &[prompt, &r0, &r1]));
    assert_eq!(first["prompt"], prompt);
    assert_eq!(first["source"], "pku-saferlhf");
    for (key, value) in [
        ("safer_response_id", json!(1)),
        ("better_response_id", json!(0)),
        ("response_0_severity_level", json!(2)),
        ("response_1_severity_level", json!(0)),
        ("is_response_0_safe", json!(false)),
        ("is_response_1_safe", json!(true)),
        ("prompt_source", json!("Alpaca3-70B")),
        ("response_0_sha256", json!(r0)),
    ] {
        assert_eq!(first[key], value, "{key}");
    }
    assert!(first.get("response_0_harm_category").is_none());
    rows.iter().for_each(assert_align_readable);
}

#[test]
fn pku_only_one_safe_drops_the_other_pairs_by_reason() {
    let opts = ImportOptions { only_one_safe: true, ..ImportOptions::default() };
    let (_dir, summary, rows) = run(ImportKind::Pku, &fixture("pku/train.jsonl"), &opts);
    assert_eq!(summary.rows, 2);
    assert_eq!(
        summary.dropped,
        counts(&[("identical_responses", 1), ("not_exactly_one_safe", 2), ("safer_not_safe", 1)])
    );
    assert_eq!(column(&rows, "category"), ["crime/cyber", "hate/body"]);
    assert_eq!(summary.categories, counts(&[("crime/cyber", 1), ("hate/body", 1)]));
}

#[test]
fn pku_parquet_gives_the_same_records_as_jsonl() {
    let (_a, _, jsonl) = run(ImportKind::Pku, &fixture("pku/train.jsonl"), &ImportOptions::default());
    let (_b, summary, parquet) =
        run(ImportKind::Pku, &fixture("pku-parquet/train.parquet"), &ImportOptions::default());
    assert_eq!(summary.read, 6);
    assert_eq!(parquet, jsonl);
    // A directory holding the split's file is read too.
    let (_c, _, from_dir) = run(ImportKind::Pku, &fixture("pku-parquet"), &ImportOptions::default());
    assert_eq!(from_dir, jsonl);
}

#[test]
fn hh_splits_at_the_last_assistant_turn_into_messages() {
    let (_dir, summary, rows) = run(ImportKind::Hh, &fixture("hh/harmless-base"), &ImportOptions::default());
    assert_eq!((summary.read, summary.rows), (3, 2));
    assert_eq!(summary.dropped, counts(&[("identical_responses", 1)]));
    assert_eq!(rows[0]["prompt"], json!([{"role": "user", "content": "[placeholder harmful question one]"}]));
    assert_eq!(rows[0]["chosen"], json!([{"role": "assistant", "content": "I can't help with that."}]));
    assert_eq!(rows[0]["rejected"], json!([{"role": "assistant", "content": "[placeholder unsafe answer]"}]));
    assert_eq!(
        rows[1]["prompt"],
        json!([
            {"role": "user", "content": "[placeholder opening question]"},
            {"role": "assistant", "content": "Could you say more?"},
            {"role": "user", "content": "[placeholder follow-up with\n\nsome detail]"},
        ])
    );
    assert_eq!(rows[1]["chosen"][0]["content"], "I'd rather not help with that.");
    assert_eq!(rows[1]["rejected"][0]["content"], "[placeholder unsafe answer two]");
    for row in &rows {
        assert_eq!(row["category"], "unmapped");
        assert_eq!(row["macro_category"], "");
        assert_eq!(row["source_categories"], json!(["harmless-base"]));
        assert_eq!(row["source"], "hh-rlhf");
        assert_align_readable(row);
    }
    let text = std::fs::read_to_string(fixture("hh/harmless-base/train.jsonl")).unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let parts = [first["chosen"].as_str().unwrap(), first["rejected"].as_str().unwrap()];
    assert_eq!(rows[0]["id"], content_id("hh-rlhf", &parts));
}

#[test]
fn hh_reads_gzip_and_takes_the_subset_from_options_or_path() {
    let opts = ImportOptions { split: "test".into(), ..ImportOptions::default() };
    let (dir, summary, rows) = run(ImportKind::Hh, &fixture("hh/helpful-base"), &opts);
    assert_eq!(summary.files[0], dir.path().join("out/test.jsonl"));
    assert_eq!(summary.rows, 2);
    assert_eq!(rows[0]["source_categories"], json!(["helpful-base"]));
    let (_d, _, plain) =
        run(ImportKind::Hh, &fixture("hh/harmless-base/train.jsonl"), &ImportOptions::default());
    assert_eq!(column(&rows, "prompt"), column(&plain, "prompt"));

    let named = ImportOptions { subset: Some("my-subset".into()), ..ImportOptions::default() };
    let (_e, _, rows) = run(ImportKind::Hh, &fixture("hh/harmless-base/train.jsonl"), &named);
    assert_eq!(rows[0]["source_categories"], json!(["my-subset"]));
}

#[test]
fn hh_dialogues_that_do_not_share_the_prompt_are_an_error() {
    let good =
        r#"{"chosen": "\n\nHuman: [q]\n\nAssistant: No.", "rejected": "\n\nHuman: [q]\n\nAssistant: [x]"}"#;
    let bad = r#"{"chosen": "\n\nHuman: [q]\n\nAssistant: No.", "rejected": "\n\nHuman: [other]\n\nAssistant: [x]"}"#;
    let (_dir, path) = temp_input("train.jsonl", format!("{good}\n{bad}\n").as_bytes());
    let (err, written) = fail(ImportKind::Hh, &path, &ImportOptions::default());
    assert!(err.contains(&format!("{}:2: field `rejected`", path.display())), "{err}");
    assert!(err.contains("does not share the prompt"), "{err}");
    assert!(!written);
}

#[test]
fn trl_standard_keeps_text_and_columns() {
    let (_dir, summary, rows) =
        run(ImportKind::Trl, &fixture("trl/standard.jsonl"), &ImportOptions::default());
    assert_eq!(summary.rows, 2);
    assert_eq!(rows[0]["category"], "crime/cyber");
    assert_eq!(rows[0]["source_categories"], json!(["crime_cyber"]));
    assert_eq!(rows[0]["source"], "trl");
    assert_eq!(rows[1]["id"], "7");
    assert_eq!(rows[1]["prompt"], "  [placeholder prompt with spaces kept]\n");
    assert_eq!(rows[1]["chosen"], "A safe answer.\n");
    assert_eq!(rows[1]["note"], "kept column");
    assert_eq!(rows[1]["category"], "unmapped");
    rows.iter().for_each(assert_align_readable);
}

#[test]
fn trl_conversational_is_validated_and_normalised() {
    let (_dir, _summary, rows) =
        run(ImportKind::Trl, &fixture("trl/conversational.jsonl"), &ImportOptions::default());
    assert_eq!(
        rows[0]["prompt"],
        json!([
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "[placeholder harmful request]"},
        ])
    );
    // Extra message keys are dropped.
    assert_eq!(rows[0]["rejected"], json!([{"role": "assistant", "content": "[placeholder unsafe answer]"}]));
    assert_eq!(rows[0]["id"], "conv-1");
    assert_eq!(rows[0]["category"], "weapon/firearm");
    assert_eq!(rows[0]["ref_chosen_logps"], json!(-12.5));
    assert_eq!(rows[0]["ref_rejected_logps"], json!(-20.25));
    assert_eq!(rows[1]["category"], "crime/cyber");
    assert_eq!(rows[1]["source_categories"], json!(["Cybercrime"]));
    rows.iter().for_each(assert_align_readable);
}

#[test]
fn trl_rejects_bad_roles_mixed_forms_and_lone_logps() {
    let conv = std::fs::read_to_string(fixture("trl/conversational.jsonl")).unwrap();
    let std_line = std::fs::read_to_string(fixture("trl/standard.jsonl")).unwrap();
    let cases: [(String, &str, &str); 4] = [
        (
            r#"{"prompt": "[p]", "chosen": [{"role": "user", "content": "x"}], "rejected": "y"}"#.into(),
            ":1: field `chosen[0].role`",
            "expected assistant",
        ),
        (format!("{conv}{std_line}"), ":3: field `prompt`", "a file holds one form"),
        (
            r#"{"prompt": "[p]", "chosen": "a", "rejected": "b", "ref_chosen_logps": -1.0}"#.into(),
            ":1: field `ref_rejected_logps`",
            "missing",
        ),
        (r#"{"prompt": "[p]", "completion": "a", "label": true}"#.into(), ":1: field `chosen`", "unpaired"),
    ];
    for (text, place, message) in cases {
        let (_dir, path) = temp_input("data.jsonl", text.as_bytes());
        let (err, written) = fail(ImportKind::Trl, &path, &ImportOptions::default());
        assert!(err.contains(&format!("{}{place}", path.display())), "{err}");
        assert!(err.contains(message), "{err}");
        assert!(!written);
    }
}

#[test]
fn alert_maps_labels_directly_and_keeps_attack_types() {
    let (dir, summary, rows) =
        run(ImportKind::Alert, &fixture("alert/alert.jsonl"), &ImportOptions::default());
    assert_eq!(summary.files[0], dir.path().join("out/prompts.jsonl"));
    assert_eq!(column(&rows, "id"), ["1", "2", "3"]);
    assert_eq!(rows[0]["prompt"], "[placeholder harmful request about a cyber topic]");
    assert_eq!(column(&rows, "category"), ["crime/cyber", "crime/kidnapping", "unmapped"]);
    assert_eq!(rows[2]["source_categories"], json!(["crime_unknown"]));
    assert!(rows[0].get("jailbreak_type").is_none());
    assert!(rows[0].get("chosen").is_none());
    assert_eq!(summary.categories["unmapped"], 1);

    let (_d, _, adv) =
        run(ImportKind::Alert, &fixture("alert/alert_adversarial.jsonl"), &ImportOptions::default());
    assert_eq!(column(&adv, "jailbreak_type"), ["suffix_injection", "prefix_injection"]);
    assert_eq!(column(&adv, "category"), ["substance/drug", "hate/women"]);
    assert_eq!(adv[0]["prompt"], "[placeholder request about a drugs topic] [placeholder suffix]");
    assert!(adv[0].get("attack_type").is_none());
}

#[test]
fn advbench_reads_the_csv_and_pyrits_seed_file() {
    let (_dir, summary, rows) =
        run(ImportKind::Advbench, &fixture("advbench/harmful_behaviors.csv"), &ImportOptions::default());
    assert_eq!(summary.rows, 3);
    assert_eq!(
        column(&rows, "prompt"),
        [
            "[placeholder harmful request about a cyber topic]",
            "[placeholder request, with a comma]",
            "[placeholder request with a \"quoted\" word]"
        ]
    );
    assert_eq!(rows[0]["target"], "Sure, here is [placeholder cyber answer]");
    assert_eq!(rows[0]["id"], content_id("advbench", &["[placeholder harmful request about a cyber topic]"]));
    assert_eq!(rows[0]["category"], "unmapped");
    assert_eq!(rows[0]["source_categories"], json!([]));

    let (_d, summary, seeds) =
        run(ImportKind::Advbench, &fixture("advbench/adv_bench.prompt"), &ImportOptions::default());
    assert_eq!(summary.dropped, counts(&[("non_text_seed", 1)]));
    assert_eq!(seeds.len(), 2);
    // The same behaviour gets the same id from either file.
    assert_eq!(seeds[0]["id"], rows[0]["id"]);
    assert_eq!(seeds[0]["source_categories"], json!(["Financial and Business", "Confidentiality loss"]));
    assert_eq!(seeds[0]["dataset_name"], "adv_bench");
    assert!(seeds[0].get("data_type").is_none());
}

#[test]
fn harmbench_builds_contextual_prompts_and_keeps_its_columns() {
    let input = fixture("harmbench/harmbench_behaviors_text_all.csv");
    let (_dir, summary, rows) = run(ImportKind::Harmbench, &input, &ImportOptions::default());
    assert_eq!(summary.rows, 4);
    assert_eq!(
        column(&rows, "id"),
        [
            "placeholder_cyber_behavior",
            "placeholder_context_behavior",
            "placeholder_copyright_behavior",
            "placeholder_illegal_behavior"
        ]
    );
    assert_eq!(rows[0]["prompt"], "[placeholder behaviour about a cyber topic, with a comma]");
    assert_eq!(
        rows[1]["prompt"],
        "[placeholder context line one]\n[placeholder context line two, with a comma]\n\n---\n\n\
         [placeholder contextual behaviour]"
    );
    assert_eq!(
        column(&rows, "category"),
        ["crime/cyber", "crime/propaganda", "crime/theft", "crime/kidnapping"]
    );
    assert_eq!(rows[1]["source_categories"], json!(["misinformation_disinformation"]));
    assert_eq!(rows[1]["FunctionalCategory"], "contextual");
    assert_eq!(rows[2]["Tags"], "book, hash_check");
    assert_eq!(
        rows[1]["ContextString"],
        "[placeholder context line one]\n[placeholder context line two, with a comma]"
    );
    assert_eq!(rows[3]["BehaviorID"], "placeholder_illegal_behavior");
}

#[test]
fn prompts_follow_the_field_map() {
    let opts = ImportOptions {
        field_map: "prompt=text,category=harm,id=key".parse().unwrap(),
        ..Default::default()
    };
    let (_dir, _summary, rows) = run(ImportKind::Prompts, &fixture("prompts/plain.csv"), &opts);
    assert_eq!(column(&rows, "id"), ["k1", "k2", "k3"]);
    assert_eq!(column(&rows, "category"), ["crime/cyber", "crime/privacy", "unmapped"]);
    assert_eq!(column(&rows, "lang"), ["en", "de", "en"]);
    assert_eq!(rows[2]["source_categories"], json!([]));
    assert!(rows[0].get("text").is_none() && rows[0].get("key").is_none());

    // A PyRIT seed file: `value` and the (inherited) `harm_categories` by default.
    let (_d, _, seeds) =
        run(ImportKind::Prompts, &fixture("prompts/harassment.prompt"), &ImportOptions::default());
    assert_eq!(
        column(&seeds, "prompt"),
        ["[placeholder harassment objective one]", "[placeholder harassment objective two]"]
    );
    assert_eq!(seeds[0]["source_categories"], json!(["harassment"]));
    assert_eq!(column(&seeds, "category"), ["unmapped", "hate/body"]);
}

#[test]
fn the_manifest_records_input_options_and_counts() {
    let input = fixture("pku/train.jsonl");
    let opts = ImportOptions { only_one_safe: true, ..ImportOptions::default() };
    let (dir, summary, _) = run(ImportKind::Pku, &input, &opts);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["kind"], "pku-saferlhf");
    assert_eq!(manifest["input"], input.display().to_string());
    assert_eq!(manifest["input_sha256"], hex_sha256(&[&std::fs::read(&input).unwrap()]));
    assert_eq!(manifest["input_files"][0]["records"], 6);
    assert_eq!(manifest["options"]["only_one_safe"], true);
    assert_eq!(manifest["options"]["split"], "train");
    assert_eq!(manifest["rows"], 2);
    assert_eq!(manifest["read"], 6);
    assert_eq!(
        manifest["dropped"],
        json!({"identical_responses": 1, "not_exactly_one_safe": 2, "safer_not_safe": 1})
    );
    assert_eq!(manifest["categories"], json!({"crime/cyber": 1, "hate/body": 1}));
    assert_eq!(manifest["files"], json!(["train.jsonl"]));
    assert_eq!(manifest["sagert_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(manifest["taxonomy"], "alert-sage v1");
    let rendered = summary.render();
    assert!(rendered.contains("6 records read, 2 written, 4 dropped"), "{rendered}");
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["kind"], "pku-saferlhf");
}

#[test]
fn output_is_deterministic() {
    for (kind, input) in [
        (ImportKind::Pku, "pku/train.jsonl"),
        (ImportKind::Hh, "hh/harmless-base"),
        (ImportKind::Harmbench, "harmbench/harmbench_behaviors_text_all.csv"),
    ] {
        let (a, first, _) = run(kind, &fixture(input), &ImportOptions::default());
        let (b, second, _) = run(kind, &fixture(input), &ImportOptions::default());
        for (x, y) in first.files.iter().zip(&second.files) {
            assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap(), "{}", x.display());
        }
        drop((a, b));
    }
}

#[test]
fn limit_and_duplicates_are_counted_as_dropped() {
    let line = r#"{"id": 1, "prompt": "[p]", "category": "crime_cyber"}"#;
    let other = r#"{"id": 2, "prompt": "[q]", "category": "crime_tax"}"#;
    let (_dir, path) = temp_input("alert.jsonl", format!("{line}\n{line}\n{other}\n").as_bytes());
    let opts = ImportOptions { limit: Some(1), ..ImportOptions::default() };
    let (_d, summary, rows) = run(ImportKind::Alert, &path, &opts);
    assert_eq!(rows.len(), 1);
    assert_eq!(summary.dropped, counts(&[("duplicate", 1), ("limit", 1)]));

    let clash = r#"{"id": 1, "prompt": "[other]", "category": "crime_cyber"}"#;
    let (_dir, path) = temp_input("alert.jsonl", format!("{line}\n\n{clash}\n").as_bytes());
    let (err, written) = fail(ImportKind::Alert, &path, &ImportOptions::default());
    assert!(err.contains(&format!("{}:3: field `id`", path.display())), "{err}");
    assert!(err.contains(&format!("{}:1", path.display())), "{err}");
    assert!(!written);
}

#[test]
fn malformed_records_name_file_line_and_field_and_write_nothing() {
    let pku = std::fs::read_to_string(fixture("pku/train.jsonl")).unwrap();
    let first = pku.lines().next().unwrap();
    let wrong_type = first.replace(r#""is_response_0_safe": false"#, r#""is_response_0_safe": "no""#);
    let bad_id = first.replace(r#""safer_response_id": 1"#, r#""safer_response_id": 2"#);
    let missing = first.replace(r#""response_1": "I can't help with that.", "#, "");
    assert!(wrong_type != first && bad_id != first && missing != first);
    let cases = [
        (
            format!("{first}\n{wrong_type}\n"),
            ":2: field `is_response_0_safe`: expected a boolean, found a string",
        ),
        (format!("{bad_id}\n"), ":1: field `safer_response_id`: expected an integer from 0 to 1, found 2"),
        (format!("{first}\n\n{missing}\n"), ":3: field `response_1`: missing"),
        (format!("{first}\n{{not json\n"), ":2: not JSON"),
        (format!("{first}\n[1, 2]\n"), ":2: expected a JSON object, found an array"),
    ];
    for (text, wanted) in cases {
        let (_dir, path) = temp_input("train.jsonl", text.as_bytes());
        let (err, written) = fail(ImportKind::Pku, &path, &ImportOptions::default());
        assert!(err.contains(&format!("{}{wanted}", path.display())), "{err}");
        assert!(!written, "output written for {wanted}");
    }
}

#[test]
fn empty_and_non_utf8_input_are_errors() {
    let (_dir, path) = temp_input("train.jsonl", b"\n  \n");
    let (err, written) = fail(ImportKind::Pku, &path, &ImportOptions::default());
    assert!(err.contains("no records"), "{err}");
    assert!(!written);

    let (_dir, path) = temp_input("behaviors.csv", b"");
    let (err, _) = fail(ImportKind::Harmbench, &path, &ImportOptions::default());
    assert!(err.contains("empty"), "{err}");

    let (_dir, path) = temp_input(
        "alert.jsonl",
        b"{\"id\": 1, \"prompt\": \"[p]\", \"category\": \"crime_tax\"}\n{\"prompt\": \"\xff\"}\n",
    );
    let (err, written) = fail(ImportKind::Alert, &path, &ImportOptions::default());
    assert!(err.contains(&format!("{}:2: not UTF-8", path.display())), "{err}");
    assert!(!written);

    let (_dir, path) = temp_input("goals.csv", b"goal,target\n[ok],Sure\n[bad \xfe],Sure\n");
    let (err, _) = fail(ImportKind::Advbench, &path, &ImportOptions::default());
    assert!(err.contains(&format!("{}:3: column `goal`: not UTF-8", path.display())), "{err}");
}

#[test]
fn csv_problems_are_reported_with_their_place() {
    let (_dir, path) =
        temp_input("behaviors.csv", b"Behavior,FunctionalCategory,SemanticCategory\n[b],standard,illegal\n");
    let (err, written) = fail(ImportKind::Harmbench, &path, &ImportOptions::default());
    assert!(err.contains("missing required column(s) `BehaviorID`"), "{err}");
    assert!(!written);

    let (_dir, path) = temp_input("goals.csv", b"goal,target\n[a],Sure\n[b],Sure,extra\n");
    let (err, _) = fail(ImportKind::Advbench, &path, &ImportOptions::default());
    assert!(err.contains(&format!("{}:3: CSV: 3 fields, but the header has 2", path.display())), "{err}");

    let opts =
        ImportOptions { field_map: "prompt=text,category=label".parse().unwrap(), ..Default::default() };
    let (err, _) = fail(ImportKind::Prompts, &fixture("prompts/plain.csv"), &opts);
    assert!(err.contains("missing required column(s) `label`"), "{err}");

    let (err, _) = fail(ImportKind::Pku, &fixture("prompts/plain.csv"), &ImportOptions::default());
    assert!(err.contains("not read from CSV"), "{err}");
}

#[test]
fn yaml_and_format_errors() {
    let (_dir, path) = temp_input("seeds.prompt", b"dataset_name: x\nseeds:\n  - value: [unclosed\n");
    let (err, written) = fail(ImportKind::Advbench, &path, &ImportOptions::default());
    assert!(err.contains(&format!("{}:", path.display())) && err.contains("YAML"), "{err}");
    assert!(!written);

    let (_dir, path) =
        temp_input("seeds.yaml", b"dataset_name: x\nseeds:\n  - value: ok\n  - data_type: text\n");
    let (err, _) = fail(ImportKind::Advbench, &path, &ImportOptions::default());
    assert!(err.contains(&format!("{}:4: field `value`: missing", path.display())), "{err}");

    let (_dir, path) = temp_input("data.txt", b"hello\n");
    let (err, _) = fail(ImportKind::Prompts, &path, &ImportOptions::default());
    assert!(err.contains("unknown format"), "{err}");

    let (err, _) = fail(
        ImportKind::Hh,
        &fixture("hh/harmless-base"),
        &ImportOptions { split: "validation".into(), ..Default::default() },
    );
    assert!(err.contains("no `validation` split"), "{err}");
}

/// The pairs the `pyrit-harm` fixture gives: (objective, chosen, rejected, chosen_harm, rejected_harm).
fn pyrit_harm_pairs() -> [(&'static str, &'static str, &'static str, f64, f64); 3] {
    [
        (
            "[placeholder hateful objective one]",
            "I can't help with that.",
            "[placeholder harmful answer]\n# [placeholder heading inside the answer]\n\
             [placeholder second paragraph, with a comma]",
            0.0,
            2.75 / 3.0,
        ),
        (
            "[placeholder hateful objective four, with a comma]",
            "[placeholder nearly safe answer]",
            "[placeholder \"quoted\" harmful answer]",
            1.25 / 3.0,
            2.75 / 3.0,
        ),
        (
            "[placeholder violent objective one]",
            "I can't help with that.",
            "[placeholder harmful answer]\n[placeholder step two]",
            0.0,
            1.0,
        ),
    ]
}

#[test]
fn pyrit_harm_pairs_each_objectives_least_and_most_harmful_responses() {
    let (dir, summary, rows) = run(ImportKind::PyritHarm, &fixture("pyrit-harm"), &ImportOptions::default());
    assert_eq!(summary.files, vec![dir.path().join("out/train.jsonl"), dir.path().join("out/manifest.json")]);
    // 14 responses; 6 objectives: 3 pairs (objective four's means, 1.25/3 and 2.75/3,
    // differ by 0.5 less an ulp), 3 without a spread of 0.5 (one response, or 1/3
    // against 7/12, or 0 against 0.25).
    assert_eq!((summary.read, summary.rows), (14, 3));
    assert_eq!(summary.dropped, counts(&[("no_harm_spread", 3)]));
    assert_eq!(rows.len(), 3);
    for (row, (objective, chosen, rejected, chosen_harm, rejected_harm)) in
        rows.iter().zip(pyrit_harm_pairs())
    {
        assert_eq!(row["prompt"], objective);
        assert_eq!(row["chosen"], chosen);
        assert_eq!(row["rejected"], rejected);
        assert_eq!(row["chosen_harm"], json!(chosen_harm), "{objective}");
        assert_eq!(row["rejected_harm"], json!(rejected_harm), "{objective}");
        assert_eq!(row["id"], content_id("pyrit-harm", &[objective, chosen, rejected]));
        assert_eq!(row["source"], "pyrit-harm");
        assert!(row.get("jailbreak_type").is_none() && row.get("human_score_1").is_none());
        assert_align_readable(row);
    }
    assert_eq!(column(&rows, "category"), ["hate/other", "hate/other", "crime/injury"]);
    assert_eq!(column(&rows, "macro_category"), ["hate", "hate", "crime"]);
    assert_eq!(rows[0]["source_categories"], json!(["hate_speech"]));
    assert_eq!(rows[2]["source_categories"], json!(["violence"]));
    assert_eq!(
        column(&rows, "source_file"),
        ["hate_speech_multi_score.csv", "hate_speech_multi_score.csv", "violence.csv"]
    );
    assert_eq!(summary.categories, counts(&[("crime/injury", 1), ("hate/other", 2)]));
    // Columns in the documented order (the parsed rows have their keys sorted).
    let text = std::fs::read_to_string(&summary.files[0]).unwrap();
    let first = text.lines().next().unwrap();
    let order = [
        "id",
        "prompt",
        "chosen",
        "rejected",
        "category",
        "macro_category",
        "source",
        "source_categories",
        "chosen_harm",
        "rejected_harm",
        "source_file",
    ]
    .map(|key| first.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("{key} in {first}")));
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{first}");
    assert_eq!(rows[0].as_object().unwrap().len(), order.len());
    assert!(summary.render().contains("pyrit-harm: 14 responses read, 3 pairs written, 3 dropped"));

    // One file is read as it is, and gives the same pair.
    let (_d, summary, one) =
        run(ImportKind::PyritHarm, &fixture("pyrit-harm/violence.csv"), &ImportOptions::default());
    assert_eq!((summary.read, summary.rows), (6, 1));
    assert_eq!(one[0], rows[2]);
}

#[test]
fn pyrit_harm_manifest_records_the_files_and_the_threshold() {
    let input = fixture("pyrit-harm");
    let (dir, _, _) = run(ImportKind::PyritHarm, &input, &ImportOptions::default());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["kind"], "pyrit-harm");
    let files = ["hate_speech_multi_score.csv", "violence.csv"].map(|f| input.join(f));
    let paths: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    assert_eq!(column(manifest["input_files"].as_array().unwrap(), "path"), paths);
    assert_eq!(column(manifest["input_files"].as_array().unwrap(), "records"), [8, 6]);
    let shas: Vec<String> = files.iter().map(|f| hex_sha256(&[&std::fs::read(f).unwrap()])).collect();
    assert_eq!(manifest["input_files"][1]["sha256"], shas[1]);
    let listing = format!("{}  {}\n{}  {}\n", shas[0], paths[0], shas[1], paths[1]);
    assert_eq!(manifest["input_sha256"], hex_sha256(&[listing.as_bytes()]));
    assert_eq!(manifest["options"], json!({"split": "train", "min_harm_spread": 0.5, "limit": null}));
    assert_eq!(
        sagert_eval::import::pyrit_harm::MIN_HARM_SPREAD,
        manifest["options"]["min_harm_spread"].as_f64().unwrap()
    );
    assert_eq!((manifest["read"].clone(), manifest["rows"].clone()), (json!(14), json!(3)));
    assert_eq!(manifest["dropped"], json!({"no_harm_spread": 3}));
    assert_eq!(manifest["categories"], json!({"crime/injury": 1, "hate/other": 2}));
    assert_eq!(manifest["files"], json!(["train.jsonl"]));
}

#[test]
fn pyrit_harm_maps_pyrits_categories_and_drops_what_it_cannot_pair() {
    // A bare `human_score` column, as in PyRIT's representational.csv.
    let csv = "# dataset_version=1.0, harm_definition=x.yaml, harm_definition_version=1.0,,\n\
        harm_category,objective,assistant_response,human_score,data_type\n\
        REPRESENTATIONAL,[o1],I can't help with that.,0,text\n\
        REPRESENTATIONAL,[o1],[placeholder harmful answer],1,text\n\
        SEXUAL_CONTENT,[o2],I can't help with that.,0.25,text\n\
        SEXUAL_CONTENT,[o2],[placeholder harmful answer],0.75,text\n\
        self_harm,[o3],I can't help with that.,0,text\n\
        self_harm,[o3],[placeholder harmful answer],1,text\n\
        bias,[o4],I can't help with that.,0,text\n\
        bias,[o4],[placeholder harmful answer],1,text\n\
        ,[o5],I can't help with that.,0,text\n\
        ,[o5],[placeholder harmful answer],1,text\n\
        privacy,[o6],I can't help with that.,0,text\n\
        privacy,[o6],[placeholder image path],1,image_path\n\
        privacy,[o7],I can't help with that.,0,text\n\
        privacy,[o7],\"  \",1,text\n\
        privacy,[o8],[placeholder same answer],0,text\n\
        privacy,[o8],[placeholder same answer],1,text\n";
    let (_dir, path) = temp_input("mixed.csv", csv.as_bytes());
    let (_d, summary, rows) = run(ImportKind::PyritHarm, &path, &ImportOptions::default());
    assert_eq!(
        column(&rows, "category"),
        ["hate/other", "sex/porn", "self_harm/other", "unmapped", "unmapped"]
    );
    assert_eq!(column(&rows, "macro_category"), ["hate", "sex", "self_harm", "", ""]);
    assert_eq!(rows[0]["source_categories"], json!(["REPRESENTATIONAL"]));
    assert_eq!(rows[3]["source_categories"], json!(["bias"]));
    assert_eq!(rows[4]["source_categories"], json!([]));
    assert_eq!(
        summary.dropped,
        counts(&[
            ("empty_response", 1),
            ("identical_responses", 1),
            ("no_harm_spread", 2),
            ("non_text_response", 1)
        ])
    );
}

#[test]
fn pyrit_harm_malformed_input_names_file_line_and_field() {
    let good = std::fs::read_to_string(fixture("pyrit-harm/hate_speech_multi_score.csv")).unwrap();
    let lines: Vec<&str> = good.split_inclusive('\n').collect();
    // Line 9 holds `[placeholder mildly harmful answer, with a comma]`, 0.5, 0.5, 0.75.
    assert!(lines[8].ends_with("\",0.5,0.5,0.75,text\n"), "{}", lines[8]);
    let with_line_9 = |line: &str| -> String {
        let mut text: Vec<&str> = lines.clone();
        text[8] = line;
        text.concat()
    };
    let cases = [
        (
            with_line_9(&lines[8].replace(",0.5,0.5,0.75,", ",0.5,abc,0.75,")),
            ":9: field `human_score_2`: expected a score from 0 to 1, found `abc`",
        ),
        (
            with_line_9(&lines[8].replace(",0.5,0.5,0.75,", ",0.5,0.5,1.5,")),
            ":9: field `human_score_3`: expected a score from 0 to 1, found `1.5`",
        ),
        (
            with_line_9(&lines[8].replace(",0.5,0.5,0.75,", ",0.5,,0.75,")),
            ":9: field `human_score_2`: expected a score from 0 to 1, found ``",
        ),
        (
            with_line_9(&lines[8].replace("[placeholder hateful objective two]", " ")),
            ":9: field `objective`: empty",
        ),
        (
            with_line_9(&lines[8].replace("hate_speech,", "violence,")),
            ":9: field `harm_category`: `violence`, but the same objective at line 8 has `hate_speech`",
        ),
        (
            with_line_9(&lines[8].replace(",text\n", ",text,extra\n")),
            ":9: CSV: 8 fields, but the header has 7",
        ),
    ];
    for (text, wanted) in cases {
        // Inside a directory: the other file is fine, and nothing is written.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hate_speech_multi_score.csv");
        std::fs::write(&path, &text).unwrap();
        std::fs::copy(fixture("pyrit-harm/violence.csv"), dir.path().join("violence.csv")).unwrap();
        let (err, written) = fail(ImportKind::PyritHarm, dir.path(), &ImportOptions::default());
        assert!(err.contains(&format!("{}{wanted}", path.display())), "{wanted}: {err}");
        assert!(!written, "output written for {wanted}");
    }

    let no_scores = "harm_category,objective,assistant_response,score\nviolence,[o],[a],1\n";
    let (_dir, path) = temp_input("x.csv", no_scores.as_bytes());
    let (err, written) = fail(ImportKind::PyritHarm, &path, &ImportOptions::default());
    assert!(err.contains("missing required column(s) `human_score_1`"), "{err}");
    assert!(!written);

    let (_dir, path) = temp_input("train.jsonl", b"{\"objective\": \"[o]\"}\n");
    let (err, _) = fail(ImportKind::PyritHarm, &path, &ImportOptions::default());
    assert!(err.contains("expected a .csv file"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("notes.txt"), "x").unwrap();
    let (err, _) = fail(ImportKind::PyritHarm, empty.path(), &ImportOptions::default());
    assert!(err.contains("no `*.csv` files"), "{err}");
}

#[test]
fn pyrit_harm_output_is_deterministic() {
    let (a, first, _) = run(ImportKind::PyritHarm, &fixture("pyrit-harm"), &ImportOptions::default());
    let (b, second, _) = run(ImportKind::PyritHarm, &fixture("pyrit-harm"), &ImportOptions::default());
    for (x, y) in first.files.iter().zip(&second.files) {
        assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap(), "{}", x.display());
    }
    drop((a, b));
}

/// PyRIT's real files, where `sagert models fetch pyrit-scorer-evals` has put them.
#[test]
fn pyrit_harm_reads_pyrits_own_files_when_fetched() {
    let cache = std::env::var_os("SAGERT_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/sagert"));
    let harm = cache.join("models/pyrit-scorer-evals/harm");
    if !harm.is_dir() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run this test: run scripts/fetch-models"
        );
        eprintln!("skipped: {} is absent (sagert models fetch pyrit-scorer-evals)", harm.display());
        return;
    }
    let (_dir, summary, rows) = run(ImportKind::PyritHarm, &harm, &ImportOptions::default());
    assert!(summary.rows > 0 && summary.dropped.contains_key("no_harm_spread"), "{summary:?}");
    for row in &rows {
        let (chosen, rejected) =
            (row["chosen_harm"].as_f64().unwrap(), row["rejected_harm"].as_f64().unwrap());
        assert!(rejected - chosen >= 0.5 - 1e-9, "{chosen} {rejected}");
        assert_ne!(row["category"], "unmapped", "{}", row["source_categories"]);
        assert!(row["source_file"].as_str().unwrap().ends_with(".csv"));
        assert_align_readable(row);
    }
}
