//! `sagert serve` as a process: the first stdout line names the bound address,
//! the API answers there, and SIGTERM stops it with exit code 0. The server's
//! behaviour in depth is tested in `crates/sagert-serve/tests`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::util::{code, run_in, sagert, text, Workspace};

/// `method path` with `body` over a fresh connection; the status and body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}")))
}

#[test]
fn serve_prints_its_address_answers_and_stops_on_sigterm() {
    let model = std::env::var_os("SAGERT_CACHE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/sagert")
        })
        .join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !model.is_file() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run this test: run scripts/fetch-models"
        );
        eprintln!(
            "skipped serve_prints_its_address_answers_and_stops_on_sigterm: {} missing",
            model.display()
        );
        return;
    }
    let mut child = sagert()
        .args([
            "serve",
            "--port",
            "0",
            "--model-id",
            "smol",
            "--threads",
            "2",
            "--sequences",
            "2",
            "--context",
            "512",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stdout).read_line(&mut first);
        let _ = tx.send(first);
    });
    let first = rx.recv_timeout(Duration::from_secs(300)).expect("a first line within 300 s");
    let addr = first
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("first line: {first:?}"))
        .to_string();
    assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{addr}");

    let (status, models) = http(&addr, "GET", "/v1/models", "");
    assert_eq!(status, 200, "{models}");
    assert_eq!(models["data"][0]["id"], "smol");
    let body = r#"{"model": "smol", "max_tokens": 4, "temperature": 0, "messages": [{"role": "user", "content": "Hi"}]}"#;
    let (status, answer) = http(&addr, "POST", "/v1/chat/completions", body);
    assert_eq!(status, 200, "{answer}");
    assert!(answer["usage"]["completion_tokens"].as_u64().unwrap() >= 1, "{answer}");

    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("serving smol"), "{stderr}");
}

#[test]
fn serve_needs_an_embedded_endpoint() {
    let ws = Workspace::new();
    let cfg = ws.config("run.toml", &["http://127.0.0.1:9/v1"], "");
    let out = run_in(ws.path(), &["serve", "-c", cfg.to_str().unwrap(), "--port", "0"]);
    assert_ne!(code(&out), 0);
    assert!(text(&out).1.contains("no embedded endpoint"), "{}", text(&out).1);
    let out = run_in(ws.path(), &["serve", "-c", cfg.to_str().unwrap(), "--endpoint", "ep0", "--port", "0"]);
    assert_ne!(code(&out), 0);
    assert!(text(&out).1.contains("`ep0` is not embedded"), "{}", text(&out).1);
}
