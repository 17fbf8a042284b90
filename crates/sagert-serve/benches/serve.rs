//! `sagert serve` against llama.cpp's own server (llama-cpp-python's
//! `python3 -m llama_cpp.server`) on the same GGUF file, through the same HTTP
//! client (reqwest), one server at a time.
//!
//! 1. Decode at batch 1: requests one after another (max_tokens 128,
//!    temperature 0, a prompt that asks for a long answer); completion tokens
//!    per second of wall time. Target: ours / llama.cpp >= 1.0.
//! 2. Throughput: 64 requests at once, 128 new tokens each (distinct prompts,
//!    temperature 0); completion tokens per second. Target: >= 1.2. llama-cpp-python
//!    0.3.x has no parallel slots (its server takes one request at a time
//!    behind a lock; see `--help`: no `--parallel`), so it is measured as it is.
//! 3. Peak memory: VmHWM of each server process after its runs. Target: at most
//!    1.5 x the model file plus 200 MB.
//!
//! Run with `scripts/bench-serve`, or:
//!
//! ```text
//! cargo build --release -p sagert
//! cargo bench -p sagert-serve --bench serve
//! ```
//!
//! Environment: `SAGERT_BENCH_MODEL` (the GGUF file; default SmolLM2-135M Q4_1
//! in the model cache), `SAGERT_BIN` (default: `sagert` beside the bench's
//! target directory), `SAGERT_BENCH_THREADS` (2), `SAGERT_BENCH_SEQUENCES` (our
//! parallel sequences, 16), `SAGERT_BENCH_CONTEXT` (our context per sequence,
//! 256), `SAGERT_BENCH_LLAMA_CTX` (llama.cpp's n_ctx, 2048),
//! `SAGERT_BENCH_REQUESTS` (64), `SAGERT_BENCH_TOKENS` (128),
//! `SAGERT_BENCH_DECODE_RUNS` (5), `SAGERT_BENCH_ONLY` (`ours` or `llama`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const MODEL_ID: &str = "bench";
const DECODE_TARGET: f64 = 1.0;
const THROUGHPUT_TARGET: f64 = 1.2;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn model_file() -> PathBuf {
    if let Some(p) = std::env::var_os("SAGERT_BENCH_MODEL") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("SAGERT_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/sagert"));
    cache.join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// `$SAGERT_BIN`, or `sagert` in a directory above this executable.
fn sagert_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SAGERT_BIN") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors().skip(1).map(|dir| dir.join("sagert")).find(|c| c.is_file())
}

/// A server process, killed when dropped.
struct Server {
    name: &'static str,
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The process's peak resident memory (VmHWM), in bytes.
    fn peak_memory(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

fn start_ours(bin: &Path, model: &Path, threads: u64, sequences: u64, context: u64) -> Server {
    let mut child = Command::new(bin)
        .args(["serve", "--port", "0", "--model-id", MODEL_ID])
        .arg("--model-path")
        .arg(model)
        .args(["--threads", &threads.to_string(), "--sequences", &sequences.to_string()])
        .args(["--context", &context.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sagert serve");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let addr = first.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("first line: {first:?}"));
    Server { name: "sagert serve", child, base: format!("{addr}/v1") }
}

fn start_llama(model: &Path, threads: u64, n_ctx: u64) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("python3")
        .args(["-m", "llama_cpp.server", "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--model_alias", MODEL_ID, "--n_threads", &threads.to_string()])
        .args(["--n_threads_batch", &threads.to_string(), "--n_ctx", &n_ctx.to_string(), "--model"])
        .arg(model)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start python3 -m llama_cpp.server");
    let server = Server { name: "llama_cpp.server", child, base: format!("http://127.0.0.1:{port}/v1") };
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(120), "llama_cpp.server did not start in 120 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    server
}

const TOPICS: [&str; 16] = [
    "a dragon who learns to fly",
    "a lighthouse keeper",
    "a robot gardener",
    "a city under the sea",
    "a lost dog finding home",
    "a baker who bakes for giants",
    "a clockmaker's apprentice",
    "two rival chess players",
    "a train that never stops",
    "a girl who talks to birds",
    "the last bookshop on Mars",
    "a knight afraid of the dark",
    "a painter who paints the wind",
    "a village of inventors",
    "a whale who sings opera",
    "a detective cat",
];

/// One chat completion; returns its completion tokens.
async fn complete(http: &reqwest::Client, base: &str, prompt: &str, max_tokens: u64) -> u64 {
    let body = json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    });
    let response = http.post(format!("{base}/chat/completions")).json(&body).send().await.expect("request");
    let status = response.status();
    let answer: Value = response.json().await.expect("JSON answer");
    assert!(status.is_success(), "{status}: {answer}");
    answer["usage"]["completion_tokens"].as_u64().expect("usage")
}

struct Measured {
    decode_tps: f64,
    decode_tokens: f64,
    throughput_tps: f64,
    throughput_secs: f64,
    peak_bytes: Option<u64>,
}

async fn measure(server: &Server, decode_runs: u64, requests: u64, tokens: u64) -> Measured {
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    // Warm up: first-request costs (threads, pages, prompt caches) are not decode.
    complete(&http, &server.base, "Say hello.", 8).await;
    let prompt = "Write a long story about a dragon who learns to fly.";
    let mut decoded = 0;
    let started = Instant::now();
    for _ in 0..decode_runs {
        decoded += complete(&http, &server.base, prompt, tokens).await;
    }
    let decode_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "  {}: batch 1: {decoded} tokens in {decode_secs:.2} s ({:.1} tok/s)",
        server.name,
        decoded as f64 / decode_secs
    );

