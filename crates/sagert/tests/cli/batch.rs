//! `sagert batch` and `sagert status` against the fault-injecting mock server:
//! caching, resume after SIGKILL, budgets, failures and secrets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sagert_mock::{spawn_blocking_server, Fault, MockConfig};

use super::util::{code, read_jsonl, run_in, sagert, text, Workspace};

fn prompt_of(body: &serde_json::Value) -> String {
    body["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_string()
}

#[test]
fn batch_answers_everything_and_a_rerun_is_served_from_the_store() {
    let mock = spawn_blocking_server(MockConfig::default()).unwrap();
    let ws = Workspace::new();
    ws.config("run.toml", &[&mock.base_url()], "");
    ws.prompts("in.jsonl", 20);
    let out = run_in(ws.path(), &["batch", "-c", "run.toml", "-i", "in.jsonl", "-o", "out.jsonl"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    let rows = read_jsonl(&ws.path().join("out.jsonl"));
    assert_eq!(rows.len(), 20);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["id"], format!("p{i:04}"));
        assert_eq!(row["response"], format!("echo: placeholder prompt {i}"));
        assert_eq!(row["finish_reason"], "stop");
    }
    let sent = mock.stats().received;
    assert_eq!(sent, 20);
    // Role defaults and the run's seed are sent.
    let body = &mock.request_log()[0].body;
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["seed"], 1);

    // The same batch in a fresh output: no HTTP request at all.
    let out =
        run_in(ws.path(), &["batch", "-c", "run.toml", "-i", "in.jsonl", "-o", "again.jsonl", "--json"]);
    assert_eq!(code(&out), 0);
    assert_eq!(mock.stats().received, sent, "a rerun sends nothing");
    let summary: serde_json::Value = serde_json::from_str(&text(&out).0).unwrap();
    assert_eq!(summary["resumed"], 20);
    assert_eq!(
        std::fs::read(ws.path().join("out.jsonl")).unwrap(),
        std::fs::read(ws.path().join("again.jsonl")).unwrap()
    );

    // A new item with an already-answered prompt is a cache hit, not a request.
    ws.write("dup.jsonl", "{\"id\": \"other\", \"prompt\": \"placeholder prompt 3\"}\n");
    let out = run_in(ws.path(), &["batch", "-c", "run.toml", "-i", "dup.jsonl", "-o", "dup.out", "--json"]);
    assert_eq!(code(&out), 0);
    let summary: serde_json::Value = serde_json::from_str(&text(&out).0).unwrap();
    assert_eq!(summary["cache_hits"], 1);
    assert_eq!(mock.stats().received, sent);

    let out = run_in(ws.path(), &["status", "run", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&text(&out).0).unwrap();
    let target = &status["roles"][0];
    assert_eq!(target["role"], "target");
    assert_eq!(target["calls"], 20);
    assert_eq!(target["cache_hits"], 1);
    assert!(target["completion_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn sigkill_mid_batch_then_rerun_loses_nothing_and_repeats_no_completed_call() {
    let mock =
        spawn_blocking_server(MockConfig { latency: Duration::from_millis(40), ..MockConfig::default() })
            .unwrap();
    let ws = Workspace::new();
    ws.config("run.toml", &[&mock.base_url()], "");
    let n = 200;
    ws.prompts("in.jsonl", n);

    let mut child = sagert()
        .current_dir(ws.path())
        .args(["batch", "-c", "run.toml", "-i", "in.jsonl", "-o", "out.jsonl", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once a good share of the calls has completed on the server.
    let started = Instant::now();
    while mock.stats().ok < 60 {
        assert!(started.elapsed() < Duration::from_secs(60), "the batch made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!ws.path().join("out.jsonl").exists(), "no half-written output");

    // What the store holds now was paid for and must never be requested again.
    let store = sagert_store::Store::open_existing(&ws.path().join("run")).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    let stored: BTreeSet<String> = store
        .items("batch", Some(sagert_store::ItemState::Done))
        .unwrap()
        .iter()
        .map(|i| i.payload["messages"][0]["content"].as_str().unwrap().to_string())
        .collect();
    drop(store);
    assert!(stored.len() >= 50 && stored.len() < n, "killed mid-batch: {} done", stored.len());
    let before = mock.request_log().len();

    let out = run_in(ws.path(), &["batch", "-c", "run.toml", "-i", "in.jsonl", "-o", "out.jsonl", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out).1);

    let second: Vec<String> = mock.request_log()[before..].iter().map(|r| prompt_of(&r.body)).collect();
    for p in &second {
        assert!(!stored.contains(p), "completed call repeated: {p}");
    }
    let rows = read_jsonl(&ws.path().join("out.jsonl"));
    assert_eq!(rows.len(), n, "nothing lost, nothing duplicated");
    let ids: BTreeSet<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), n);
    assert!(rows.iter().all(|r| r["response"].as_str().unwrap().starts_with("echo: ")));
    // Every prompt was completed on the server, and at most the calls in flight at
    // the kill were completed twice.
    let mut completions: BTreeMap<String, usize> = BTreeMap::new();
    for body in mock.completed_bodies() {
        *completions.entry(prompt_of(&body)).or_default() += 1;
    }
    assert_eq!(completions.len(), n);
    let repeated = completions.values().filter(|&&c| c > 1).count();
    assert!(repeated <= 8, "{repeated} prompts completed twice; at most the 8 in flight may be");
}

#[test]
fn budget_stops_the_run_cleanly_and_a_larger_budget_goes_on() {
    let mock = spawn_blocking_server(MockConfig::default()).unwrap();
    let ws = Workspace::new();
    ws.config("run.toml", &[&mock.base_url()], "[budget]\nmax_requests = 5\n");
    ws.prompts("in.jsonl", 12);
    let out = run_in(
        ws.path(),
        &["batch", "-c", "run.toml", "-i", "in.jsonl", "-o", "out.jsonl", "--concurrency", "1"],
    );
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 3, "{stderr}");
    assert!(stderr.contains("stopped by the budget: max_requests = 5"), "{stderr}");
    assert_eq!(mock.stats().received, 5);
    let rows = read_jsonl(&ws.path().join("out.jsonl"));
    assert_eq!(rows.len(), 12);
    assert_eq!(rows.iter().filter(|r| r.get("response").is_some()).count(), 5);
    assert_eq!(rows.iter().filter(|r| r["error"] == "not run").count(), 7);

    let out = run_in(ws.path(), &["status", "run"]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("stopped early: budget: max_requests = 5"), "{stdout}");
    let store = sagert_store::Store::open_existing(&ws.path().join("run")).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    drop(store);

    // The budget counts the whole run directory: 5 more requests allowed.
    let out = run_in(
        ws.path(),
        &["batch", "-c", "run.toml", "-i", "in.jsonl", "-o", "out.jsonl", "--max-requests", "10"],
    );
    assert_eq!(code(&out), 3);
    assert_eq!(mock.stats().received, 10);
    let out = run_in(
        ws.path(),
        &["batch", "-c", "run.toml", "-i", "in.jsonl", "-o", "out.jsonl", "--max-requests", "100"],
    );
    assert_eq!(code(&out), 0, "{}", text(&out).1);
    assert_eq!(mock.stats().received, 12, "each prompt paid once");
}

#[test]
fn failures_are_recorded_with_reasons_and_counted_in_the_exit_code() {
    let mock = spawn_blocking_server(MockConfig::default()).unwrap();
    mock.set_default_fault(Some(Fault::ServerError(500)));
    let ws = Workspace::new();
    ws.config("run.toml", &[&mock.base_url()], "");
    ws.prompts("in.jsonl", 3);
    let out = run_in(ws.path(), &["batch", "-c", "run.toml", "-i", "in.jsonl", "-o", "out.jsonl"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(stderr.contains("3 failed"), "{stderr}");
    assert_eq!(mock.stats().received, 9, "first attempt plus 2 retries each");
    for row in read_jsonl(&ws.path().join("out.jsonl")) {
        let e = row["error"].as_str().unwrap();
        assert!(e.contains("HTTP 500") && e.contains("3 attempt"), "{e}");
    }
    let out = run_in(ws.path(), &["status", "run", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&text(&out).0).unwrap();
    assert_eq!(status["roles"][0]["failures"], 3);
    assert_eq!(status["roles"][0]["failures_by_label"]["server_500"], 3);

    // The server recovers: a rerun retries the failed items and succeeds.
    mock.set_default_fault(None);
    let out = run_in(ws.path(), &["batch", "-c", "run.toml", "-i", "in.jsonl", "-o", "out.jsonl"]);
    assert_eq!(code(&out), 0);
    assert!(read_jsonl(&ws.path().join("out.jsonl")).iter().all(|r| r.get("response").is_some()));
}

#[test]
fn failover_to_the_second_endpoint() {
    let down = spawn_blocking_server(MockConfig::default()).unwrap();
    down.set_default_fault(Some(Fault::Unavailable { retry_after: None }));
    let up = spawn_blocking_server(MockConfig::default()).unwrap();
    let ws = Workspace::new();
    ws.config("run.toml", &[&down.base_url(), &up.base_url()], "");
    ws.prompts("in.jsonl", 10);
    let out = run_in(ws.path(), &["batch", "-c", "run.toml", "-i", "in.jsonl", "-o", "out.jsonl"]);
    assert_eq!(code(&out), 0, "{}", text(&out).1);
    assert_eq!(up.stats().ok, 10);
}

#[test]
fn bad_input_names_file_line_and_field_and_writes_nothing() {
    let mock = spawn_blocking_server(MockConfig::default()).unwrap();
    let ws = Workspace::new();
    ws.config("run.toml", &[&mock.base_url()], "");
    let cases: [(&str, &[u8], &str); 5] = [
        (
            "a.jsonl",
            b"{\"prompt\": \"ok\"}\n{\"prompt\": 3}\n",
            "a.jsonl:2: prompt: must be a non-empty string",
        ),
        ("b.jsonl", b"{\"prompt\": \"ok\"}\nnot json\n", "b.jsonl:2: -: not valid JSON"),
        ("c.jsonl", b"", "c.jsonl:0: -: no prompts in the file"),
        ("d.jsonl", b"{\"prompt\": \"ok\", \"colour\": 1}\n", "d.jsonl:1: colour: unknown field"),
        ("e.jsonl", b"{\"prompt\": \"ok\"}\n{\"prompt\": \"\xfe\"}\n", "e.jsonl:2: -: not valid UTF-8"),
    ];
    for (name, body, expected) in cases {
        std::fs::write(ws.path().join(name), body).unwrap();
        let out = run_in(ws.path(), &["batch", "-c", "run.toml", "-i", name, "-o", "out.jsonl"]);
        let (_, stderr) = text(&out);
        assert_eq!(code(&out), 2, "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
    assert!(!ws.path().join("out.jsonl").exists());
    assert_eq!(mock.stats().received, 0);
}

#[test]
fn a_planted_api_key_reaches_the_server_and_nothing_else() {
    const KEY: &str = "sk-planted-7f3a9c2e51b4d8a6";
    let mock = spawn_blocking_server(MockConfig::default()).unwrap();
    let ws = Workspace::new();
    let cfg = ws.config("run.toml", &[&mock.base_url()], "");
    let text_cfg = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("concurrency = 8", "concurrency = 8\napi_key_env = \"SAGERT_TEST_PLANTED_KEY\"");
    std::fs::write(&cfg, text_cfg).unwrap();
    ws.prompts("in.jsonl", 4);
    // One failing call too, so that error paths are covered.
    mock.push_faults([Fault::BadRequest("bad request for this test".into())]);
    let out = sagert()
        .current_dir(ws.path())
        .env("SAGERT_TEST_PLANTED_KEY", KEY)
        .args(["batch", "-c", "run.toml", "-i", "in.jsonl", "-o", "out.jsonl"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stderr}");
    assert_eq!(mock.request_log()[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    let status = run_in(ws.path(), &["status", "run", "--json"]);

    let mut haystacks =
        vec![("stdout", stdout.into_bytes()), ("stderr", stderr.into_bytes()), ("status", status.stdout)];
    for entry in walk(ws.path()) {
        haystacks
            .push((Box::leak(entry.display().to_string().into_boxed_str()), std::fs::read(&entry).unwrap()));
    }
    assert!(haystacks.iter().any(|(n, _)| n.ends_with("sagert.sqlite")));
    for (name, bytes) in haystacks {
        assert!(!contains(&bytes, KEY.as_bytes()), "the API key leaked into {name}");
        assert!(!contains(&bytes, b"7f3a9c2e51b4d8a6"), "part of the API key leaked into {name}");
    }

    let out =
        sagert().current_dir(ws.path()).args(["batch", "-c", "run.toml", "-i", "in.jsonl"]).output().unwrap();
    assert_eq!(code(&out), 2);
    assert!(text(&out).1.contains("$SAGERT_TEST_PLANTED_KEY, which is not set"), "{}", text(&out).1);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
