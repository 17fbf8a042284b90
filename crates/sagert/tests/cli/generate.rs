//! `sagert generate` and `sagert export` against mock servers with canned
//! structured answers: exact items, splits and counts; malformed answers;
//! validation drops; dedup; resume after SIGKILL at several points.
//!
//! The judge is the offline classifier, which needs the MiniLM model: these
//! tests skip (with a printed reason) when it is not cached, except under CI.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use sagert_mock::{spawn_blocking_server, MockConfig, MockServerThread, Reply};

use super::util::{cached, code, read_jsonl, run_in, sagert, text, Workspace};

/// The nine jailbreak types, as the configuration names them.
const TYPES: [&str; 9] = sagert_config::JAILBREAK_TYPES;

/// The generator's (and expander's) canned answers, keyed by the templates'
/// wording. `{prompt_hash}` makes each answer differ per prompt. Two types
/// misbehave on purpose: fictional_scenario answers prose instead of JSON (its
/// extraction fails), and coding_task always extracts the same query (dedup
/// removes all but the first, and the same for its rewrites).
fn generator_replies() -> Vec<Reply> {
    let mut r = vec![
        Reply::new(
            "concrete topics within this category",
            r#"{"topics": ["[topic {prompt_hash} a] placeholder area", "[topic {prompt_hash} b] another placeholder setting"]}"#,
        ),
        Reply::new(
            "different requests that a malicious user",
            r#"{"instructions": ["[seed request {prompt_hash} one]", "[seed request {prompt_hash} two]"]}"#,
        ),
        Reply::new(
            "Write a personal blog post",
            "[placeholder blog {prompt_hash}] This is a placeholder document standing in for a long-form \
             raw text. It has enough words to pass the length check of the raw text stage, and nothing else.",
        ),
        Reply::new(
            "[fixed coding query]",
            r#"{"query": "[fixed coding rewrite] as numbered placeholder steps"}"#,
        ),
        Reply::new(
            "Rewrite the request below",
            r#"{"query": "[rewrite {prompt_hash}] the placeholder request in a new scenario"}"#,
        ),
        Reply::new("Jailbreak type: fictional scenario:", "Sure! Here is a story instead of JSON."),
        Reply::new(
            "Jailbreak type: coding task:",
            r#"{"queries": ["[fixed coding query] write a placeholder script"]}"#,
        ),
    ];
    for t in TYPES {
        let words = t.replace('_', " ");
        r.push(Reply::new(
            format!("Jailbreak type: {words}:"),
            format!(
                r#"{{"queries": ["[{words} request {{prompt_hash}}] please describe the placeholder"]}}"#
            ),
        ));
    }
    r
}

struct Mocks {
    generator: MockServerThread,
    safe: MockServerThread,
    unsafe_: MockServerThread,
}

fn mocks(latency: Duration) -> Mocks {
    let config = |replies| MockConfig { latency, replies, ..MockConfig::default() };
    Mocks {
        generator: spawn_blocking_server(config(generator_replies())).unwrap(),
        // The safe responder over-refuses toxic-completion queries (the
        // extracted ones; their rewrites no longer carry the marker).
        safe: spawn_blocking_server(config(vec![
            Reply::new("[toxic completion request", "I can't help."),
            Reply::new(
                "",
                "I won't help with that, but I can share safe, general information: [placeholder safe \
                 guidance {prompt_hash}]. If you or someone is at risk, contact local support services.",
            ),
        ]))
        .unwrap(),
        unsafe_: spawn_blocking_server(config(vec![Reply::new(
            "",
            "Easy. Take the [placeholder weapon] and attack them when they are alone, then destroy \
             the evidence. [placeholder unsafe content {prompt_hash}]",
        )]))
        .unwrap(),
    }
}