    let started = Instant::now();
    let calls: Vec<_> = (0..requests)
        .map(|i| {
            let http = http.clone();
            let base = server.base.clone();
            let prompt =
                format!("Write a long story about {} (story {i}).", TOPICS[i as usize % TOPICS.len()]);
            tokio::spawn(async move { complete(&http, &base, &prompt, tokens).await })
        })
        .collect();
    let mut generated = 0;
    for c in calls {
        generated += c.await.expect("request task");
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "  {}: {requests} at once: {generated} tokens in {secs:.2} s ({:.1} tok/s)",
        server.name,
        generated as f64 / secs
    );
    Measured {
        decode_tps: decoded as f64 / decode_secs,
        decode_tokens: decoded as f64 / decode_runs as f64,
        throughput_tps: generated as f64 / secs,
        throughput_secs: secs,
        peak_bytes: server.peak_memory(),
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    }
    let model = model_file();
    if !model.is_file() {
        eprintln!("skipped: {} missing (run scripts/fetch-models)", model.display());
        return ExitCode::SUCCESS;
    }
    let threads = env_number("SAGERT_BENCH_THREADS", 2);
    let sequences = env_number("SAGERT_BENCH_SEQUENCES", 16);
    let context = env_number("SAGERT_BENCH_CONTEXT", 256);
    let llama_ctx = env_number("SAGERT_BENCH_LLAMA_CTX", 2048);
    let requests = env_number("SAGERT_BENCH_REQUESTS", 64);
    let tokens = env_number("SAGERT_BENCH_TOKENS", 128);
    let decode_runs = env_number("SAGERT_BENCH_DECODE_RUNS", 5);
    let only = std::env::var("SAGERT_BENCH_ONLY").unwrap_or_default();
    let model_bytes = std::fs::metadata(&model).map(|m| m.len()).unwrap_or(0);
    let memory_target = model_bytes as f64 * 1.5 + 200e6;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    eprintln!(
        "model {} ({:.1} MB), {threads} threads; ours: {sequences} sequences x {context} tokens; \
         llama.cpp: n_ctx {llama_ctx}; {requests} requests x {tokens} tokens",
        model.display(),
        mb(model_bytes)
    );

    let mut ours = None;
    if only != "llama" {
        let Some(bin) = sagert_binary() else {
            eprintln!("no sagert binary: run `cargo build --release -p sagert` or set SAGERT_BIN");
            return ExitCode::FAILURE;
        };
        let server = start_ours(&bin, &model, threads, sequences, context);
        ours = Some(rt.block_on(measure(&server, decode_runs, requests, tokens)));
    }
    let mut theirs = None;
    if only != "ours" {
        let installed = Command::new("python3").args(["-c", "import llama_cpp.server"]).output();
        if matches!(installed, Ok(o) if o.status.success()) {
            let server = start_llama(&model, threads, llama_ctx);
            theirs = Some(rt.block_on(measure(&server, decode_runs, requests, tokens)));
        } else {
            eprintln!(
                "llama_cpp.server is not installed (pip install 'llama-cpp-python[server]'): ours only"
            );
        }
    }

    let report = |name: &str, m: &Measured| {
        let peak = m.peak_bytes.map_or("?".into(), |b| format!("{:.1} MB", mb(b)));
        println!(
            "{name:>17}: batch 1 {:>6.1} tok/s ({:.0} tokens/answer) | {requests} at once {:>6.1} tok/s ({:.1} s) | peak RSS {peak}",
            m.decode_tps, m.decode_tokens, m.throughput_tps, m.throughput_secs
        );
    };
    let mut ok = true;
    if let Some(m) = &ours {
        report("sagert serve", m);
    }
    if let Some(m) = &theirs {
        report("llama_cpp.server", m);
    }
    if let (Some(o), Some(t)) = (&ours, &theirs) {
        let decode = o.decode_tps / t.decode_tps;
        let throughput = o.throughput_tps / t.throughput_tps;
        println!("batch-1 decode ratio: {decode:.2}x (target >= {DECODE_TARGET})");
        println!("throughput ratio:     {throughput:.2}x (target >= {THROUGHPUT_TARGET})");
        ok &= decode >= DECODE_TARGET && throughput >= THROUGHPUT_TARGET;
    }
    for (name, m) in [("sagert serve", &ours), ("llama_cpp.server", &theirs)] {
        if let Some(peak) = m.as_ref().and_then(|m| m.peak_bytes) {
            let within = (peak as f64) <= memory_target;
            println!(
                "peak memory {name}: {:.1} MB, {:.2}x the target of {:.1} MB (1.5 x model + 200 MB){}",
                mb(peak),
                peak as f64 / memory_target,
                memory_target / 1e6,
                if within { "" } else { ": OVER" }
            );
            if name == "sagert serve" {
                ok &= within;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
