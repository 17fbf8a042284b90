//! Client-side throughput and CPU cost of `OpenAiBackend`.
//!
//! Starts `sagert-mock` as a separate process (so that only the client's CPU is
//! counted here), answers every request after a fixed latency, and drives it with a
//! fixed number of concurrent callers. With latency `L` and `C` callers the ideal
//! rate is `C / L`; the bench prints the rate achieved, the ratio to the ideal, and
//! the CPU time this process spent per call.
//!
//! Run with `scripts/bench-http`, or:
//!
//! ```text
//! cargo build --release -p sagert-mock
//! cargo bench -p sagert-openai --bench http_throughput
//! ```
//!
//! Environment: `SAGERT_MOCK_BIN` (the mock binary; default: `sagert-mock` beside
//! the bench's target directory), `SAGERT_BENCH_REQUESTS` (20480: 80 full rounds of
//! 256, so that a last partial round does not count against the ratio),
//! `SAGERT_BENCH_CONCURRENCY` (256), `SAGERT_BENCH_LATENCY_MS` (50),
//! `SAGERT_BENCH_WORKERS` (tokio worker threads; default: one per core),
//! `SAGERT_BENCH_MOCK_THREADS` (the mock's worker threads; default: its own).
//!
//! Targets: ratio >= 0.95 and <= 50 µs of client CPU per call.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sagert_backend::{ChatBackend, ChatMessage, ChatRequest};
use sagert_openai::{EndpointSettings, OpenAiBackend, RetryPolicy};

const TARGET_RATIO: f64 = 0.95;
const TARGET_CPU_US: f64 = 50.0;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// The mock binary: `$SAGERT_MOCK_BIN`, or `sagert-mock` in a directory above this
/// executable (`target/release/deps/http_throughput-*` → `target/release/sagert-mock`).
fn mock_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SAGERT_MOCK_BIN") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors().skip(1).map(|dir| dir.join("sagert-mock")).find(|candidate| candidate.is_file())
}

/// Kills the mock when the bench ends, however it ends.
struct MockProcess(Child);

impl Drop for MockProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_mock(binary: &PathBuf, latency_ms: u64, threads: u64) -> Result<(MockProcess, String), String> {
    let mut command = Command::new(binary);
    command.args(["--port", "0", "--latency-ms", &latency_ms.to_string()]);
    if threads > 0 {
        command.args(["--threads", &threads.to_string()]);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let process = MockProcess(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).map_err(|e| format!("cannot read the mock's output: {e}"))?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("unexpected first line from the mock: {line:?}"))?
        .to_string();
    Ok((process, url))
}

/// CPU time (user + system) of this whole process so far, from `/proc/self/stat`.
fn process_cpu_time(ticks_per_second: f64) -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after `) `.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / ticks_per_second))
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Send `total` requests with `concurrency` callers; returns the failures.
async fn drive(backend: &Arc<OpenAiBackend>, total: usize, concurrency: usize) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (backend, next, failures) = (Arc::clone(backend), Arc::clone(&next), Arc::clone(&failures));
            tokio::spawn(async move {
                let request = ChatRequest::new(vec![
                    ChatMessage::system("You write short test answers."),
                    ChatMessage::user("Say something about throughput."),
                ]);
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    if backend.chat(&request).await.is_err() {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("a caller panicked");
    }
    failures.load(Ordering::Relaxed)
}

fn main() -> ExitCode {
    let requests = env_number("SAGERT_BENCH_REQUESTS", 20_480) as usize;
    let concurrency = env_number("SAGERT_BENCH_CONCURRENCY", 256) as usize;
    let latency_ms = env_number("SAGERT_BENCH_LATENCY_MS", 50);
    let workers = env_number("SAGERT_BENCH_WORKERS", 0) as usize;
    let mock_threads = env_number("SAGERT_BENCH_MOCK_THREADS", 0);

    let Some(binary) = mock_binary().filter(|p| p.is_file()) else {
        eprintln!("http_throughput: the sagert-mock binary was not found.");
        eprintln!("Build it first:   cargo build --release -p sagert-mock");
        eprintln!("or point to it:   SAGERT_MOCK_BIN=/path/to/sagert-mock");
        eprintln!("(scripts/bench-http does both steps.)");
        return ExitCode::from(2);
    };
    let (_mock, base_url) = match start_mock(&binary, latency_ms, mock_threads) {
        Ok(started) => started,
        Err(e) => {
            eprintln!("http_throughput: {e}");
            return ExitCode::from(2);
        }
    };

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        runtime.worker_threads(workers);
    }
    let runtime = runtime.enable_all().build().expect("a tokio runtime");

    let mut settings = EndpointSettings::new("mock", base_url.clone());
    settings.concurrency = concurrency;
    settings.timeout = Duration::from_secs(30);
    let retry = RetryPolicy { max_retries: 0, ..RetryPolicy::default() };
    let backend = Arc::new(OpenAiBackend::new("bench-model", vec![settings], retry).expect("valid settings"));

    let ticks = clock_ticks_per_second();
    let (elapsed, cpu, failures) = runtime.block_on(async {
        // Warm up: open the connections and let the allocator settle.
        drive(&backend, (concurrency * 8).min(requests), concurrency).await;
        let cpu_before = process_cpu_time(ticks);
        let start = Instant::now();
        let failures = drive(&backend, requests, concurrency).await;
        let elapsed = start.elapsed();
        let cpu = cpu_before.zip(process_cpu_time(ticks)).map(|(before, after)| after - before);
        (elapsed, cpu, failures)
    });

    let achieved = requests as f64 / elapsed.as_secs_f64();
    let ideal = concurrency as f64 / (latency_ms as f64 / 1000.0);
    let ratio = achieved / ideal;
    let verdict = |ok: bool| if ok { "target met" } else { "target MISSED" };
    println!("http_throughput: {requests} requests, {concurrency} concurrent callers, mock latency {latency_ms} ms");
    println!("  mock                 {base_url} ({})", binary.display());
    println!("  wall time            {:.2} s, {failures} failed", elapsed.as_secs_f64());
    println!("  achieved             {achieved:.0} req/s");
    println!("  ideal                {ideal:.0} req/s");
    println!("  ratio                {ratio:.3} ({}: >= {TARGET_RATIO})", verdict(ratio >= TARGET_RATIO));
    match cpu {
        Some(cpu) => {
            let per_call = cpu.as_secs_f64() * 1e6 / requests as f64;
            println!(
                "  client CPU           {per_call:.1} µs/call, {:.2} s in all ({}: <= {TARGET_CPU_US} µs)",
                cpu.as_secs_f64(),
                verdict(per_call <= TARGET_CPU_US)
            );
        }
        None => println!("  client CPU           unavailable (no /proc/self/stat)"),
    }
    if failures > 0 {
        eprintln!("http_throughput: {failures} calls failed; the figures above are not meaningful");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
