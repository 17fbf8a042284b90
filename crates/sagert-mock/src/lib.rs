//! A fault-injecting mock OpenAI-compatible server for tests and benchmarks,
//! bound to loopback only.
//!
//! [`MockServer`] answers `POST /v1/chat/completions` and `GET /v1/models`
//! with OpenAI-shaped JSON, after a configurable latency. The answer text is
//! the first [`Reply`] whose `when_contains` occurs in the last user message,
//! otherwise `echo: <last user message>` (or `{"echo":"<last user message>"}`
//! when the request asks for a `json_schema` response format). Token usage
//! counts whitespace-separated words: prompt tokens are the words of every
//! message plus 4 per message, completion tokens the words of the answer times
//! `n`; `max_tokens` (or `max_completion_tokens`) cuts the answer to that many
//! words with `finish_reason: "length"`.
//!
//! Tests queue [`Fault`]s with [`MockServer::push_faults`] (one per chat
//! request, in order) or make every request fail with
//! [`MockServer::set_default_fault`], then check what the client did through
//! [`MockServer::stats`], [`MockServer::request_log`] and
//! [`MockServer::completed_bodies`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use sagert_mock::{Fault, MockConfig, MockServer, Reply};
//!
//! let config = MockConfig { replies: vec![Reply::new("capital", "Paris")], ..MockConfig::default() };
//! let server = MockServer::start(config).await?;
//! server.push_faults([Fault::RateLimited { retry_after: Some(Duration::from_millis(100)) }, Fault::Hang]);
//! // Point the client under test at `server.base_url()`, run it, then:
//! assert_eq!(server.stats().received, 0);
//! assert!(server.base_url().starts_with("http://127.0.0.1:"));
//! # Ok(())
//! # }
//! ```
//!
//! The HTTP/1.1 server is written directly on tokio's `TcpListener` rather
//! than on hyper, because faults need raw control of the wire: a
//! `Content-Length` larger than the body, a socket closed without a response.
//! It supports keep-alive and `Content-Length` bodies, not chunked requests or
//! streaming responses.
//!
//! `sagert-openai` is the client this server exercises; the `sagert` CLI's
//! integration tests run against [`spawn_blocking_server`], and the
//! `sagert-mock` binary serves the same thing for benchmarks.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Deref;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use tokio::net::TcpSocket;
use tokio::task::JoinHandle;

mod chat;
pub use chat::{prompt_hash, PROMPT_HASH};
mod http;
mod server;

use server::Shared;

/// Pending connections the kernel may queue (it caps this at `somaxconn`).
const LISTEN_BACKLOG: u32 = 1024;

/// How a [`MockServer`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockConfig {
    /// Added before every chat-completions answer (and before every fault).
    pub latency: Duration,
    /// Canned answers, tried in order against the last user message.
    pub replies: Vec<Reply>,
    /// The `model` field of every answer and the one entry of `/v1/models`.
    pub model: String,
    /// Keep every request (body, Authorization header, outcome) for
    /// [`MockServer::request_log`] and [`MockServer::completed_bodies`]. Turn
    /// off in benchmarks: the log grows without bound. Stats are kept either way.
    pub log_requests: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            latency: Duration::ZERO,
            replies: Vec::new(),
            model: "mock-model".into(),
            log_requests: true,
        }
    }
}

/// A canned answer: `content` answers any request whose last user message
/// contains `when_contains` (an empty `when_contains` matches everything).
/// Each `{prompt_hash}` in `content` becomes eight hex digits hashed from the
/// last user message ([`prompt_hash`]), so one reply can answer many prompts
/// with distinct, reproducible texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub when_contains: String,
    pub content: String,
}

impl Reply {
    pub fn new(when_contains: impl Into<String>, content: impl Into<String>) -> Self {
        Reply { when_contains: when_contains.into(), content: content.into() }
    }
}

/// A failure injected into one chat-completions request. The configured
/// latency comes first in every case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 with an OpenAI `rate_limit_error` body; with `Some`, `Retry-After:
    /// <seconds, rounded up>` and `retry-after-ms: <milliseconds>` headers.
    RateLimited { retry_after: Option<Duration> },
    /// 503 with a `server_error` body and the same optional retry headers.
    Unavailable { retry_after: Option<Duration> },
    /// This status (500, 502, ...) with a `server_error` JSON body.
    ServerError(u16),
    /// Reads the request and never answers, until the client disconnects or
    /// the server is dropped.
    Hang,
    /// Answers normally after this extra delay.
    Delay(Duration),
    /// 200 announcing the full Content-Length, sends half the body, closes.
    TruncatedBody,
    /// 200 with a complete body (correct Content-Length) that is not JSON.
    MalformedJson,
    /// 400 with `{"error":{"message":..,"type":"invalid_request_error"}}`.
    BadRequest(String),
    /// 400 "response_format json_schema is not supported" if the request has
    /// a `response_format`; otherwise a normal answer.
    RejectResponseFormat,
    /// Closes the socket without any response.
    CloseConnection,
}

impl Fault {
    /// The fault's key in [`MockStats::by_fault`] and [`LoggedRequest::fault`].
    pub fn name(&self) -> &'static str {
        match self {
            Fault::RateLimited { .. } => "rate_limited",
            Fault::Unavailable { .. } => "unavailable",
            Fault::ServerError(_) => "server_error",
            Fault::Hang => "hang",
            Fault::Delay(_) => "delay",
            Fault::TruncatedBody => "truncated_body",
            Fault::MalformedJson => "malformed_json",
            Fault::BadRequest(_) => "bad_request",
            Fault::RejectResponseFormat => "reject_response_format",
            Fault::CloseConnection => "close_connection",
        }
    }
}

