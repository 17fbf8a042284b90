//! Load check for the mock: N keep-alive clients hammer an in-process server
//! (its own two-worker runtime) and the example prints requests per second and
//! the CPU the server's worker threads used (Linux only).
//!
//! `cargo run --release -p sagert-mock --example load -- [CONCURRENCY] [LATENCY_MS] [SECONDS]`
//! (defaults 256, 50, 5). With 256 clients and 50 ms latency the ceiling is
//! 256 / 0.05 = 5120 requests per second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sagert_mock::{spawn_blocking_server, MockConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|arg| arg.parse().expect("numeric argument")).collect();
    let concurrency = args.first().copied().unwrap_or(256);
    let latency = Duration::from_millis(args.get(1).copied().unwrap_or(50));
    let seconds = Duration::from_secs(args.get(2).copied().unwrap_or(5));

    let server = spawn_blocking_server(MockConfig { latency, log_requests: false, ..MockConfig::default() })
        .expect("start the mock");
    let addr = server.addr();
    let body = serde_json::json!({"model": "m", "messages": [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": "Write one sentence about the sea."},
    ]})
    .to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer sk-load\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let request: Arc<[u8]> = request.into_bytes().into();

    let runtime = tokio::runtime::Runtime::new().expect("client runtime");
    let done = Arc::new(AtomicU64::new(0));
    let cpu_before = server_cpu();
    let started = Instant::now();
    runtime.block_on(async {
        let clients: Vec<_> = (0..concurrency)
            .map(|_| {
                let (request, done) = (Arc::clone(&request), Arc::clone(&done));
                tokio::spawn(async move {
                    let mut stream = TcpStream::connect(addr).await.expect("connect");
                    stream.set_nodelay(true).expect("nodelay");
                    let mut buf = vec![0u8; 8192];
                    while started.elapsed() < seconds {
                        stream.write_all(&request).await.expect("write");
                        read_one_response(&mut stream, &mut buf).await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.expect("client task");
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let requests = done.load(Ordering::Relaxed);
    println!("{requests} requests in {elapsed:.2} s: {:.0} req/s", requests as f64 / elapsed);
    match (cpu_before, server_cpu()) {
        (Some(before), Some(after)) => {
            let cpu = after - before;
            println!("server worker CPU {cpu:.2} s = {:.0}% of one core", 100.0 * cpu / elapsed);
        }
        _ => println!("server CPU: not measured (needs /proc)"),
    }
    assert_eq!(server.stats().ok, requests, "every request answered 200");
}

/// Reads one response whose body length comes from its Content-Length header
/// (the load loop sends one request at a time, so nothing is left over).
async fn read_one_response(stream: &mut TcpStream, buf: &mut [u8]) {
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..]).await.expect("read");
        assert!(n > 0, "server closed the connection");
        filled += n;
        let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = std::str::from_utf8(&buf[..end]).expect("UTF-8 head");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .and_then(|value| value.trim().parse().ok())
            .expect("content-length");
        if filled >= end + 4 + length {
            return;
        }
    }
}

/// User plus system CPU seconds of the mock's worker threads, from /proc.
fn server_cpu() -> Option<f64> {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let name = std::fs::read_to_string(path.join("comm")).ok()?;
        if !name.starts_with("sagert-mock") {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).ok()?;
        // Fields after the parenthesised name: utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        ticks += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks as f64 / 100.0)
}
