//! The accept loop, one task per connection, and how each fault is put on the
//! wire.
//!
//! Shared state sits behind one `std::sync::Mutex` that is taken twice per
//! request (on arrival and after the answer is written) and never held across
//! an `.await`. Each connection keeps its own read and write buffers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::chat::{self, ChatRequest};
use crate::http::{self, HttpError, RequestHead, ResponseHead};
use crate::{Fault, LoggedRequest, MockConfig, MockStats};

pub(crate) const CHAT_PATH: &str = "/v1/chat/completions";
const MODELS_PATH: &str = "/v1/models";

/// State shared by the server handle and every connection task.
pub(crate) struct Shared {
    pub config: MockConfig,
    next_id: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
pub(crate) struct State {
    pub faults: VecDeque<Fault>,
    pub default_fault: Option<Fault>,
    pub stats: MockStats,
    pub log: Vec<LoggedRequest>,
}

impl Shared {
    pub(crate) fn new(config: MockConfig) -> Self {
        Shared { config, next_id: AtomicU64::new(1), state: Mutex::new(State::default()) }
    }

    /// The state; a panic elsewhere while it was held leaves counters that are
    /// still worth reading, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an arriving request and, when logging, records it. Returns its
    /// index in the log.
    fn arrive(&self, head: &RequestHead, buf: &[u8]) -> Option<usize> {
        if !self.config.log_requests {
            self.lock().stats.received += 1;
            return None;
        }
        let body = head.body(buf);
        // Parse outside the lock.
        let body = match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(_) if body.is_empty() => serde_json::Value::Null,
            Err(_) => serde_json::Value::String(String::from_utf8_lossy(body).into_owned()),
        };
        let entry = LoggedRequest {
            method: head.method(buf).to_owned(),
            path: head.path(buf).to_owned(),
            body,
            authorization: head.authorization(buf).map(str::to_owned),
            status: None,
            fault: None,
            completed: false,
        };
        let mut state = self.lock();
        state.stats.received += 1;
        state.log.push(entry);
        Some(state.log.len() - 1)
    }

    /// Takes the next fault: the queue first, then the default.
    fn take_fault(&self, log_index: Option<usize>) -> Option<Fault> {
        let mut state = self.lock();
        let fault = state.faults.pop_front().or_else(|| state.default_fault.clone())?;
        *state.stats.by_fault.entry(fault.name()).or_default() += 1;
        if let Some(entry) = log_index.and_then(|index| state.log.get_mut(index)) {
            entry.fault = Some(fault.name());
        }
        Some(fault)
    }

    /// Records the status actually written and whether it was a full answer.
    fn finish(&self, log_index: Option<usize>, status: u16, completed: bool) {
        let mut state = self.lock();
        *state.stats.by_status.entry(status).or_default() += 1;
        if completed {
            state.stats.ok += 1;
        }
        if let Some(entry) = log_index.and_then(|index| state.log.get_mut(index)) {
            entry.status = Some(status);
            entry.completed = completed;
        }
    }
}

/// Accepts connections until the task is aborted; dropping the `JoinSet` then
/// aborts every connection task with it.
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                connections.spawn(serve_connection(stream, Arc::clone(&shared)));
            }
            // Out of file descriptors and the like: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
        while connections.try_join_next().is_some() {}
    }
}

/// What to do with a request once its answer is decided.
enum Action {
    /// Write `status` with the body in the connection's body buffer.
    Respond { status: u16, retry_after: Option<Duration>, completed: bool, truncate: bool },
    /// Close the socket without a byte.
    Close,
    /// Say nothing until the client goes away.
    Hang,
}

impl Action {
    fn respond(status: u16) -> Self {
        Action::Respond { status, retry_after: None, completed: false, truncate: false }
    }
}

/// Per-connection buffers, reused for every request on the connection.
struct Buffers {
    read: Vec<u8>,
    body: Vec<u8>,
    out: Vec<u8>,
}

async fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut buffers = Buffers {
        read: Vec::with_capacity(8 * 1024),
        body: Vec::with_capacity(2 * 1024),
        out: Vec::with_capacity(2 * 1024),
    };
    loop {
        let head = match http::read_head(&mut stream, &mut buffers.read).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(error) => return reject(&mut stream, &mut buffers, error).await,
        };
        if let Err(error) = http::read_body(&mut stream, &mut buffers.read, &head).await {
            return reject(&mut stream, &mut buffers, error).await;
        }
        let log_index = shared.arrive(&head, &buffers.read);
        buffers.body.clear();
        let action = decide(&shared, &head, &buffers.read, &mut buffers.body, log_index).await;
        let keep_open = match action {
            Action::Hang => {
                wait_for_eof(&mut stream).await;
                false
            }
            Action::Close => {
                let _ = stream.shutdown().await;
                false
            }
            Action::Respond { status, retry_after, completed, truncate } => {
                let close = !head.keep_alive || truncate;
                let response =
                    ResponseHead { status, content_length: buffers.body.len(), close, retry_after };
                buffers.out.clear();
                http::write_head(&mut buffers.out, &response);
                let sent = if truncate { buffers.body.len() / 2 } else { buffers.body.len() };
                buffers.out.extend_from_slice(&buffers.body[..sent]);
                let written = stream.write_all(&buffers.out).await.is_ok();
                shared.finish(log_index, status, completed && written);
                if close {
                    let _ = stream.shutdown().await;
                }
                written && !close
            }
        };
        if !keep_open {
            return;
        }
        buffers.read.drain(..head.request_len());
    }
}

