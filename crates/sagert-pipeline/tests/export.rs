//! Behaviour tests of the dataset export (`sagert_pipeline::export`): files,
//! columns, formats, the card, atomic replacement, reading pairs back, and
//! (with `SAGERT_PYTHON_CHECK=1`, always in CI) `scripts/check-dataset.py`.
//!
//! Every text is a placeholder: no real harmful content.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use parquet::basic::LogicalType;
use parquet::file::reader::{FileReader, SerializedFileReader};
use sagert_pipeline::export::{
    columns, read_pairs_jsonl, read_parquet_rows, write_dataset_dir, write_dataset_dir_with, ExportFormat,
    ExportOptions, DEFAULT_LICENSE, ROW_GROUP_ROWS,
};
use sagert_pipeline::record::{Dataset, Manifest, PairRecord, Verdicts};
use sagert_pipeline::PipelineError;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{json, Value};

// ---------------------------------------------------------------- fixtures

const TYPES: [&str; 3] = ["direct_request", "role_play", "hypothetical"];
const LEAVES: [(&str, &str, &str); 3] = [
    ("crime", "crime_injury", "assault_planning"),
    ("crime", "crime_theft", "shoplifting"),
    ("hate", "hate_ethnic", "slurs"),
];

fn pair(i: usize, split: &str) -> PairRecord {
    let (macro_category, micro, leaf) = LEAVES[i % LEAVES.len()];
    let path = format!("{macro_category}/{micro}/{leaf}");
    PairRecord {
        id: format!("{split}-{i}"),
        prompt: format!("[placeholder harmful request about topic {i}] \"quoted\" | piped\nsecond line é ✓"),
        chosen: format!("[placeholder safe answer {i}]"),
        rejected: format!("[placeholder unsafe answer {i}]"),
        taxonomy_path: path.clone(),
        macro_category: macro_category.into(),
        micro_category: micro.into(),
        leaf: leaf.into(),
        topic: format!("placeholder topic {i}"),
        topic_id: format!("{path}#{i}"),
        jailbreak_type: TYPES[i % TYPES.len()].into(),
        raw_text_format: "forum_post".into(),
        epoch: (i % 3) as u32,
        expander_model: "mock-expander".into(),
        generator_model: "mock-generator".into(),
        safe_responder_model: "mock-safe".into(),
        unsafe_responder_model: if i.is_multiple_of(2) { "raw_text".into() } else { "mock-unsafe".into() },
        judge: "classifier".into(),
        seed: 42,
        verdicts: Verdicts {
            query_harmful: true,
            query_in_category: true,
            chosen_safe: true,
            chosen_not_over_refusal: i % 4 != 3,
            rejected_unsafe: true,
            query_harm_score: 0.9,
            chosen_harm_score: 0.01 * i as f64,
            chosen_refusal_score: 0.1 + 1.0 / 3.0,
            rejected_harm_score: 1.0,
        },
    }
}

fn dataset(train: usize, test: usize) -> Dataset {
    Dataset {
        name: "SAGE \"placeholder\" safety pairs".into(),
        train: (0..train).map(|i| pair(i, "train")).collect(),
        test: (0..test).map(|i| pair(i + 100, "test")).collect(),
        manifest: Manifest {
            run_name: "export-test".into(),
            sagert_version: "0.1.0".into(),
            config_hash: "ab".repeat(32),
            template_hashes: BTreeMap::from([("expand.j2".into(), "cd".repeat(32))]),
            models: BTreeMap::from([
                ("expander".into(), "mock-expander".into()),
                ("judge".into(), "classifier".into()),
            ]),
            seed: 42,
            taxonomy: "alert-sage 1".into(),
            // Overwritten by the export from the data.
            splits: BTreeMap::from([("stale".into(), 99)]),
        },
    }
}

fn export(train: usize, test: usize) -> (tempfile::TempDir, PathBuf, Dataset) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("dataset");
    let ds = dataset(train, test);
    write_dataset_dir(&out, &ds, &ExportFormat::ALL).unwrap();
    (tmp, out, ds)
}