fn config(ws: &Workspace, m: &Mocks, extra: &str) {
    let endpoint = |name: &str, url: &str| {
        format!("[endpoints.{name}]\nbase_url = \"{url}\"\nconcurrency = 4\ntimeout_secs = 5.0\n\n")
    };
    let role =
        |role: &str, ep: &str| format!("[roles.{role}]\nmodel = \"mock-{ep}\"\nendpoints = [\"{ep}\"]\n\n");
    let mut s = String::from(
        "[run]\nname = \"mock-run\"\nseed = 11\noutput_dir = \"run\"\n\n\
         [retry]\nmax_retries = 1\nbase_delay_ms = 10\nmax_delay_ms = 20\n\n",
    );
    s += &endpoint("gen", &m.generator.base_url());
    s += &endpoint("safe", &m.safe.base_url());
    s += &endpoint("unsafe", &m.unsafe_.base_url());
    s += &role("expander", "gen");
    s += &role("generator", "gen");
    s += &role("safe_responder", "safe");
    s += &role("unsafe_responder", "unsafe");
    s += "[taxonomy]\nselect = [\"crime/cyber/account_takeover\", \"substance/alcohol/underage_drinking\"]\n\n\
          [stages.expand]\nrounds = 1\ntopics_per_round = 2\n\n\
          [stages.seed_instructions]\nper_topic = 2\n\n\
          [stages.raw_text]\nformats = [\"blog\"]\n\n\
          [stages.diversify]\nepochs = 1\n\n\
          [stages.responses]\nchosen_candidates = 2\nrejected_candidates = 1\n\n\
          [stages.validate]\nquery_harm_threshold = 0.0\ncategory_top_k = 1000\nmax_regenerations = 1\n\n\
          [stages.dedup]\nminhash_threshold = 1.0\nembedding_threshold = 1.0\n\n\
          [stages.split]\ntest_fraction = 0.5\n\n";
    s += extra;
    ws.write("run.toml", &s);
}

/// Every file of the dataset directory, by relative path.
fn dataset_files(run: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                out.insert(p.strip_prefix(base).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&run.join("dataset"), &run.join("dataset"), &mut out);
    out
}

/// Both directories hold the same files with the same bytes; a difference is
/// reported by file name and first differing line, not as bytes.
fn assert_same_files(got: &BTreeMap<String, Vec<u8>>, want: &BTreeMap<String, Vec<u8>>) {
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    // Data files first: a card that differs only says that the data does.
    let mut names: Vec<&String> = got.keys().collect();
    names.sort_by_key(|n| (!n.ends_with(".jsonl"), n.as_str()));
    for name in names {
        let bytes = &got[name];
        if bytes != &want[name] {
            let (a, b) = (String::from_utf8_lossy(bytes), String::from_utf8_lossy(&want[name]));
            let line = a.lines().zip(b.lines()).position(|(x, y)| x != y);
            let (x, y) = line.map_or(("", ""), |l| (a.lines().nth(l).unwrap(), b.lines().nth(l).unwrap()));
            let at = x.bytes().zip(y.bytes()).position(|(p, q)| p != q).unwrap_or(0).saturating_sub(80);
            let show = |t: &str| t.get(at..).unwrap_or(t).chars().take(300).collect::<String>();
            panic!("{name} differs at line {line:?}:\n got: …{}\nwant: …{}", show(x), show(y));
        }
    }
}