/// Counters since the server started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MockStats {
    /// Requests read in full, on any route.
    pub received: u64,
    /// Requests answered 200 with a complete, valid body.
    pub ok: u64,
    /// Responses written, by status (Hang and CloseConnection write none).
    pub by_status: BTreeMap<u16, u64>,
    /// Faults taken from the queue or the default, by [`Fault::name`].
    pub by_fault: BTreeMap<&'static str, u64>,
}

impl MockStats {
    /// Responses written with `status`.
    pub fn status(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// Times the fault named `name` was applied.
    pub fn fault(&self, name: &str) -> u64 {
        self.by_fault.get(name).copied().unwrap_or(0)
    }
}

/// One request as the server saw it (kept when [`MockConfig::log_requests`]).
#[derive(Clone, PartialEq)]
pub struct LoggedRequest {
    pub method: String,
    /// The path without its query string.
    pub path: String,
    /// The body as JSON; a string holding the raw text when it is not JSON;
    /// `null` when empty.
    pub body: serde_json::Value,
    /// The `Authorization` header as sent (masked in `Debug`).
    pub authorization: Option<String>,
    /// The status written; `None` while in flight and for Hang and CloseConnection.
    pub status: Option<u16>,
    /// The fault applied, by [`Fault::name`].
    pub fault: Option<&'static str>,
    /// Answered 200 with a complete, valid body.
    pub completed: bool,
}

impl std::fmt::Debug for LoggedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggedRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("body", &self.body)
            .field("authorization", &self.authorization.as_ref().map(|_| "****"))
            .field("status", &self.status)
            .field("fault", &self.fault)
            .field("completed", &self.completed)
            .finish()
    }
}

/// A running mock server; it stops serving (listener and every connection)
/// when dropped.
pub struct MockServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl MockServer {
    /// Starts a server on `127.0.0.1` and a free port. Must be called inside a
    /// tokio runtime, which then runs the server: a test that blocks its own
    /// thread (std sockets, waiting on a child process) wants
    /// [`spawn_blocking_server`] instead.
    pub async fn start(config: MockConfig) -> io::Result<MockServer> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Starts a server on `addr`, which must be a loopback address: the mock
    /// has no authentication and is never to be reachable from elsewhere.
    pub async fn start_on(addr: SocketAddr, config: MockConfig) -> io::Result<MockServer> {
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("sagert-mock binds loopback addresses only, not {addr}"),
            ));
        }
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        // tokio's default backlog of 128 drops SYNs when a benchmark opens
        // hundreds of connections at once, and each drop costs a 1 s retransmit.
        let listener = socket.listen(LISTEN_BACKLOG)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let accept = tokio::spawn(server::accept_loop(listener, Arc::clone(&shared)));
        Ok(MockServer { shared, addr, accept })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues faults for the next chat requests, one per request, in order.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.lock().faults.extend(faults);
    }

    /// The fault for every chat request while the queue is empty (an endpoint
    /// that is down); `None` restores normal answers.
    pub fn set_default_fault(&self, fault: Option<Fault>) {
        self.shared.lock().default_fault = fault;
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MockStats {
        self.shared.lock().stats.clone()
    }

    /// Every request in arrival order (empty when logging is off).
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.lock().log.clone()
    }

    /// Bodies of the chat requests answered 200 with a complete, valid body,
    /// in arrival order (empty when logging is off).
    pub fn completed_bodies(&self) -> Vec<serde_json::Value> {
        let state = self.shared.lock();
        let completed = state.log.iter().filter(|entry| entry.completed && entry.path == server::CHAT_PATH);
        completed.map(|entry| entry.body.clone()).collect()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// A [`MockServer`] on its own tokio runtime in its own thread, for
/// synchronous tests; it derefs to the server. Dropping it stops the server
/// and joins the thread.
#[derive(Debug)]
pub struct MockServerThread {
    server: Option<MockServer>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// Starts a [`MockServer`] on `127.0.0.1` in a new thread with a two-worker
/// tokio runtime; callable from any thread, async or not.
pub fn spawn_blocking_server(config: MockConfig) -> io::Result<MockServerThread> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let thread = thread::Builder::new().name("sagert-mock".into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sagert-mock-worker")
            .enable_all()
            .build();
        let runtime = match runtime {
            Ok(runtime) => runtime,
            Err(error) => return drop(ready_tx.send(Err(error))),
        };
        let started = runtime.block_on(MockServer::start(config));
        if ready_tx.send(started).is_ok() {
            // Returns once the handle drops its sender.
            let _ = stop_rx.recv();
        }
        // Dropping the runtime here ends every task that is left.
    })?;
    let started = ready_rx.recv().map_err(|_| io::Error::other("sagert-mock thread exited before starting"));
    match started.and_then(|started| started) {
        Ok(server) => {
            Ok(MockServerThread { server: Some(server), stop: Some(stop_tx), thread: Some(thread) })
        }
        Err(error) => {
            let _ = thread.join();
            Err(error)
        }
    }
}

impl Deref for MockServerThread {
    type Target = MockServer;

    fn deref(&self) -> &MockServer {
        self.server.as_ref().expect("the server lives until the handle drops")
    }
}

impl Drop for MockServerThread {
    fn drop(&mut self) {
        drop(self.server.take());
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