/// A JSON object with its keys in file order.
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn jsonl_rows(path: &Path) -> Vec<Vec<(String, Value)>> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "{}: last line not terminated", path.display());
    text.lines().map(|l| serde_json::from_str::<Ordered>(l).unwrap().0).collect()
}

fn names(row: &[(String, Value)]) -> Vec<&str> {
    row.iter().map(|(k, _)| k.as_str()).collect()
}

fn field<'a>(row: &'a [(String, Value)], name: &str) -> &'a Value {
    &row.iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("no column `{name}`")).1
}

fn parquet_schema(path: &Path) -> Vec<(String, Option<LogicalType>)> {
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let schema = reader.metadata().file_metadata().schema();
    schema
        .get_fields()
        .iter()
        .map(|f| (f.name().to_string(), f.get_basic_info().logical_type_ref().cloned()))
        .collect()
}

fn files_of(format: ExportFormat) -> Vec<String> {
    format.splits().iter().map(|s| format!("{format}/{s}")).collect()
}

// ---------------------------------------------------------------- tests

#[test]
fn parquet_rows_equal_jsonl_rows() {
    let (_tmp, out, _) = export(7, 3);
    for format in ExportFormat::ALL {
        for file in files_of(format) {
            let json = jsonl_rows(&out.join(format!("{file}.jsonl")));
            let parquet = read_parquet_rows(&out.join(format!("{file}.parquet"))).unwrap();
            assert!(!json.is_empty(), "{file}: no rows");
            assert_eq!(json.len(), parquet.len(), "{file}: row counts");
            for (i, (j, p)) in json.iter().zip(&parquet).enumerate() {
                assert_eq!(j, p, "{file}: row {i}");
            }
        }
    }
}

#[test]
fn large_splits_become_several_row_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    let pairs = ROW_GROUP_ROWS / 2 + 1;
    write_dataset_dir(&out, &dataset(pairs, 0), &[ExportFormat::Kto]).unwrap();
    let path = out.join("kto/train.parquet");
    let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let groups: Vec<i64> = reader.metadata().row_groups().iter().map(|g| g.num_rows()).collect();
    assert_eq!(groups, [ROW_GROUP_ROWS as i64, 2]);
    let parquet = read_parquet_rows(&path).unwrap();
    let json = jsonl_rows(&out.join("kto/train.jsonl"));
    assert_eq!(parquet.len(), 2 * pairs);
    assert_eq!(parquet[ROW_GROUP_ROWS - 1..], json[ROW_GROUP_ROWS - 1..], "rows across the group boundary");
}

