//! The embedded engine through the CLI: `chat`, and `batch` on a config whose
//! roles share one embedded endpoint. Skipped with a printed reason when the
//! model is not cached, except under CI, which fetches it.

use std::io::Write;
use std::process::Stdio;

use super::util::{cached, code, read_jsonl, run_in, sagert, text, Workspace};

fn model_cached() -> bool {
    cached("smollm2-135m-instruct")
}

#[test]
fn chat_answers_each_line_greedily_and_deterministically() {
    if !model_cached() {
        return;
    }
    let chat = || {
        let mut child = sagert()
            .args(["chat", "--temperature", "0", "--max-tokens", "12"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"Say hello.\n/reset\nName a colour.\n/exit\nnot read\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{}", text(&out).1);
        text(&out).0
    };
    let first = chat();
    assert!(first.lines().filter(|l| !l.trim().is_empty()).count() >= 2, "two answers: {first:?}");
    assert_eq!(first, chat(), "greedy chat is deterministic");
}

#[test]
fn batch_on_the_embedded_model_then_a_rerun_from_the_store() {
    if !model_cached() {
        return;
    }
    let ws = Workspace::new();
    ws.write(
        "run.toml",
        "[run]\nseed = 3\noutput_dir = \"run\"\n\
         [endpoints.local]\nkind = \"embedded\"\nmodel = \"smollm2-135m-instruct\"\nthreads = 2\nconcurrency = 4\n\
         [roles.target]\nmodel = \"smollm2-135m-instruct\"\nendpoints = [\"local\"]\ntemperature = 0.0\nmax_tokens = 16\n",
    );
    ws.write(
        "in.jsonl",
        "{\"id\": \"a\", \"prompt\": \"Name one colour of the sky.\"}\n{\"id\": \"b\", \"prompt\": \"Say hello.\"}\n\
         {\"id\": \"c\", \"prompt\": \"Count to three.\"}\n",
    );
    let out = run_in(ws.path(), &["batch", "-c", "run.toml", "-i", "in.jsonl", "-o", "out.jsonl"]);
    assert_eq!(code(&out), 0, "{}", text(&out).1);
    let rows = read_jsonl(&ws.path().join("out.jsonl"));
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert!(!row["response"].as_str().unwrap().is_empty(), "{row}");
        assert_eq!(row["model"], "smollm2-135m-instruct");
        assert!(row["usage"]["completion_tokens"].as_u64().unwrap() <= 16);
    }
    // A rerun is answered from the store: same bytes, no engine needed.
    let first = std::fs::read(ws.path().join("out.jsonl")).unwrap();
    let out =
        run_in(ws.path(), &["batch", "-c", "run.toml", "-i", "in.jsonl", "-o", "again.jsonl", "--json"]);
    assert_eq!(code(&out), 0);
    assert_eq!(first, std::fs::read(ws.path().join("again.jsonl")).unwrap());
}

#[test]
fn generate_end_to_end_on_the_embedded_model() {
    if !model_cached() || !cached("minilm-l6") {
        return;
    }
    let ws = Workspace::new();
    ws.write(
        "run.toml",
        "[run]\nname = \"tiny\"\nseed = 5\noutput_dir = \"run\"\n\n\
         [endpoints.local]\nkind = \"embedded\"\nmodel = \"smollm2-135m-instruct\"\nconcurrency = 6\n\
         context_per_sequence = 1536\n\n\
         [roles.expander]\nmodel = \"smollm2-135m-instruct\"\nendpoints = [\"local\"]\nmax_tokens = 120\n\n\
         [roles.generator]\nmodel = \"smollm2-135m-instruct\"\nendpoints = [\"local\"]\nmax_tokens = 160\n\n\
         [roles.safe_responder]\nmodel = \"smollm2-135m-instruct\"\nendpoints = [\"local\"]\nmax_tokens = 64\n\n\
         [roles.unsafe_responder]\nmodel = \"smollm2-135m-instruct\"\nendpoints = [\"local\"]\nmax_tokens = 64\n\n\
         [taxonomy]\nselect = [\"crime/cyber/account_takeover\"]\n\n\
         [stages.expand]\nrounds = 1\ntopics_per_round = 2\n\n\
         [stages.seed_instructions]\nper_topic = 1\n\n\
         [stages.raw_text]\nformats = [\"blog\"]\n\n\
         [stages.extract]\njailbreak_types = [\"direct\", \"role_play\", \"coding_task\"]\n\n\
         [stages.diversify]\nepochs = 1\n\n\
         [stages.validate]\nmax_regenerations = 0\n",
    );
    let out = run_in(ws.path(), &["generate", "-c", "run.toml", "--json"]);
    let (stdout, stderr) = text(&out);
    // A 135M model fails some items; that is exit 1, with a dataset all the same.
    assert!(matches!(code(&out), 0 | 1), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let stage = |name: &str| {
        report["stages"].as_array().unwrap().iter().find(|s| s["stage"] == name).unwrap().clone()
    };
    let n = |name: &str, field: &str| stage(name)[field].as_u64().unwrap();
    assert_eq!(n("expand", "done"), 1, "{report}");
    let topics = n("seed_instructions", "done") + n("seed_instructions", "failed");
    assert!((1..=2).contains(&topics), "{report}");
    assert_eq!(n("raw_text", "done") + n("raw_text", "failed"), topics);
    // Constrained decoding: no extraction is malformed (a 135M model may
    // still give entries with no words, which are dropped).
    assert!(!report["failures"]["extract"].to_string().contains("malformed"), "{report}");
    assert_eq!(n("extract", "done") + n("extract", "dropped"), 3 * n("raw_text", "done"));
    let run = ws.path().join("run");
    for f in [
        "trl/train.jsonl",
        "trl/test.jsonl",
        "trl/train.parquet",
        "redteam/prompts.jsonl",
        "README.md",
        "manifest.json",
    ] {
        assert!(run.join("dataset").join(f).is_file(), "{f}");
    }
    let rows = read_jsonl(&run.join("dataset/trl/train.jsonl")).len()
        + read_jsonl(&run.join("dataset/trl/test.jsonl")).len();
    assert_eq!(
        rows as u64,
        report["splits"]["train"].as_u64().unwrap() + report["splits"]["test"].as_u64().unwrap()
    );
    assert!(std::fs::read_to_string(run.join("report.md")).unwrap().contains("## Diversity"));

    // Everything is in the store: a rerun gives the same bytes.
    let first = std::fs::read(run.join("dataset/trl/train.jsonl")).unwrap();
    let out = run_in(ws.path(), &["generate", "-c", "run.toml", "--json"]);
    assert!(matches!(code(&out), 0 | 1), "{}", text(&out).1);
    assert_eq!(std::fs::read(run.join("dataset/trl/train.jsonl")).unwrap(), first);
}