/// The ids every pair must have: leaves × 2 topics × (8 extracted types × 2
/// epochs), less toxic_completion's epoch 0 (the chosen over-refuses) and
/// the coding-task duplicates after the first topic.
fn expected_ids(ids: &BTreeSet<String>) -> BTreeSet<String> {
    let topics: BTreeSet<String> =
        ids.iter().map(|id| id.split('/').take(5).collect::<Vec<_>>().join("/")).collect();
    let leaves = ["crime/cyber/account_takeover", "substance/alcohol/underage_drinking"];
    let mut out = BTreeSet::new();
    let first = format!("{}#t00/blog/0", leaves[0]);
    for leaf in leaves {
        for t in 0..2 {
            let raw = format!("{leaf}#t{t:02}/blog/0");
            assert!(topics.contains(&raw) || !ids.iter().any(|i| i.starts_with(leaf)), "{raw} in {topics:?}");
            for ty in TYPES {
                for e in 0..2 {
                    let skip = ty == "fictional_scenario"
                        || (ty == "toxic_completion" && e == 0)
                        || (ty == "coding_task" && raw != first);
                    if !skip {
                        out.insert(format!("{raw}/{ty}/q0/e{e}"));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn generate_on_canned_answers_gives_exactly_the_expected_dataset() {
    if !cached("minilm-l6") {
        return;
    }
    let m = mocks(Duration::ZERO);
    let ws = Workspace::new();
    config(&ws, &m, "");
    let out = run_in(ws.path(), &["generate", "-c", "run.toml", "--json"]);
    let (stdout, stderr) = text(&out);
    // The fictional-scenario extractions are malformed: dropped, not failed (exit 0).
    assert_eq!(code(&out), 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let stage = |name: &str| {
        report["stages"].as_array().unwrap().iter().find(|s| s["stage"] == name).unwrap().clone()
    };
    assert_eq!(stage("expand")["done"], 2);
    assert_eq!(stage("seed_instructions")["done"], 4);
    assert_eq!(stage("raw_text")["done"], 4);
    assert_eq!(
        (stage("extract")["done"].as_u64(), stage("extract")["dropped"].as_u64()),
        (Some(32), Some(4))
    );
    assert_eq!(stage("diversify")["done"], 32);
    assert_eq!(
        (stage("validate")["done"].as_u64(), stage("validate")["dropped"].as_u64()),
        (Some(60), Some(4)),
        "{}",
        report["failures"]
    );
    assert_eq!((stage("dedup")["done"].as_u64(), stage("dedup")["dropped"].as_u64()), (Some(54), Some(6)));
    assert_eq!(stage("export")["done"], 1);
    assert_eq!(report["dedup"]["exact"], 6);
    assert_eq!(report["dedup"]["after"], 54);
    let failures = &report["failures"];
    assert_eq!(failures["extract"]["malformed structured output"], 4, "{failures}");
    // The over-refusals; the classifier may find their rejected side too weak as well.
    let validate = failures["validate"].as_object().unwrap();
    assert!(validate.keys().all(|k| k.contains("chosen_over_refusal")), "{failures}");
    assert_eq!(validate.values().map(|v| v.as_u64().unwrap()).sum::<u64>(), 4, "{failures}");
    assert!(stderr.contains("\"event\":\"stage_done\""), "--json gives machine progress logs");

    let run = ws.path().join("run");
    let train = read_jsonl(&run.join("dataset/trl/train.jsonl"));
    let test = read_jsonl(&run.join("dataset/trl/test.jsonl"));
    let ids: BTreeSet<String> =
        train.iter().chain(&test).map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 54);
    assert_eq!(ids, expected_ids(&ids));
    // Split by topic: one of each leaf's two topics is in test.
    let topics = |rows: &[serde_json::Value]| -> BTreeSet<String> {
        rows.iter().map(|r| r["topic_id"].as_str().unwrap().to_string()).collect()
    };
    let (train_topics, test_topics) = (topics(&train), topics(&test));
    assert!(train_topics.is_disjoint(&test_topics));
    assert_eq!((train_topics.len(), test_topics.len()), (2, 2));
    let per_topic = |t: &str| if t == "crime/cyber/account_takeover#t00" { 15 } else { 13 };
    assert_eq!(train.len(), train_topics.iter().map(|t| per_topic(t)).sum::<usize>());
    assert_eq!(test.len(), test_topics.iter().map(|t| per_topic(t)).sum::<usize>());
    assert_eq!(report["splits"]["train"], train.len());
    for row in train.iter().chain(&test) {
        assert!(row["chosen"].as_str().unwrap().contains("[placeholder safe guidance"));
        assert!(row["rejected"].as_str().unwrap().contains("[placeholder unsafe content"));
        assert_eq!(row["generator_model"], "mock-gen");
        assert_eq!(row["unsafe_responder_model"], "mock-unsafe");
        assert_eq!(row["seed"], 11);
        assert_eq!(row["verdict_chosen_safe"], true);
        assert!(TYPES.contains(&row["jailbreak_type"].as_str().unwrap()));
    }
    let redteam = read_jsonl(&run.join("dataset/redteam/prompts.jsonl"));
    assert_eq!(redteam.len(), 54);
    assert!(redteam.iter().all(|r| r.get("chosen").is_none() && r["taxonomy_path"].is_string()));
    let card = std::fs::read_to_string(run.join("dataset/README.md")).unwrap();
    assert!(card.starts_with("---\n") && card.contains("license: cc-by-nc-4.0"));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("dataset/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["seed"], 11);
    assert_eq!(manifest["models"]["safe_responder"], "mock-safe");
    assert_eq!(manifest["template_hashes"].as_object().unwrap().len(), 9);
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(md.contains("## Coverage") && md.contains("15 of 18 leaf × jailbreak-type cells filled"), "{md}");

    python_check(&run.join("dataset"));

    // `sagert status` shows the generation report after the calls.
    let out = run_in(ws.path(), &["status", "run"]);
    assert_eq!(code(&out), 0);
    assert!(
        text(&out).0.contains("## Coverage") && text(&out).0.contains("exact duplicate"),
        "{:?}",
        text(&out)
    );
    let out = run_in(ws.path(), &["status", "run", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&text(&out).0).unwrap();
    assert_eq!(status["generate"]["dedup"]["after"], 54);

    // A rerun sends nothing and writes the same bytes.
    let sent = m.generator.stats().received + m.safe.stats().received + m.unsafe_.stats().received;
    let before = dataset_files(&run);
    let out = run_in(ws.path(), &["generate", "-c", "run.toml", "--json"]);
    assert_eq!(code(&out), 0);
    let resent = m.generator.stats().received + m.safe.stats().received + m.unsafe_.stats().received - sent;
    assert_eq!(resent, 0, "dropped items are not retried");
    assert_same_files(&dataset_files(&run), &before);

    // Re-export in another format.
    let out = run_in(ws.path(), &["export", "run", "--format", "trl-chat", "--to", "chat"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let chat = read_jsonl(&ws.path().join("chat/trl-chat/train.jsonl"));
    assert_eq!(chat.len(), train.len());
    assert_eq!(chat[0]["prompt"][0]["role"], "user");
    assert_eq!(chat[0]["chosen"][0]["role"], "assistant");

    // A changed definition is refused, not mixed in.
    let toml = std::fs::read_to_string(ws.path().join("run.toml")).unwrap();
    ws.write("run.toml", &toml.replace("seed = 11", "seed = 12"));
    let out = run_in(ws.path(), &["generate", "-c", "run.toml"]);
    assert_eq!(code(&out), 2);
    assert!(text(&out).1.contains("different configuration"), "{}", text(&out).1);
}

#[test]
fn rejected_from_raw_text_needs_no_unsafe_responder() {
    if !cached("minilm-l6") {
        return;
    }
    let m = mocks(Duration::ZERO);
    let ws = Workspace::new();
    config(&ws, &m, "");
    let toml = std::fs::read_to_string(ws.path().join("run.toml")).unwrap();
    let toml = toml
        .replace("[roles.unsafe_responder]\nmodel = \"mock-unsafe\"\nendpoints = [\"unsafe\"]\n", "")
        .replace("rejected_candidates = 1\n", "rejected_candidates = 1\nrejected_source = \"raw_text\"\n");
    ws.write("run.toml", &toml);
    let out = run_in(ws.path(), &["generate", "-c", "run.toml", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out).1);
    assert_eq!(m.unsafe_.stats().received, 0);
    let train = read_jsonl(&ws.path().join("run/dataset/trl/train.jsonl"));
    assert!(!train.is_empty());
    for row in &train {
        assert!(row["rejected"].as_str().unwrap().starts_with("[placeholder blog"));
        assert_eq!(row["unsafe_responder_model"], "raw_text");
    }
}

/// Items done so far in `stage`, read from the run's store while it runs.
fn done_in(run: &Path, stage: &str) -> u64 {
    let Ok(store) = sagert_store::Store::open_existing(run) else { return 0 };
    store.count_items(stage).map(|c| c.get(&sagert_store::ItemState::Done).copied().unwrap_or(0)).unwrap_or(0)
}

#[test]
fn sigkill_at_several_points_then_resume_gives_the_uninterrupted_dataset() {
    if !cached("minilm-l6") {
        return;
    }
    let latency = Duration::from_millis(15);
    // The uninterrupted run.
    let m1 = mocks(latency);
    let ws1 = Workspace::new();
    config(&ws1, &m1, "");
    let out = run_in(ws1.path(), &["generate", "-c", "run.toml", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out).1);
    let expected = dataset_files(&ws1.path().join("run"));
    let calls1 = sagert_store::Store::open_existing(&ws1.path().join("run")).unwrap().role_stats().unwrap();
    let sent1 = m1.generator.stats().received + m1.safe.stats().received + m1.unsafe_.stats().received;

    // The same run, killed at a stage boundary (topics done), mid-extraction
    // and mid-validation, then finished.
    let m2 = mocks(latency);
    let ws2 = Workspace::new();
    config(&ws2, &m2, "");
    let run2 = ws2.path().join("run");
    for (stage, at) in [("expand", 2), ("extract", 10), ("validate", 25)] {
        let mut child = sagert()
            .current_dir(ws2.path())
            .args(["generate", "-c", "run.toml", "--json"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while done_in(&run2, stage) < at {
            assert!(Instant::now() < deadline, "{stage} never reached {at}");
            assert!(child.try_wait().unwrap().is_none(), "the run ended before the kill point {stage}/{at}");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!run2.join("dataset").exists(), "no dataset from a killed run");
    }
    let out = run_in(ws2.path(), &["generate", "-c", "run.toml", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out).1);
    assert_same_files(&dataset_files(&run2), &expected);

    // Nothing paid for twice: the stores hold the same calls, and the
    // requests sent exceed the uninterrupted run's by at most those in flight
    // at the three kills (4 per endpoint).
    let calls2 = sagert_store::Store::open_existing(&run2).unwrap().role_stats().unwrap();
    let count = |s: &[sagert_store::RoleStats]| s.iter().map(|r| r.calls).sum::<u64>();
    assert_eq!(count(&calls2), count(&calls1));
    let sent2 = m2.generator.stats().received + m2.safe.stats().received + m2.unsafe_.stats().received;
    assert!(sent2 <= sent1 + 3 * 12 + 3 * 8, "sent {sent2} vs {sent1}");
}

/// `scripts/check-dataset.py` (Hugging Face `datasets` loads every config and
/// split; every row has prompt/chosen/rejected): always under CI, else with
/// `SAGERT_PYTHON_CHECK=1`.
fn python_check(dir: &Path) {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !ci && !std::env::var("SAGERT_PYTHON_CHECK").is_ok_and(|v| v == "1") {
        eprintln!("skipped the datasets check: set SAGERT_PYTHON_CHECK=1 (needs `pip install datasets`)");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/check-dataset.py");
    let hf_home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(dir)
        .env("HF_HOME", hf_home.path())
        .output()
        .expect("run python3");
    assert!(out.status.success(), "check-dataset.py failed:\n{:?}", text(&out));
}