#[test]
fn columns_are_in_the_documented_order() {
    let (_tmp, out, _) = export(3, 1);
    let provenance = [
        "id",
        "taxonomy_path",
        "macro_category",
        "micro_category",
        "leaf",
        "topic",
        "topic_id",
        "jailbreak_type",
        "raw_text_format",
        "epoch",
        "expander_model",
        "generator_model",
        "safe_responder_model",
        "unsafe_responder_model",
        "judge",
        "seed",
        "verdict_query_harmful",
        "verdict_query_in_category",
        "verdict_chosen_safe",
        "verdict_chosen_not_over_refusal",
        "verdict_rejected_unsafe",
        "query_harm_score",
        "chosen_harm_score",
        "chosen_refusal_score",
        "rejected_harm_score",
    ];
    let expected =
        |head: &[&'static str]| -> Vec<&'static str> { head.iter().chain(&provenance).copied().collect() };
    let cases = [
        (ExportFormat::Trl, expected(&["prompt", "chosen", "rejected"])),
        (ExportFormat::TrlChat, expected(&["prompt", "chosen", "rejected"])),
        (ExportFormat::Kto, expected(&["prompt", "completion", "label"])),
        (
            ExportFormat::Redteam,
            vec![
                "id",
                "prompt",
                "taxonomy_path",
                "macro_category",
                "micro_category",
                "leaf",
                "jailbreak_type",
                "split",
            ],
        ),
    ];
    for (format, want) in cases {
        let declared: Vec<&str> = columns(format).iter().map(|c| c.name).collect();
        assert_eq!(declared, want, "{format}: declared columns");
        for file in files_of(format) {
            for row in jsonl_rows(&out.join(format!("{file}.jsonl"))) {
                assert_eq!(names(&row), want, "{file}.jsonl: key order");
            }
            let schema = parquet_schema(&out.join(format!("{file}.parquet")));
            let schema_names: Vec<&str> = schema.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(schema_names, want, "{file}.parquet: schema order");
        }
    }
    // Types as JSON sees them.
    let row = &jsonl_rows(&out.join("trl/train.jsonl"))[1];
    assert!(field(row, "epoch").is_u64());
    assert!(field(row, "seed").is_u64());
    assert!(field(row, "verdict_chosen_safe").is_boolean());
    assert!(
        field(row, "rejected_harm_score").is_f64(),
        "1.0 stays a float: {:?}",
        field(row, "rejected_harm_score")
    );
    assert_eq!(field(row, "chosen_refusal_score").as_f64(), Some(0.1 + 1.0 / 3.0));
}

#[test]
fn trl_chat_rows_are_conversations() {
    let (_tmp, out, ds) = export(2, 1);
    let rows = jsonl_rows(&out.join("trl-chat/train.jsonl"));
    assert_eq!(rows.len(), 2);
    for (row, p) in rows.iter().zip(&ds.train) {
        assert_eq!(field(row, "prompt"), &json!([{"role": "user", "content": p.prompt}]));
        assert_eq!(field(row, "chosen"), &json!([{"role": "assistant", "content": p.chosen}]));
        assert_eq!(field(row, "rejected"), &json!([{"role": "assistant", "content": p.rejected}]));
        assert_eq!(field(row, "id"), &json!(p.id));
    }
    let text = std::fs::read_to_string(out.join("trl-chat/train.jsonl")).unwrap();
    assert!(text.starts_with("{\"prompt\":[{\"role\":\"user\",\"content\":"), "{text}");
    let schema = parquet_schema(&out.join("trl-chat/train.parquet"));
    for (name, logical) in &schema[..3] {
        assert_eq!(logical, &Some(LogicalType::List), "{name} is a LIST");
    }
    assert_eq!(schema[3].1, Some(LogicalType::String), "id is a String");
    let parquet = read_parquet_rows(&out.join("trl-chat/train.parquet")).unwrap();
    assert_eq!(field(&parquet[0], "chosen"), &json!([{"role": "assistant", "content": ds.train[0].chosen}]));
}

#[test]
fn kto_has_two_rows_per_pair_with_labels() {
    let (_tmp, out, ds) = export(4, 2);
    for (split, pairs) in [("train", &ds.train), ("test", &ds.test)] {
        let rows = jsonl_rows(&out.join(format!("kto/{split}.jsonl")));
        assert_eq!(rows.len(), 2 * pairs.len(), "{split}");
        for (two, p) in rows.chunks(2).zip(pairs.iter()) {
            for (row, (completion, label)) in two.iter().zip([(&p.chosen, true), (&p.rejected, false)]) {
                assert_eq!(field(row, "prompt"), &json!(p.prompt));
                assert_eq!(field(row, "completion"), &json!(completion));
                assert_eq!(field(row, "label"), &json!(label));
                assert_eq!(field(row, "id"), &json!(p.id));
            }
        }
    }
}

#[test]
fn redteam_has_prompts_with_categories_and_no_responses() {
    let (_tmp, out, ds) = export(3, 2);
    let rows = jsonl_rows(&out.join("redteam/prompts.jsonl"));
    assert_eq!(rows.len(), 5);
    let pairs = ds.train.iter().map(|p| (p, "train")).chain(ds.test.iter().map(|p| (p, "test")));
    for (row, (p, split)) in rows.iter().zip(pairs) {
        for banned in ["chosen", "rejected", "completion", "label"] {
            assert!(row.iter().all(|(k, _)| k != banned), "redteam row has `{banned}`");
        }
        assert_eq!(field(row, "prompt"), &json!(p.prompt));
        assert_eq!(field(row, "leaf"), &json!(p.leaf));
        assert_eq!(field(row, "jailbreak_type"), &json!(p.jailbreak_type));
        assert_eq!(field(row, "split"), &json!(split));
    }
    let text = std::fs::read_to_string(out.join("redteam/prompts.jsonl")).unwrap();
    assert!(!text.contains("placeholder safe answer") && !text.contains("placeholder unsafe answer"));
    assert!(!out.join("redteam/train.jsonl").exists());
}

#[test]
fn empty_splits_still_get_their_files() {
    let (_tmp, out, _) = export(2, 0);
    for format in [ExportFormat::Trl, ExportFormat::TrlChat, ExportFormat::Kto] {
        let jsonl = out.join(format!("{format}/test.jsonl"));
        assert_eq!(std::fs::read(&jsonl).unwrap(), b"", "{format}: empty JSONL");
        let parquet = out.join(format!("{format}/test.parquet"));
        assert!(read_parquet_rows(&parquet).unwrap().is_empty());
        let schema: Vec<String> = parquet_schema(&parquet).into_iter().map(|(n, _)| n).collect();
        let declared: Vec<&str> = columns(format).iter().map(|c| c.name).collect();
        assert_eq!(schema, declared, "{format}: an empty file keeps its schema");
    }
    // `datasets` cannot load a split without rows: the card lists only train.
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    let yaml = front_matter(&card).join("\n");
    assert_eq!(yaml.matches("- split: train").count(), 3, "{yaml}");
    assert!(!yaml.contains("- split: test") && !yaml.contains("- name: test"), "{yaml}");
    assert!(yaml.contains("- split: prompts"));
    assert!(
        card.contains("Empty splits (`trl/test`, `trl-chat/test`, `kto/test`) have their files"),
        "{card}"
    );
    // Both splits empty: still a complete directory.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("empty");
    let summary = write_dataset_dir(&out, &dataset(0, 0), &ExportFormat::ALL).unwrap();
    assert!(summary.rows.values().all(|&n| n == 0), "{:?}", summary.rows);
    assert_eq!(read_parquet_rows(&out.join("redteam/prompts.parquet")).unwrap().len(), 0);
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains("(no pairs)"));
    let yaml = front_matter(&card).join("\n");
    assert!(yaml.contains("license: cc-by-nc-4.0") && !yaml.contains("configs:"), "{yaml}");
    assert!(card.contains("The dataset has no rows to load."));
}