/// Answers a request that could not be framed, then closes.
async fn reject(stream: &mut TcpStream, buffers: &mut Buffers, error: HttpError) {
    let Some((status, message)) = error.response() else { return };
    buffers.body.clear();
    chat::write_error(&mut buffers.body, "invalid_request_error", message, None);
    buffers.out.clear();
    let head = ResponseHead { status, content_length: buffers.body.len(), close: true, retry_after: None };
    http::write_head(&mut buffers.out, &head);
    buffers.out.extend_from_slice(&buffers.body);
    let _ = stream.write_all(&buffers.out).await;
    let _ = stream.shutdown().await;
}

/// Reads and discards until the peer closes or the task is aborted.
async fn wait_for_eof(stream: &mut TcpStream) {
    let mut scratch = [0u8; 1024];
    while matches!(stream.read(&mut scratch).await, Ok(n) if n > 0) {}
}

/// Routes a request and writes its answer body into `body`.
async fn decide(
    shared: &Shared,
    head: &RequestHead,
    buf: &[u8],
    body: &mut Vec<u8>,
    log_index: Option<usize>,
) -> Action {
    match (head.method(buf), head.path(buf)) {
        ("POST", CHAT_PATH) => chat(shared, head.body(buf), body, log_index).await,
        ("GET", MODELS_PATH) => {
            chat::write_models(body, &shared.config.model);
            Action::Respond { status: 200, retry_after: None, completed: true, truncate: false }
        }
        (method, path) => {
            let message = format!("no route for {method} {path}");
            chat::write_error(body, "invalid_request_error", &message, None);
            Action::respond(404)
        }
    }
}

/// A chat completion: the configured latency, then the next fault, if any,
/// decides what goes on the wire.
async fn chat(shared: &Shared, request: &[u8], body: &mut Vec<u8>, log_index: Option<usize>) -> Action {
    let request: Result<ChatRequest, _> = serde_json::from_slice(request);
    let fault = shared.take_fault(log_index);
    if !shared.config.latency.is_zero() {
        tokio::time::sleep(shared.config.latency).await;
    }
    let mut truncate = false;
    match fault {
        None => {}
        Some(Fault::Hang) => return Action::Hang,
        Some(Fault::CloseConnection) => return Action::Close,
        Some(Fault::RateLimited { retry_after }) => {
            let message = format!("Rate limit reached for {} (injected by sagert-mock)", shared.config.model);
            chat::write_error(body, "rate_limit_error", &message, None);
            return Action::Respond { status: 429, retry_after, completed: false, truncate: false };
        }
        Some(Fault::Unavailable { retry_after }) => {
            let message = "The server is overloaded or not ready yet (injected by sagert-mock)";
            chat::write_error(body, "server_error", message, None);
            return Action::Respond { status: 503, retry_after, completed: false, truncate: false };
        }
        Some(Fault::ServerError(status)) => {
            let message = "The server had an error while processing your request (injected by sagert-mock)";
            chat::write_error(body, "server_error", message, None);
            return Action::respond(status);
        }
        Some(Fault::BadRequest(message)) => {
            chat::write_error(body, "invalid_request_error", &message, None);
            return Action::respond(400);
        }
        Some(Fault::MalformedJson) => {
            body.extend_from_slice(chat::MALFORMED_BODY);
            return Action::respond(200);
        }
        Some(Fault::RejectResponseFormat) if request.as_ref().is_ok_and(ChatRequest::has_response_format) => {
            let message = "response_format json_schema is not supported";
            chat::write_error(body, "invalid_request_error", message, Some("response_format"));
            return Action::respond(400);
        }
        // Without a response_format there is nothing to reject.
        Some(Fault::RejectResponseFormat) => {}
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::TruncatedBody) => truncate = true,
    }
    let outcome = match request {
        Ok(request) => complete(shared, &request, body),
        Err(error) => Err(format!("invalid chat completion request: {error}")),
    };
    match outcome {
        Ok(()) => Action::Respond { status: 200, retry_after: None, completed: !truncate, truncate },
        Err(message) => {
            chat::write_error(body, "invalid_request_error", &message, None);
            Action::Respond { status: 400, retry_after: None, completed: false, truncate }
        }
    }
}

/// Writes the normal answer to `request`, or returns the message of a 400.
fn complete(shared: &Shared, request: &ChatRequest, body: &mut Vec<u8>) -> Result<(), String> {
    let answer = chat::answer(request, &shared.config.replies)?;
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    chat::write_completion(body, id, &shared.config.model, &answer);
    Ok(())
}
