//! `sagert batch` against a real OpenAI-compatible server: llama.cpp's, from
//! the PyPI package `llama-cpp-python[server]`, serving SmolLM2-135M-Instruct.
//!
//! Skipped with a printed reason when the server package or the model is
//! missing, except under CI (`CI=true`), where `.ci/run` installs both and a
//! skip would hide a failure.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::util::{code, read_jsonl, run_in, text, Workspace};

const MODEL_FILE: &str = "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";

fn model_path() -> PathBuf {
    let cache = std::env::var_os("SAGERT_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/sagert"));
    cache.join("models").join(MODEL_FILE)
}

/// Why the test cannot run here, if it cannot.
fn missing() -> Option<String> {
    let python = Command::new("python3").args(["-c", "import llama_cpp.server"]).output();
    if !matches!(python, Ok(o) if o.status.success()) {
        return Some(
            "python3 -m llama_cpp.server is not installed (pip install 'llama-cpp-python[server]')".into(),
        );
    }
    let model = model_path();
    if !model.exists() {
        return Some(format!("{} is missing (run scripts/fetch-models)", model.display()));
    }
    None
}

struct Server {
    child: Child,
    base_url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("python3")
        .args(["-m", "llama_cpp.server", "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--n_threads", "2", "--n_ctx", "2048", "--model"])
        .arg(model_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start llama_cpp.server");
    let server = Server { child, base_url: format!("http://127.0.0.1:{port}/v1") };
    let started = Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "llama_cpp.server did not start within 120 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    server
}

#[test]
fn batch_against_llama_cpp_server() {
    if let Some(reason) = missing() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must run this test, but {reason}");
        eprintln!("skipped batch_against_llama_cpp_server: {reason}");
        return;
    }
    let server = start_server();
    let ws = Workspace::new();
    // A generous timeout: the server shares 2 cores with the test build.
    let cfg = ws.config("run.toml", &[&server.base_url], "");
    let body = std::fs::read_to_string(&cfg).unwrap().replace("timeout_secs = 5.0", "timeout_secs = 300.0");
    std::fs::write(&cfg, body).unwrap();
    ws.write(
        "in.jsonl",
        "{\"id\": \"a\", \"prompt\": \"Name one colour of the sky.\"}\n\
         {\"id\": \"b\", \"system\": \"You are terse.\", \"prompt\": \"Say hello.\"}\n\
         {\"id\": \"c\", \"messages\": [{\"role\": \"user\", \"content\": \"Count to three.\"}]}\n",
    );
    let out = run_in(ws.path(), &["batch", "-c", "run.toml", "-i", "in.jsonl", "-o", "out.jsonl"]);
    let written = std::fs::read_to_string(ws.path().join("out.jsonl")).unwrap_or_default();
    assert_eq!(code(&out), 0, "{}\n{written}", text(&out).1);
    let rows = read_jsonl(&ws.path().join("out.jsonl"));
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert!(!row["response"].as_str().unwrap().trim().is_empty(), "{row}");
        assert!(["stop", "length"].contains(&row["finish_reason"].as_str().unwrap()), "{row}");
        assert!(row["usage"]["prompt_tokens"].as_u64().unwrap() > 5, "the server counted tokens: {row}");
    }

    // Structured output: llama.cpp's server rejects `json_schema` response formats,
    // so `auto` must still end with JSON that satisfies the schema.
    ws.write(
        "person.json",
        r#"{"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}"#,
    );
    ws.write(
        "people.jsonl",
        "{\"id\": \"p\", \"prompt\": \"Invent a fictional person. Give their name and age.\"}\n",
    );
    let out = run_in(
        ws.path(),
        &["batch", "-c", "run.toml", "-i", "people.jsonl", "-o", "people.out", "--schema", "person.json"],
    );
    assert_eq!(code(&out), 0, "{}", text(&out).1);
    let row = &read_jsonl(&ws.path().join("people.out"))[0];
    let person: serde_json::Value = serde_json::from_str(row["response"].as_str().unwrap()).unwrap();
    assert!(person["name"].is_string() && person["age"].is_u64(), "{person}");
}