#[test]
fn summary_and_manifest_match_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    let ds = dataset(5, 2);
    let summary =
        write_dataset_dir(&out, &ds, &[ExportFormat::Kto, ExportFormat::Trl, ExportFormat::Kto]).unwrap();
    let rows: Vec<(&str, u64)> = summary.rows.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(rows, [("kto/test", 4), ("kto/train", 10), ("trl/test", 2), ("trl/train", 5)]);
    for file in &summary.files {
        assert!(file.starts_with(&out) && file.is_file(), "{}", file.display());
    }
    assert_eq!(summary.files.len(), 2 * 4 + 2);
    assert!(!out.join("trl-chat").exists() && !out.join("redteam").exists());
    let manifest: Manifest =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest.splits, BTreeMap::from([("train".into(), 5), ("test".into(), 2)]));
    assert_eq!(Manifest { splits: ds.manifest.splits.clone(), ..manifest }, ds.manifest);
}

/// The card's front matter, as `key: value` lines and list items; enough to
/// check its structure without a YAML parser.
fn front_matter(card: &str) -> Vec<&str> {
    let body = card.strip_prefix("---\n").expect("card starts with ---");
    let end = body.find("\n---\n").expect("front matter ends with ---");
    body[..end].lines().collect()
}

#[test]
fn card_front_matter_lists_configs_features_and_counts() {
    let (_tmp, out, ds) = export(7, 3);
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    let yaml = front_matter(&card);
    for line in [
        "license: cc-by-nc-4.0",
        "pretty_name: \"SAGE \\\"placeholder\\\" safety pairs\"",
        "task_categories:",
        "- text-generation",
        "- safety",
        "- red-teaming",
        "- synthetic",
        "- preference",
        "- sage",
        "- n<1K",
    ] {
        assert!(yaml.contains(&line), "front matter lacks `{line}`:\n{}", yaml.join("\n"));
    }
    // Top-level keys, each once.
    let keys: Vec<&str> =
        yaml.iter().filter(|l| !l.starts_with([' ', '-'])).map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        ["license", "pretty_name", "task_categories", "tags", "size_categories", "configs", "dataset_info"]
    );
    // configs: one per format, trl the default, data files the JSONL paths.
    let configs = &yaml[yaml.iter().position(|l| *l == "configs:").unwrap()..];
    let configs = &configs[..configs.iter().position(|l| *l == "dataset_info:").unwrap()];
    let text = configs.join("\n");
    assert!(text.starts_with(
        "configs:\n- config_name: trl\n  default: true\n  data_files:\n  - split: train\n    path: trl/train.jsonl\n  - split: test\n    path: trl/test.jsonl\n- config_name: trl-chat\n  data_files:"
    ), "{text}");
    assert!(text.contains(
        "- config_name: redteam\n  data_files:\n  - split: prompts\n    path: redteam/prompts.jsonl"
    ));
    assert_eq!(text.matches("config_name:").count(), 4);
    assert_eq!(text.matches("default: true").count(), 1);
    // dataset_info: features of every column, split sizes.
    let info = &yaml[yaml.iter().position(|l| *l == "dataset_info:").unwrap()..].join("\n");
    assert_eq!(info.matches("- config_name:").count(), 4);
    assert!(info.contains(
        "- config_name: trl\n  features:\n  - name: prompt\n    dtype: string\n  - name: chosen\n    dtype: string\n"
    ));
    assert!(info.contains("  - name: epoch\n    dtype: int64\n"));
    assert!(info.contains("  - name: verdict_chosen_safe\n    dtype: bool\n"));
    assert!(info.contains("  - name: query_harm_score\n    dtype: float64\n"));
    assert!(info.contains(
        "- config_name: trl-chat\n  features:\n  - name: prompt\n    list:\n    - name: role\n      dtype: string\n    - name: content\n      dtype: string\n"
    ));
    assert!(info.contains("  - name: label\n    dtype: bool\n"));
    let bytes = |file: &str| std::fs::metadata(out.join(file)).unwrap().len();
    for (config, counts) in [("trl", [7, 3]), ("trl-chat", [7, 3]), ("kto", [14, 6])] {
        let at = info.find(&format!("- config_name: {config}\n")).unwrap();
        let splits = &info[at..];
        let splits = &splits[splits.find("  splits:").unwrap()..];
        let want = format!(
            "  splits:\n  - name: train\n    num_bytes: {}\n    num_examples: {}\n  \
             - name: test\n    num_bytes: {}\n    num_examples: {}",
            bytes(&format!("{config}/train.jsonl")),
            counts[0],
            bytes(&format!("{config}/test.jsonl")),
            counts[1]
        );
        assert!(splits.starts_with(&want), "{config}: {splits}");
    }
    let prompts = format!(
        "  splits:\n  - name: prompts\n    num_bytes: {}\n    num_examples: 10",
        bytes("redteam/prompts.jsonl")
    );
    assert!(info.contains(&prompts), "{info}");
    // Every column of every config has a feature (nested fields are indented deeper).
    let features = info.lines().filter(|l| l.starts_with("    dtype: ") || *l == "    list:").count();
    let n_columns: usize = ExportFormat::ALL.iter().map(|f| columns(*f).len()).sum();
    assert_eq!(features, n_columns, "{info}");

    // Body: warning first, counts, provenance, loading.
    let body = &card[card.find("\n---\n").unwrap() + 5..];
    let warning = body.find("CONTENT WARNING").expect("content warning");
    assert!(warning < body.find("## What it is").unwrap());
    assert!(body.contains("| macro category | train | test | total |"));
    let crime_train = ds.train.iter().filter(|p| p.macro_category == "crime").count();
    let crime_test = ds.test.iter().filter(|p| p.macro_category == "crime").count();
    assert!(
        body.contains(&format!("| crime | {crime_train} | {crime_test} | {} |", crime_train + crime_test))
    );
    assert!(body.contains("| **total** | 7 | 3 | 10 |"));
    assert!(body.contains("| leaf | direct_request | hypothetical | role_play | total |"));
    let slurs_train: Vec<&PairRecord> = ds.train.iter().filter(|p| p.leaf == "slurs").collect();
    let by_type = |t: &str| slurs_train.iter().filter(|p| p.jailbreak_type == t).count();
    assert!(body.contains(&format!(
        "| hate/hate_ethnic/slurs | {} | {} | {} | {} |",
        by_type("direct_request"),
        by_type("hypothetical"),
        by_type("role_play"),
        slurs_train.len()
    )));
    for text in
        ["`verdict_chosen_not_over_refusal`", "`unsafe_responder_model`", &"ab".repeat(32), "| seed | `42` |"]
    {
        assert!(body.contains(text), "card lacks {text}");
    }
    assert!(body.contains("| model: expander | `mock-expander` |"));
    assert!(body.contains("load_dataset(\"path/to/this/directory\", \"trl\")"));
}

