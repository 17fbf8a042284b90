//! Evaluation: reading prompt sets, judging responses, rates per taxonomy
//! level, red-team summaries, judge calibration and result rows.
//!
//! Judges here are test judges that answer by a rule on the response text, so
//! every verdict, rate, confusion matrix and kappa below is worked out by hand
//! in the comments beside it. Prompt sets come from the real writers where
//! they are in reach (`sagert import` on the ALERT fixtures, the pipeline's
//! `RedTeamPrompt` rows) and from `tests/fixtures/evaluate/` (placeholder text
//! only).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sagert_backend::BoxFuture;
use sagert_eval::calibrate::{self, calibrate, labels_digest, path_for, read_labels, Calibration, Labelled};
use sagert_eval::evaluate::{
    judge_all, rates, read_prompts, score_values, verdict_values, write_items, CategoryRate, EvalPrompt,
    JudgedItem, RateOptions, UNMAPPED,
};
use sagert_eval::import::{import, ImportKind, ImportOptions};
use sagert_eval::judge::{Judge, Judgement, Judgements, LlmTemplate, Question, RefusalKeywords, Sample};
use sagert_eval::redteam::{summarise, Coverage};
use sagert_eval::results::{CellInfo, JudgeInfo, Level};
use sagert_eval::study::StudyConfig;
use sagert_eval::EvalError;
use sagert_pipeline::record::RedTeamPrompt;
use sagert_taxonomy::Taxonomy;

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(relative)
}

/// Run an async fn of the crate on a current-thread runtime.
fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
}

/// A temporary file `name` holding `bytes`.
fn temp_file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// Judges by a rule on the response: `[yes]` in it → positive, score 0.75;
/// `[undecidable]` → no verdict; anything else → negative, score 0.25.
/// Remembers the samples it was given.
#[derive(Default)]
struct RuleJudge {
    seen: Mutex<Vec<Sample>>,
}

const UNDECIDABLE: &str = "no verdict in [placeholder answer]";

impl Judge for RuleJudge {
    fn name(&self) -> String {
        "rule".into()
    }

    fn question(&self) -> Question {
        Question::Harmful
    }

    fn judge<'a>(&'a self, samples: &'a [Sample]) -> BoxFuture<'a, sagert_eval::Result<Judgements>> {
        Box::pin(async move {
            self.seen.lock().unwrap().extend(samples.iter().cloned());
            Ok(samples
                .iter()
                .map(|s| {
                    if s.response.contains("[undecidable]") {
                        Err(UNDECIDABLE.to_string())
                    } else if s.response.contains("[yes]") {
                        Ok(Judgement { positive: true, score: 0.75 })
                    } else {
                        Ok(Judgement { positive: false, score: 0.25 })
                    }
                })
                .collect())
        })
    }
}

/// A judge that breaks its contract: one verdict fewer than samples.
struct ShortJudge;

impl Judge for ShortJudge {
    fn name(&self) -> String {
        "short".into()
    }

    fn question(&self) -> Question {
        Question::Harmful
    }

    fn judge<'a>(&'a self, samples: &'a [Sample]) -> BoxFuture<'a, sagert_eval::Result<Judgements>> {
        Box::pin(async move {
            Ok(samples.iter().skip(1).map(|_| Ok(Judgement { positive: true, score: 1.0 })).collect())
        })
    }
}

/// A judge whose whole call fails (a model that cannot load).
struct BrokenJudge;

impl Judge for BrokenJudge {
    fn name(&self) -> String {
        "broken".into()
    }

    fn question(&self) -> Question {
        Question::Toxic
    }

    fn judge<'a>(&'a self, _samples: &'a [Sample]) -> BoxFuture<'a, sagert_eval::Result<Judgements>> {
        Box::pin(async move {
            Err(EvalError::Judge { judge: "broken".into(), message: "[placeholder] cannot load".into() })
        })
    }
}

// ---------------------------------------------------------------- read_prompts

#[test]
fn read_prompts_takes_sagert_imports_prompts_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    for (name, input) in [("adv", "alert_adversarial.jsonl"), ("plain", "alert.jsonl")] {
        let out = dir.path().join(name);
        let input = fixture("import/alert").join(input);
        let summary = import(ImportKind::Alert, &input, &out, &ImportOptions::default()).unwrap();
        assert_eq!(summary.files[0], out.join("prompts.jsonl"), "the importer's file is the one looked up");
        let text = std::fs::read_to_string(&summary.files[0]).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_string()
            })
            .collect();
        written.push((out, ids));
    }

    // The directory is given: `prompts.jsonl` is found in it.
    let (adv_dir, adv_ids) = &written[0];
    let adv = read_prompts(adv_dir, None).unwrap();
    assert_eq!(
        adv,
        [
            EvalPrompt {
                id: adv_ids[0].clone(),
                prompt: "[placeholder request about a drugs topic] [placeholder suffix]".into(),
                category: "substance/drug".into(),
                jailbreak_type: Some("suffix_injection".into()),
            },
            EvalPrompt {
                id: adv_ids[1].clone(),
                prompt: "[placeholder prefix] [placeholder request about hate]".into(),
                category: "hate/women".into(),
                jailbreak_type: Some("prefix_injection".into()),
            },
        ]
    );

    // Plain ALERT: no jailbreak type; a label the taxonomy lacks was imported as `unmapped`.
    let (plain_dir, plain_ids) = &written[1];
    let plain = read_prompts(&plain_dir.join("prompts.jsonl"), Some("test")).unwrap();
    let got: Vec<(&str, &str, Option<&str>)> =
        plain.iter().map(|p| (p.id.as_str(), p.category.as_str(), p.jailbreak_type.as_deref())).collect();
    assert_eq!(
        got,
        [
            (plain_ids[0].as_str(), "crime/cyber", None),
            (plain_ids[1].as_str(), "crime/kidnapping", None),
            (plain_ids[2].as_str(), UNMAPPED, None),
        ],
        "rows without a `split` field are all kept whatever the split asked"
    );
}

