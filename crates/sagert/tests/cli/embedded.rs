//! The embedded engine through the CLI: `chat`, and `batch` on a config whose
//! roles share one embedded endpoint. Skipped with a printed reason when the
//! model is not cached, except under CI, which fetches it.

use std::io::Write;
use std::process::Stdio;

use super::util::{code, read_jsonl, run_in, sagert, text, Workspace};

fn model_cached() -> bool {
    let out = sagert().args(["models", "list", "--json"]).output().unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ready = rows.iter().any(|r| r["name"] == "smollm2-135m-instruct" && r["status"]["state"] == "ready");
    if !ready {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run this test: run scripts/fetch-models"
        );
        eprintln!("skipped: smollm2-135m-instruct is not cached; run scripts/fetch-models");
    }
    ready
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