#[test]
fn card_license_is_an_option_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    let ds = dataset(1, 1);
    let options = ExportOptions { license: "cc-by-4.0".into() };
    write_dataset_dir_with(&out, &ds, &[ExportFormat::Redteam], &options).unwrap();
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(front_matter(&card).contains(&"license: cc-by-4.0"));
    assert!(front_matter(&card).contains(&"- config_name: redteam"), "the only config");
    assert!(card.contains("  default: true"));
    assert_eq!(ExportOptions::default().license, DEFAULT_LICENSE);
    let bad = ExportOptions { license: "cc by\nnc".into() };
    let err = write_dataset_dir_with(&out, &ds, &[ExportFormat::Trl], &bad).unwrap_err();
    assert!(err.to_string().contains("not a Hub license id"), "{err}");
    let err = write_dataset_dir(&out, &ds, &[]).unwrap_err();
    assert!(err.to_string().contains("no export format"), "{err}");
}

fn siblings(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn replaces_an_existing_export_atomically() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    write_dataset_dir(&out, &dataset(5, 2), &ExportFormat::ALL).unwrap();
    std::fs::write(out.join("stale.txt"), "from the old export").unwrap();
    let summary = write_dataset_dir(&out, &dataset(1, 1), &[ExportFormat::Trl]).unwrap();
    assert_eq!(summary.rows["trl/train"], 1);
    assert!(!out.join("stale.txt").exists(), "old content survives");
    assert!(!out.join("kto").exists(), "old format survives");
    assert_eq!(read_pairs_jsonl(&out.join("trl/train.jsonl")).unwrap().len(), 1);
    assert_eq!(siblings(tmp.path()), ["ds"], "temporary directories left behind");

    // A failed export leaves the old directory as it was, and no temp dir.
    let mut bad = dataset(2, 2);
    bad.test[1].seed = u64::MAX;
    let err = write_dataset_dir(&out, &bad, &ExportFormat::ALL).unwrap_err();
    assert!(err.to_string().contains("trl/test: row 2 (id `test-101`): column `seed`"), "{err}");
    assert_eq!(read_pairs_jsonl(&out.join("trl/train.jsonl")).unwrap().len(), 1);
    assert_eq!(siblings(tmp.path()), ["ds"]);
}