/// A generated dataset's red-team rows: three train, two test, as the exporter writes them.
fn redteam_rows() -> Vec<RedTeamPrompt> {
    let row = |id: &str, path: &str, jailbreak: &str, split: &str| {
        let parts: Vec<&str> = path.split('/').collect();
        RedTeamPrompt {
            id: id.into(),
            prompt: format!("[placeholder prompt {id}]"),
            taxonomy_path: path.into(),
            macro_category: parts[0].into(),
            micro_category: parts[1].into(),
            leaf: parts[2].into(),
            jailbreak_type: jailbreak.into(),
            split: split.into(),
        }
    };
    vec![
        row("rt-1", "crime/cyber/account_takeover", "role_play", "train"),
        row("rt-2", "crime/cyber/botnets", "none", "test"),
        row("rt-3", "hate/women/objectification", "role_play", "train"),
        row("rt-4", "crime/injury/assault", "prefix_injection", "test"),
        row("rt-5", "crime/injury/assault", "role_play", "train"),
    ]
}

fn write_jsonl<T: serde::Serialize>(path: &Path, rows: &[T]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let text: String = rows.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn read_prompts_takes_a_generated_datasets_redteam_export_and_its_split() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("run/dataset");
    write_jsonl(&dataset.join("redteam/prompts.jsonl"), &redteam_rows());
    // Files of other exports beside it are not prompt files.
    write_jsonl(&dataset.join("trl/test.jsonl"), &[serde_json::json!({"prompt": "[placeholder]"})]);

    let all = read_prompts(&dataset, None).unwrap();
    let ids: Vec<&str> = all.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["rt-1", "rt-2", "rt-3", "rt-4", "rt-5"]);
    assert_eq!(all[0].category, "crime/cyber/account_takeover", "the category is the taxonomy path");
    assert_eq!(all[0].prompt, "[placeholder prompt rt-1]");

    let test = read_prompts(&dataset, Some("test")).unwrap();
    assert_eq!(
        test,
        [
            EvalPrompt {
                id: "rt-2".into(),
                prompt: "[placeholder prompt rt-2]".into(),
                category: "crime/cyber/botnets".into(),
                jailbreak_type: Some("none".into()),
            },
            EvalPrompt {
                id: "rt-4".into(),
                prompt: "[placeholder prompt rt-4]".into(),
                category: "crime/injury/assault".into(),
                jailbreak_type: Some("prefix_injection".into()),
            },
        ]
    );
    let train: Vec<String> =
        read_prompts(&dataset, Some("train")).unwrap().into_iter().map(|p| p.id).collect();
    assert_eq!(train, ["rt-1", "rt-3", "rt-5"]);

    // The run directory above it: `dataset/redteam/prompts.jsonl` is found too.
    assert_eq!(read_prompts(&dir.path().join("run"), Some("test")).unwrap(), test);

    // A split no row has leaves nothing, which is an error.
    let err = read_prompts(&dataset, Some("validation")).unwrap_err().to_string();
    let file = dataset.join("redteam/prompts.jsonl");
    assert_eq!(err, format!("{}: no prompts", file.display()));
}

#[test]
fn read_prompts_takes_a_bare_jsonl_file() {
    let path = fixture("evaluate/bare.jsonl");
    let prompts = read_prompts(&path, None).unwrap();
    // Line 2 is blank: skipped, but counted in the line numbers.
    assert_eq!(
        prompts,
        [
            EvalPrompt {
                id: "line-1".into(),
                prompt: "[placeholder request one]".into(),
                category: UNMAPPED.into(),
                jailbreak_type: None,
            },
            EvalPrompt {
                id: "line-3".into(),
                prompt: "[placeholder request two]".into(),
                category: UNMAPPED.into(),
                jailbreak_type: Some("[placeholder attack]".into()),
            },
            EvalPrompt {
                id: "line-4".into(),
                prompt: "[placeholder request three]".into(),
                category: UNMAPPED.into(),
                jailbreak_type: None,
            },
            EvalPrompt {
                id: "7".into(),
                prompt: "[placeholder request four]".into(),
                category: UNMAPPED.into(),
                jailbreak_type: None,
            },
        ]
    );
    assert_eq!(read_prompts(&path, Some("test")).unwrap(), prompts, "no `split` field: every row is kept");
}

#[test]
fn read_prompts_prefers_the_taxonomy_path_to_the_category() {
    let (_dir, path) = temp_file(
        "p.jsonl",
        br#"{"prompt": "[a]", "taxonomy_path": "crime/cyber/botnets", "category": "hate/women"}
{"prompt": "[b]", "taxonomy_path": "", "category": "hate/women"}
{"prompt": "[c]", "taxonomy_path": null, "category": null, "jailbreak_type": null}
{"prompt": "[d]", "jailbreak_type": "role_play", "attack_type": "[placeholder]"}
"#,
    );
    let got: Vec<(String, Option<String>)> =
        read_prompts(&path, None).unwrap().into_iter().map(|p| (p.category, p.jailbreak_type)).collect();
    assert_eq!(
        got,
        [
            ("crime/cyber/botnets".into(), None),
            ("hate/women".into(), None),
            (UNMAPPED.into(), None),
            (UNMAPPED.into(), Some("role_play".into())),
        ]
    );
}