#[test]
fn refuses_to_replace_what_is_not_an_export() {
    let tmp = tempfile::tempdir().unwrap();
    let notes = tmp.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("keep.txt"), "precious").unwrap();
    let err = write_dataset_dir(&notes, &dataset(1, 1), &ExportFormat::ALL).unwrap_err();
    assert!(matches!(err, PipelineError::Invalid(_)) && err.to_string().contains("refusing"), "{err}");
    assert_eq!(std::fs::read_to_string(notes.join("keep.txt")).unwrap(), "precious");
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let err = write_dataset_dir(&file, &dataset(1, 1), &ExportFormat::ALL).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
    // An empty directory is fine.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    write_dataset_dir(&empty, &dataset(1, 1), &ExportFormat::ALL).unwrap();
    let mut left = siblings(tmp.path());
    left.sort();
    assert_eq!(left, ["empty", "file", "notes"]);
}

#[test]
fn read_pairs_jsonl_round_trips_and_reports_file_line_and_field() {
    let (tmp, out, ds) = export(4, 2);
    assert_eq!(read_pairs_jsonl(&out.join("trl/train.jsonl")).unwrap(), ds.train);
    assert_eq!(read_pairs_jsonl(&out.join("trl/test.jsonl")).unwrap(), ds.test);

    let text = std::fs::read_to_string(out.join("trl/train.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let broken = tmp.path().join("broken.jsonl");
    let cases = [
        (
            lines[1].replace("\"verdict_chosen_safe\":true", "\"verdict_chosen_safe\":\"yes\""),
            "verdict_chosen_safe",
        ),
        (lines[1].replace(",\"verdict_rejected_unsafe\":true", ""), "verdict_rejected_unsafe"),
        (lines[1].replace("\"epoch\":1", "\"epoch\":-1"), "epoch"),
        (lines[1].replace("\"topic\":", "\"topic_renamed\":"), "-"),
        ("[1, 2]".to_string(), "-"),
    ];
    for (line, column) in cases {
        assert_ne!(line, lines[1], "the case must change the line");
        std::fs::write(&broken, format!("{}\n{line}\n", lines[0])).unwrap();
        let err = read_pairs_jsonl(&broken).unwrap_err().to_string();
        let want = format!("{}:2: {column}: ", broken.display());
        assert!(err.starts_with(&want), "{err} should start with {want}");
    }
    // Extra columns and blank lines are fine (the trl-chat prompt is not a string, though).
    std::fs::write(&broken, format!("{}\n\n", lines[0].replacen('{', "{\"ref_chosen_logps\":-1.5,", 1)))
        .unwrap();
    assert_eq!(read_pairs_jsonl(&broken).unwrap(), ds.train[..1]);
    let err = read_pairs_jsonl(&out.join("trl-chat/train.jsonl")).unwrap_err().to_string();
    assert!(err.contains(":1: ") && err.ends_with(": invalid type: sequence, expected a string"), "{err}");
}

#[test]
fn export_format_names_round_trip() {
    let names: Vec<String> = ExportFormat::ALL.iter().map(|f| f.to_string()).collect();
    assert_eq!(names, ["trl", "trl-chat", "kto", "redteam"]);
    for f in ExportFormat::ALL {
        assert_eq!(f.name().parse::<ExportFormat>().unwrap(), f);
    }
    let err = "dpo".parse::<ExportFormat>().unwrap_err().to_string();
    assert!(err.contains("unknown export format `dpo`") && err.contains("trl-chat"), "{err}");
}

/// `scripts/check-dataset.py` on an export: runs with `SAGERT_PYTHON_CHECK=1`,
/// and always in CI (`CI=true`), where a missing Python or `datasets` fails it.
#[test]
fn python_datasets_check() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let asked = std::env::var("SAGERT_PYTHON_CHECK").is_ok_and(|v| v == "1");
    if !ci && !asked {
        eprintln!("skipped: set SAGERT_PYTHON_CHECK=1 to run scripts/check-dataset.py (needs `pip install datasets`)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/check-dataset.py");
    for (name, train, test) in [("full", 9, 4), ("empty-test", 3, 0), ("empty", 0, 0)] {
        let out = tmp.path().join(name);
        write_dataset_dir(&out, &dataset(train, test), &ExportFormat::ALL).unwrap();
        let run = std::process::Command::new("python3")
            .arg(&script)
            .arg(&out)
            .env("HF_HOME", tmp.path().join("hf-home"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
        let stdout = String::from_utf8_lossy(&run.stdout);
        let stderr = String::from_utf8_lossy(&run.stderr);
        eprintln!("{name}:\n{stdout}{stderr}");
        assert!(run.status.success(), "check-dataset.py failed on {name}:\n{stdout}\n{stderr}");
        assert!(stdout.contains(&format!("trl: train={train} test={test} rows")), "{stdout}");
        assert!(stdout.contains(&format!("redteam: prompts={} rows", train + test)), "{stdout}");
        assert!(stdout.trim_end().ends_with(": ok"), "{stdout}");
    }
}