/// The error of reading `bytes` as a prompt file, and the file's path.
fn prompts_error(bytes: &[u8]) -> (String, String) {
    let (_dir, path) = temp_file("prompts.jsonl", bytes);
    let err = read_prompts(&path, None).expect_err("the file should be rejected").to_string();
    (err, path.display().to_string())
}

#[test]
fn read_prompts_errors_name_file_line_and_field() {
    let ok = "{\"id\": \"a\", \"prompt\": \"[placeholder]\"}\n";
    // (second line, field, message)
    let cases: [(&str, &str, &str); 8] = [
        (r#"{"id": "b", "text": "[placeholder]"}"#, "prompt", "missing"),
        (r#"{"id": "b", "prompt": "   "}"#, "prompt", "empty"),
        (r#"{"id": "b", "prompt": ["[placeholder]"]}"#, "prompt", "expected a string"),
        (r#"{"id": "b", "prompt": "[p]", "category": 3}"#, "category", "expected a string"),
        (r#"{"id": "b", "prompt": "[p]", "jailbreak_type": true}"#, "jailbreak_type", "expected a string"),
        (r#"{"id": "b", "prompt": "[p]", "split": 1}"#, "split", "expected a string"),
        (r#"{"id": ["b"], "prompt": "[p]"}"#, "id", "expected a string or a number"),
        (r#"{"id": "a", "prompt": "[p]"}"#, "id", "`a` appears twice"),
    ];
    for (line, field, message) in cases {
        let (err, file) = prompts_error(format!("{ok}{line}\n").as_bytes());
        assert_eq!(err, format!("{file}:2: field `{field}`: {message}"), "for {line}");
    }

    // A numeric id and the same id as a string are the same id.
    let (err, file) =
        prompts_error(b"{\"id\": 3, \"prompt\": \"[a]\"}\n{\"id\": \"3\", \"prompt\": \"[b]\"}\n");
    assert_eq!(err, format!("{file}:2: field `id`: `3` appears twice"));

    // Records that cannot be read at all: file and line.
    let (err, file) = prompts_error(format!("{ok}\n{{\"prompt\": \n").as_bytes());
    assert!(err.starts_with(&format!("{file}:3: not JSON: ")), "{err}");
    let (err, file) = prompts_error(format!("{ok}[\"[placeholder]\"]\n").as_bytes());
    assert_eq!(err, format!("{file}:2: expected a JSON object, found an array"));
    let mut bytes = ok.as_bytes().to_vec();
    bytes.extend_from_slice(b"{\"prompt\": \"[placeholder \xff\xfe]\"}\n");
    let (err, file) = prompts_error(&bytes);
    assert!(err.starts_with(&format!("{file}:2: not UTF-8: ")), "{err}");

    // Files without prompts.
    for empty in [&b""[..], b"\n  \n\n"] {
        let (err, file) = prompts_error(empty);
        assert_eq!(err, format!("{file}: no prompts"));
    }
    let dir = tempfile::tempdir().unwrap();
    let err = read_prompts(dir.path(), None).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}: no prompt file: looked for prompts.jsonl, ", dir.path().display())));
    let missing = dir.path().join("absent.jsonl");
    let err = read_prompts(&missing, None).unwrap_err();
    assert!(matches!(&err, EvalError::Io { path, .. } if path == &missing), "{err}");
}

// ----------------------------------------------------------------------- rates

fn options(seed: u64, levels: &[Level]) -> RateOptions {
    RateOptions { resamples: 400, confidence: 0.95, seed, levels: levels.to_vec() }
}

const ALL_LEVELS: [Level; 4] = [Level::Overall, Level::Macro, Level::Micro, Level::Leaf];

/// Six verdicts: a micro path (no leaf) and an unmapped item among them.
fn six_values() -> Vec<(String, f64)> {
    [
        ("crime/cyber/account_takeover", 1.0),
        ("crime/cyber/account_takeover", 0.0),
        ("crime/cyber/botnets", 1.0),
        ("crime/cyber", 1.0),
        ("hate/women/objectification", 0.0),
        (UNMAPPED, 0.0),
    ]
    .into_iter()
    .map(|(p, v)| (p.to_string(), v))
    .collect()
}

fn summary(rates: &[CategoryRate]) -> Vec<(Level, &str, f64, usize)> {
    rates.iter().map(|r| (r.level, r.category.as_str(), r.estimate.value, r.estimate.n)).collect()
}

#[test]
fn rates_per_level_are_the_hand_computed_means() {
    let got = rates(&six_values(), &options(7, &ALL_LEVELS)).unwrap();
    assert_eq!(
        summary(&got),
        [
            (Level::Overall, "all", 0.5, 6),  // 3 of 6
            (Level::Macro, "crime", 0.75, 4), // 3 of 4, the micro path included
            (Level::Macro, "hate", 0.0, 1),
            (Level::Macro, UNMAPPED, 0.0, 1), // `unmapped` is a macro key of its own
            (Level::Micro, "crime/cyber", 0.75, 4),
            (Level::Micro, "hate/women", 0.0, 1),
            (Level::Leaf, "crime/cyber/account_takeover", 0.5, 2),
            (Level::Leaf, "crime/cyber/botnets", 1.0, 1), // the bare `crime/cyber` is not here
            (Level::Leaf, "hate/women/objectification", 0.0, 1),
        ]
    );
    for r in &got {
        let e = r.estimate;
        assert!(e.lo <= e.value && e.value <= e.hi, "{} {}: {e:?}", r.level.name(), r.category);
        if e.n == 1 || e.value == 0.0 || e.value == 1.0 {
            assert_eq!((e.lo, e.hi), (e.value, e.value), "{}: one value only", r.category);
        }
    }
    let overall = got[0].estimate;
    assert!(overall.lo < 0.5 && overall.hi > 0.5, "six mixed items give a real interval: {overall:?}");

    // Only the levels asked for, in their order.
    let leaf_only = rates(&six_values(), &options(7, &[Level::Leaf])).unwrap();
    assert_eq!(leaf_only, got[6..].to_vec());
    let micro_first = rates(&six_values(), &options(7, &[Level::Micro, Level::Overall])).unwrap();
    let levels: Vec<Level> = micro_first.iter().map(|r| r.level).collect();
    assert_eq!(levels, [Level::Micro, Level::Micro, Level::Overall]);
}

#[test]
fn rates_are_deterministic_for_a_seed() {
    let values: Vec<(String, f64)> =
        (0..40).map(|i| (format!("crime/cyber/leaf{}", i % 3), f64::from(u8::from(i % 3 != 0)))).collect();
    let a = rates(&values, &options(11, &ALL_LEVELS)).unwrap();
    assert_eq!(a, rates(&values, &options(11, &ALL_LEVELS)).unwrap());
    assert!(
        (12..17).any(|seed| rates(&values, &options(seed, &ALL_LEVELS)).unwrap() != a),
        "the seed drives the resampling"
    );
    // No values: no rates; an unusable option is an error, not a panic.
    assert_eq!(rates(&[], &options(0, &ALL_LEVELS)).unwrap(), []);
    let bad = RateOptions { confidence: 1.5, ..options(0, &ALL_LEVELS) };
    assert!(matches!(rates(&values, &bad), Err(EvalError::Metric { .. })));
}

// ------------------------------------------------------------------- judge_all

/// Four prompts: answered and harmful, not answered, undecidable, refused.
fn four_prompts() -> (Vec<EvalPrompt>, Vec<Result<String, String>>) {
    let prompt = |id: &str, category: &str, jailbreak: Option<&str>| EvalPrompt {
        id: id.into(),
        prompt: format!("[placeholder request {id}]"),
        category: category.into(),
        jailbreak_type: jailbreak.map(str::to_string),
    };
    let prompts = vec![
        prompt("p1", "crime/cyber/botnets", Some("role_play")),
        prompt("p2", "crime/cyber", None),
        prompt("p3", "hate/women/objectification", None),
        prompt("p4", UNMAPPED, Some("prefix_injection")),
    ];
    let responses = vec![
        Ok("Sure. [placeholder answer] [yes]".to_string()),
        Err("call failed: [placeholder timeout]".to_string()),
        Ok("[placeholder answer] [undecidable]".to_string()),
        Ok("I'm sorry, but I can't help with that.".to_string()),
    ];
    (prompts, responses)
}

#[test]
fn judge_all_gives_answered_items_to_every_judge() {
    let (prompts, responses) = four_prompts();
    let rule = RuleJudge::default();
    let keywords = RefusalKeywords::default();
    let items = block_on(judge_all(&prompts, &responses, &[&rule, &keywords])).unwrap();

    let seen = rule.seen.lock().unwrap().clone();
    let asked: Vec<&str> = seen.iter().map(|s| s.prompt.as_str()).collect();
    assert_eq!(
        asked,
        ["[placeholder request p1]", "[placeholder request p3]", "[placeholder request p4]"],
        "the unanswered item is not judged"
    );
    assert_eq!(seen[0].response, "Sure. [placeholder answer] [yes]");

    let verdict = |positive: bool, score: f64| Judgement { positive, score };
    let expected = vec![
        JudgedItem {
            id: "p1".into(),
            category: "crime/cyber/botnets".into(),
            jailbreak_type: Some("role_play".into()),
            prompt: "[placeholder request p1]".into(),
            response: Some("Sure. [placeholder answer] [yes]".into()),
            errors: vec![],
            verdicts: BTreeMap::from([
                ("refusal-keywords".to_string(), verdict(false, 0.0)),
                ("rule".to_string(), verdict(true, 0.75)),
            ]),
        },
        JudgedItem {
            id: "p2".into(),
            category: "crime/cyber".into(),
            jailbreak_type: None,
            prompt: "[placeholder request p2]".into(),
            response: None,
            errors: vec!["call failed: [placeholder timeout]".into()],
            verdicts: BTreeMap::new(),
        },
        JudgedItem {
            id: "p3".into(),
            category: "hate/women/objectification".into(),
            jailbreak_type: None,
            prompt: "[placeholder request p3]".into(),
            response: Some("[placeholder answer] [undecidable]".into()),
            errors: vec![format!("rule: {UNDECIDABLE}")],
            verdicts: BTreeMap::from([("refusal-keywords".to_string(), verdict(false, 0.0))]),
        },
        JudgedItem {
            id: "p4".into(),
            category: UNMAPPED.into(),
            jailbreak_type: Some("prefix_injection".into()),
            prompt: "[placeholder request p4]".into(),
            response: Some("I'm sorry, but I can't help with that.".into()),
            errors: vec![],
            verdicts: BTreeMap::from([
                ("refusal-keywords".to_string(), verdict(true, 1.0)),
                ("rule".to_string(), verdict(false, 0.25)),
            ]),
        },
    ];
    assert_eq!(items, expected);

    let owned =
        |v: &[(&str, f64)]| -> Vec<(String, f64)> { v.iter().map(|(c, x)| (c.to_string(), *x)).collect() };
    assert_eq!(verdict_values(&items, "rule"), owned(&[("crime/cyber/botnets", 1.0), (UNMAPPED, 0.0)]));
    assert_eq!(score_values(&items, "rule"), owned(&[("crime/cyber/botnets", 0.75), (UNMAPPED, 0.25)]));
    assert_eq!(
        verdict_values(&items, "refusal-keywords"),
        owned(&[("crime/cyber/botnets", 0.0), ("hate/women/objectification", 0.0), (UNMAPPED, 1.0)])
    );
    assert_eq!(verdict_values(&items, "toxicity"), []);
    assert_eq!(score_values(&items, "toxicity"), []);
}

#[test]
fn judge_all_fails_when_a_judge_fails_as_a_whole() {
    let (prompts, responses) = four_prompts();
    let err = block_on(judge_all(&prompts, &responses, &[&RuleJudge::default(), &BrokenJudge])).unwrap_err();
    assert_eq!(err.to_string(), "judge `broken`: [placeholder] cannot load");
    // Without judges every item keeps its response and no verdicts.
    let items = block_on(judge_all(&prompts, &responses, &[])).unwrap();
    assert!(items.iter().all(|it| it.verdicts.is_empty()));
    assert_eq!(items[1].errors, ["call failed: [placeholder timeout]"]);
}

#[test]
fn judge_all_rejects_a_judge_with_too_few_verdicts() {
    let (prompts, responses) = four_prompts();
    let result = block_on(judge_all(&prompts, &responses, &[&ShortJudge]));
    match result {
        Err(e) => assert!(e.to_string().contains("short"), "{e}"),
        Ok(items) => {
            let answered = items.iter().filter(|it| it.response.is_some());
            assert!(
                answered.clone().all(|it| it.verdicts.contains_key("short") || !it.errors.is_empty()),
                "an answered item with neither a verdict nor an error: {items:#?}"
            );
        }
    }
}

#[test]
fn write_items_writes_one_json_line_per_item() {
    let (prompts, responses) = four_prompts();
    let items = block_on(judge_all(&prompts, &responses, &[&RuleJudge::default()])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cells/base/judged.jsonl");
    assert_eq!(write_items(&path, &items).unwrap(), path);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(text.ends_with('\n'));
    let back: Vec<JudgedItem> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(back, items);
    let p2: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert!(p2.get("jailbreak_type").is_none() && p2["response"].is_null(), "{p2}");
    let p1: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert!(p1.get("errors").is_none(), "no errors, no field: {p1}");
    let files: Vec<_> = path.parent().unwrap().read_dir().unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files, ["judged.jsonl"], "no temporary file is left beside the output");
}

// ---------------------------------------------------------- redteam::summarise

fn item(category: &str, jailbreak: Option<&str>, verdict: Option<bool>) -> JudgedItem {
    JudgedItem {
        id: format!("{category}/{jailbreak:?}"),
        category: category.into(),
        jailbreak_type: jailbreak.map(str::to_string),
        prompt: "[placeholder request]".into(),
        response: Some("[placeholder answer]".into()),
        errors: vec![],
        verdicts: verdict
            .map(|positive| {
                ("harm".to_string(), Judgement { positive, score: f64::from(u8::from(positive)) })
            })
            .into_iter()
            .collect(),
    }
}

#[test]
fn summarise_counts_attack_success_and_taxonomy_coverage() {
    let taxonomy = Taxonomy::builtin();
    let known: BTreeSet<String> = taxonomy.leaves().map(|l| l.path()).collect();
    for leaf in [
        "crime/cyber/account_takeover",
        "crime/cyber/botnets",
        "crime/injury/assault",
        "hate/women/objectification",
    ] {
        assert!(known.contains(leaf), "{leaf} is a leaf of the built-in taxonomy");
    }
    let mut unanswered = item("crime/theft/x", None, None);
    unanswered.response = None;
    unanswered.errors = vec!["call failed: [placeholder]".into()];
    let mut judged_by_another = item("hate/body/x", Some("role_play"), None);
    judged_by_another.verdicts.insert("refusal".into(), Judgement { positive: true, score: 1.0 });
    let items = vec![
        item("crime/cyber/account_takeover", Some("suffix_injection"), Some(true)), // 1
        item("crime/cyber/account_takeover", Some("prefix_injection"), Some(false)), // 2
        item("crime/cyber/botnets", None, Some(false)),                             // 3
        item("crime/injury/assault", Some("suffix_injection"), Some(false)),        // 4
        item("crime/kidnapping", None, Some(true)), // 5: a micro path, no leaf
        item("hate/women/objectification", Some("prefix_injection"), Some(true)), // 6
        item(UNMAPPED, Some("prefix_injection"), Some(true)), // 7
        item("crime/nonexistent/leaf", None, Some(false)), // 8: not in the taxonomy
        judged_by_another,                          // unjudged by `harm`
        unanswered,                                 // unjudged
    ];
    let opts = options(3, &ALL_LEVELS);
    let s = summarise(&items, "harm", &taxonomy, &opts).unwrap();

    assert_eq!(s.judge, "harm");
    assert_eq!((s.judged, s.unjudged), (8, 2));
    assert_eq!(taxonomy.micro_count(), 32);
    // Micro: tested cyber, injury, kidnapping, women (not `unmapped`, not
    // `crime/nonexistent`); jailbroken cyber (1), kidnapping (5), women (6).
    assert_eq!(s.micro, Coverage { total: 32, tested: 4, jailbroken: 3 });
    // Leaves: tested account_takeover, botnets, assault, objectification;
    // jailbroken account_takeover (1), objectification (6).
    assert_eq!(s.leaves, Coverage { total: taxonomy.leaf_count(), tested: 4, jailbroken: 2 });
    assert_eq!(s.leaves.total, known.len());

    // Per jailbreak type, judged items only: none = 3, 5, 8 → 1/3;
    // prefix = 2, 6, 7 → 2/3; suffix = 1, 4 → 1/2. `role_play` was never judged.
    let by_type: Vec<(Level, &str, f64, usize)> = summary(&s.by_jailbreak);
    assert_eq!(
        by_type,
        [
            (Level::Overall, "none", 1.0 / 3.0, 3),
            (Level::Overall, "prefix_injection", 2.0 / 3.0, 3),
            (Level::Overall, "suffix_injection", 0.5, 2),
        ]
    );

    // Per category: the rates of the judged items' verdicts (4 of 8 overall).
    let values: Vec<(String, f64)> = items[..8]
        .iter()
        .map(|it| (it.category.clone(), f64::from(u8::from(it.verdicts["harm"].positive))))
        .collect();
    assert_eq!(s.by_category, rates(&values, &opts).unwrap());
    assert_eq!(summary(&s.by_category)[0], (Level::Overall, "all", 0.5, 8));
}

#[test]
fn summarise_without_judged_items_covers_nothing() {
    let taxonomy = Taxonomy::builtin();
    let items = vec![item("crime/cyber/botnets", None, None)];
    let s = summarise(&items, "harm", &taxonomy, &options(0, &ALL_LEVELS)).unwrap();
    assert_eq!((s.judged, s.unjudged), (0, 1));
    assert_eq!(s.micro, Coverage { total: 32, tested: 0, jailbroken: 0 });
    assert!(s.by_category.is_empty() && s.by_jailbreak.is_empty());
}

// ------------------------------------------------------------------- calibrate

fn labelled(prompt: &str, response: &str, label: bool) -> Labelled {
    Labelled { sample: Sample::new(prompt, response), label, origin: "[test]".into() }
}

/// Eleven labelled samples for [`RuleJudge`]: (human, judge) = (T, T) ×3,
/// (T, F) ×1, (F, T) ×2, (F, F) ×4, and one the judge cannot decide.
fn eleven_labels() -> Vec<Labelled> {
    let mut out = Vec::new();
    let mut add = |n: usize, response: &str, label: bool| {
        for _ in 0..n {
            let i = out.len();
            out.push(labelled(&format!("[placeholder request {i}]"), response, label));
        }
    };
    add(3, "[placeholder answer] [yes]", true);
    add(1, "[placeholder answer]", true);
    add(2, "[placeholder answer] [yes]", false);
    add(4, "[placeholder answer]", false);
    add(1, "[placeholder answer] [undecidable]", true);
    out
}

#[test]
fn calibrate_gives_the_hand_computed_agreement() {
    let labels = eleven_labels();
    let c = block_on(calibrate(&RuleJudge::default(), &labels, "[test labels]")).unwrap();
    assert_eq!(c.judge, "rule");
    assert_eq!(c.question, Question::Harmful);
    assert_eq!(c.labels, "[test labels]");
    assert_eq!(c.labels_sha256, labels_digest(&labels));
    assert_eq!(c.unjudged, 1);
    assert_eq!(c.sagert_version, env!("CARGO_PKG_VERSION"));
    let a = &c.agreement;
    assert_eq!(a.n, 10);
    assert_eq!(a.labels, ["negative", "positive"]);
    // Rows human, columns judge: negative [4 agree, 2 judge-only], positive [1 missed, 3 agree].
    assert_eq!(a.confusion, [[4, 2], [1, 3]]);
    assert_eq!(a.accuracy, 0.7); // 7 of 10
                                 // p_o = 0.7; rows 6, 4; columns 5, 5; p_e = (6·5 + 4·5) / 100 = 0.5;
                                 // kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4, computed as (10·7 − 50) / (100 − 50).
    assert_eq!(a.kappa, Some(0.4));
    assert_eq!(a.positive.as_deref(), Some("positive"));
    assert_eq!((a.precision, a.recall), (0.6, 0.75)); // 3 / (3 + 2), 3 / (3 + 1)
    assert_eq!(a.f1, 6.0 / 9.0); // 2·3 / (2·3 + 2 + 1)
}

#[test]
fn calibrate_refuses_what_it_cannot_measure() {
    let err = block_on(calibrate(&RuleJudge::default(), &[], "none")).unwrap_err();
    assert!(matches!(err, EvalError::Metric { .. }), "{err}");
    let err = block_on(calibrate(&ShortJudge, &eleven_labels(), "l")).unwrap_err().to_string();
    assert_eq!(err, "judge `short`: 10 verdicts for 11 samples");
    let err = block_on(calibrate(&BrokenJudge, &eleven_labels(), "l")).unwrap_err().to_string();
    assert_eq!(err, "judge `broken`: [placeholder] cannot load");
    // Every sample undecidable: no pairs to agree on.
    let undecidable = vec![labelled("[p]", "[undecidable]", true)];
    let err = block_on(calibrate(&RuleJudge::default(), &undecidable, "l")).unwrap_err();
    assert!(matches!(err, EvalError::Metric { .. }), "{err}");
}

#[test]
fn labels_digest_follows_texts_labels_and_order() {
    let labels = eleven_labels();
    let digest = labels_digest(&labels);
    assert_eq!(digest.len(), 64);
    assert!(digest.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(labels_digest(&labels.clone()), digest);

    let mut flipped = labels.clone();
    flipped[4].label = !flipped[4].label;
    assert_ne!(labels_digest(&flipped), digest, "a flipped label");
    let mut reordered = labels.clone();
    reordered.swap(0, 10);
    assert_ne!(labels_digest(&reordered), digest, "another order");
    let mut edited = labels.clone();
    edited[0].sample.response.push(' ');
    assert_ne!(labels_digest(&edited), digest, "an edited response");
    let mut origin = labels.clone();
    origin[0].origin = "[elsewhere]:1".into();
    assert_eq!(labels_digest(&origin), digest, "where a label came from is not part of it");
    // Framed: text cannot move between prompt and response unnoticed.
    assert_ne!(labels_digest(&[labelled("ab", "c", true)]), labels_digest(&[labelled("a", "bc", true)]));
}

fn calibration(judge: &str) -> Calibration {
    let mut c = block_on(calibrate(&RuleJudge::default(), &eleven_labels(), "[test labels]")).unwrap();
    c.judge = judge.into();
    c
}

#[test]
fn calibrations_store_and_load_by_judge_name() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("judges");
    let name = "llm-harmbench:some/model";
    assert_eq!(path_for(&folder, name), folder.join("llm-harmbench_some_model.json"));
    assert_eq!(path_for(&folder, "../a b\\c.d-e_f"), folder.join(".._a_b_c.d-e_f.json"));
    assert_eq!(path_for(&folder, "modèle"), folder.join("mod_le.json"));

    assert_eq!(calibrate::load(&folder, name).unwrap(), None, "nothing stored yet");
    let c = calibration(name);
    let path = calibrate::store(&folder, &c).unwrap();
    assert_eq!(path, folder.join("llm-harmbench_some_model.json"));
    assert_eq!(calibrate::load(&folder, name).unwrap(), Some(c.clone()));
    assert_eq!(calibrate::load(&folder, "refusal-keywords").unwrap(), None);

    // A second store replaces the first.
    let mut newer = c.clone();
    newer.unjudged = 5;
    calibrate::store(&folder, &newer).unwrap();
    assert_eq!(calibrate::load(&folder, name).unwrap(), Some(newer));
    let files: Vec<_> = std::fs::read_dir(&folder).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files, ["llm-harmbench_some_model.json"], "one file, no temporary left");

    // A file that is not a calibration is an error naming it.
    std::fs::write(path_for(&folder, "toxicity"), "{\"judge\": 1}").unwrap();
    let err = calibrate::load(&folder, "toxicity").unwrap_err().to_string();
    let file = folder.join("toxicity.json");
    assert!(err.starts_with(&format!("{}: not a calibration: ", file.display())), "{err}");
}

#[test]
fn load_does_not_return_another_judges_calibration() {
    let dir = tempfile::tempdir().unwrap();
    calibrate::store(dir.path(), &calibration("llm-harmbench:org/m")).unwrap();
    let other = calibrate::load(dir.path(), "llm-harmbench:org_m");
    assert!(
        !matches!(&other, Ok(Some(c)) if c.judge != "llm-harmbench:org_m"),
        "load of `llm-harmbench:org_m` gave {other:?}"
    );
}

#[test]
fn read_labels_takes_booleans_bits_and_scores() {
    let path = fixture("evaluate/labels.jsonl");
    let labels = read_labels(&path).unwrap();
    let got: Vec<(&str, &str, bool, String)> = labels
        .iter()
        .map(|l| (l.sample.prompt.as_str(), l.sample.response.as_str(), l.label, l.origin.clone()))
        .collect();
    let at = |line: usize| format!("{}:{line}", path.display());
    // Line 3 is blank. 0.5 is positive, 0.49 negative; an empty response is a response.
    assert_eq!(
        got,
        [
            ("[placeholder request 1]", "[placeholder answer 1]", true, at(1)),
            ("[placeholder request 2]", "[placeholder answer 2]", false, at(2)),
            ("[placeholder request 3]", "[placeholder answer 3]", true, at(4)),
            ("[placeholder request 4]", "[placeholder answer 4]", false, at(5)),
            ("[placeholder request 5]", "[placeholder answer 5]", true, at(6)),
            ("[placeholder request 6]", "[placeholder answer 6]", false, at(7)),
            ("[placeholder request 7]", "", true, at(8)),
        ]
    );
}

#[test]
fn read_labels_errors_name_file_line_and_field() {
    let ok = "{\"prompt\": \"[p]\", \"response\": \"[r]\", \"label\": true}\n";
    let cases: [(&str, &str, &str); 8] = [
        (r#"{"prompt": "[p]", "response": "[r]", "label": 1.5}"#, "label", "1.5 is not in [0, 1]"),
        (r#"{"prompt": "[p]", "response": "[r]", "label": -0.5}"#, "label", "-0.5 is not in [0, 1]"),
        (
            r#"{"prompt": "[p]", "response": "[r]", "label": "yes"}"#,
            "label",
            "expected a boolean or a number, found a string",
        ),
        (
            r#"{"prompt": "[p]", "response": "[r]", "label": null}"#,
            "label",
            "expected a boolean or a number, found null",
        ),
        (r#"{"prompt": "[p]", "response": "[r]"}"#, "label", "missing"),
        (r#"{"prompt": "[p]", "label": 1}"#, "response", "missing"),
        (r#"{"prompt": 3, "response": "[r]", "label": 1}"#, "prompt", "expected a string, found a number"),
        (
            r#"{"prompt": "[p]", "response": ["[r]"], "label": 1}"#,
            "response",
            "expected a string, found an array",
        ),
    ];
    for (line, field, message) in cases {
        let (_dir, path) = temp_file("labels.jsonl", format!("{ok}\n{line}\n").as_bytes());
        let err = read_labels(&path).unwrap_err().to_string();
        assert_eq!(err, format!("{}:3: field `{field}`: {message}", path.display()), "for {line}");
    }
    let (_dir, path) = temp_file("labels.jsonl", format!("{ok}{{\"label\": \n").as_bytes());
    let err = read_labels(&path).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:2: not JSON: ", path.display())), "{err}");
    let (_dir, path) = temp_file("labels.jsonl", b"\n\n");
    let err = read_labels(&path).unwrap_err().to_string();
    assert_eq!(err, format!("{}: no labelled samples", path.display()));
    let (_dir, path) =
        temp_file("labels.jsonl", b"{\"prompt\": \"\xff\", \"response\": \"[r]\", \"label\": 1}\n");
    let err = read_labels(&path).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:1: not UTF-8: ", path.display())), "{err}");
}

// --------------------------------------------------------------------- results

#[test]
fn cell_rows_carry_the_cell_and_the_judges_calibration() {
    let cell = CellInfo {
        cell: "sage-n200".into(),
        base_model: "[placeholder base]".into(),
        dataset: "sage".into(),
        size: 200,
        method: "dpo".into(),
    };
    let got = rates(&six_values(), &options(5, &[Level::Overall, Level::Micro])).unwrap();
    assert_eq!(got.len(), 3);
    let c = calibration("rule");
    let judge =
        JudgeInfo { name: c.judge.clone(), accuracy: Some(c.agreement.accuracy), kappa: c.agreement.kappa };
    let rows = cell.rows("harmful_rate", "[placeholder set]", &got, Some(&judge));
    assert_eq!(rows.len(), got.len());
    for (row, rate) in rows.iter().zip(&got) {
        assert_eq!(
            (row.cell.as_str(), row.base_model.as_str(), row.dataset.as_str(), row.size, row.method.as_str()),
            ("sage-n200", "[placeholder base]", "sage", 200, "dpo")
        );
        assert_eq!((row.metric.as_str(), row.eval_set.as_str()), ("harmful_rate", "[placeholder set]"));
        assert_eq!((row.level, row.category.as_str()), (rate.level, rate.category.as_str()));
        assert_eq!(
            (row.value, row.lo, row.hi, row.n),
            (rate.estimate.value, rate.estimate.lo, rate.estimate.hi, rate.estimate.n as u64)
        );
        assert_eq!(
            (row.judge.as_deref(), row.judge_accuracy, row.judge_kappa),
            (Some("rule"), Some(0.7), Some(0.4))
        );
    }
    assert_eq!((rows[1].category.as_str(), rows[1].value, rows[1].n), ("crime/cyber", 0.75, 4));

    let unjudged = cell.rows("perplexity", "[placeholder text]", &got, None);
    assert!(unjudged
        .iter()
        .all(|r| r.judge.is_none() && r.judge_accuracy.is_none() && r.judge_kappa.is_none()));
    let uncalibrated = JudgeInfo { name: "toxicity".into(), accuracy: None, kappa: None };
    let rows = cell.rows("toxicity", "[placeholder set]", &got, Some(&uncalibrated));
    assert!(rows.iter().all(|r| r.judge.as_deref() == Some("toxicity") && r.judge_accuracy.is_none()));
}

// ----------------------------------------------------------------- judges, study

#[test]
fn llm_templates_keep_text_verbatim_and_quote_bad_answers() {
    let s = Sample::new("[placeholder <b>request</b> & \"quotes\"]", "[placeholder {{ answer }}]");
    for template in [LlmTemplate::LlamaGuard, LlmTemplate::HarmBench] {
        let text = template.render(&s).unwrap();
        assert!(
            text.contains(&s.prompt) && text.contains(&s.response),
            "no escaping, no re-rendering: {text}"
        );
    }
    assert_eq!(LlmTemplate::LlamaGuard.parse("  Unsafe.\nS1"), Ok(true));
    assert_eq!(LlmTemplate::HarmBench.parse("\nYES\n"), Ok(true));
    let err = LlmTemplate::HarmBench.parse(&"x".repeat(300)).unwrap_err();
    assert!(err.contains(&format!("\"{}\"", "x".repeat(120))), "the answer quoted, cut at 120: {err}");
}

#[test]
fn study_without_alignment_evaluates_the_base_and_the_given_models() {
    let text = "[study]\n[model]\nbase = \"[placeholder base]\"\n\n[models]\ntuned = \"tuned.gguf\"\n";
    let c = StudyConfig::parse(text, Path::new("study.toml")).unwrap();
    let names: Vec<String> = c.cells().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["base", "tuned"]);
    assert_eq!((c.eval.split.as_deref(), c.eval.resamples), (Some("test"), 2000));
    let err =
        StudyConfig::parse(&format!("{text}[eval]\nresamples = 10\n"), Path::new("s.toml")).unwrap_err();
    assert_eq!(err.to_string(), "s.toml: eval.resamples: use at least 100");
}

#[test]
fn study_errors_name_the_line_of_the_key() {
    let text = "[study]\n[model]\nbase = \"[placeholder base]\"\n[eval]\nlimt = 10\n";
    let err = StudyConfig::parse(text, Path::new("s.toml")).unwrap_err().to_string();
    assert!(err.starts_with("s.toml:5: ") && err.contains("limt"), "{err}");
}
