//! Streamed answers: Server-Sent Events as OpenAI writes them.
//!
//! The generation future is owned by the response body, not spawned: when the
//! client goes away, hyper drops the body, the body drops the future, the future
//! drops the engine's reply channel, and the engine frees the sequences at its
//! next step.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use sagert_backend::{BackendError, ChatRequest, ChatResponse};
use sagert_llama::{LlamaBackend, TextDelta};
use serde_json::{json, Value};
use tokio::sync::mpsc::{self, UnboundedReceiver};

use crate::error::ApiError;
use crate::wire;

type Answer = Pin<Box<dyn Future<Output = Result<ChatResponse, BackendError>> + Send>>;

/// What a running generation produces next.
enum Event {
    Delta(TextDelta),
    Done(Result<ChatResponse, BackendError>),
}

/// A streaming generation: its text deltas and, at the end, its response.
struct Generation {
    deltas: UnboundedReceiver<TextDelta>,
    answer: Option<Answer>,
    /// Deltas still queued when the answer came.
    rest: VecDeque<TextDelta>,
    done: Option<Result<ChatResponse, BackendError>>,
}

impl Generation {
    fn start(backend: Arc<LlamaBackend>, request: ChatRequest) -> Self {
        let (tx, deltas) = mpsc::unbounded_channel();
        let answer: Answer = Box::pin(async move { backend.chat_streaming(&request, tx).await });
        Generation { deltas, answer: Some(answer), rest: VecDeque::new(), done: None }
    }

    /// The next event; `None` after `Done`.
    async fn next(&mut self) -> Option<Event> {
        poll_fn(|cx| {
            if let Some(d) = self.rest.pop_front() {
                return Poll::Ready(Some(Event::Delta(d)));
            }
            if let Some(done) = self.done.take() {
                return Poll::Ready(Some(Event::Done(done)));
            }
            let Some(answer) = self.answer.as_mut() else { return Poll::Ready(None) };
            if let Poll::Ready(Some(d)) = self.deltas.poll_recv(cx) {
                return Poll::Ready(Some(Event::Delta(d)));
            }
            match answer.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(result) => {
                    self.answer = None;
                    // The engine sends every delta before its reply; the sender
                    // itself may outlive the reply, so drain without waiting.
                    while let Ok(d) = self.deltas.try_recv() {
                        self.rest.push_back(d);
                    }
                    match self.rest.pop_front() {
                        Some(d) => {
                            self.done = Some(result);
                            Poll::Ready(Some(Event::Delta(d)))
                        }
                        None => Poll::Ready(Some(Event::Done(result))),
                    }
                }
            }
        })
        .await
    }
}

/// What every chunk of one answer shares.
struct Chunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl Chunks {
    fn chunk(&self, choices: Value) -> Bytes {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        event(&chunk)
    }

    fn role(&self, index: usize) -> Bytes {
        self.chunk(json!([{
            "index": index,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": null,
            "finish_reason": null,
        }]))
    }

    fn delta(&self, d: &TextDelta) -> Bytes {
        self.chunk(json!([{
            "index": d.choice,
            "delta": {"content": d.text},
            "logprobs": null,
            "finish_reason": null,
        }]))
    }

    /// The finish chunks, the usage chunk if asked for, and `[DONE]`; or an
    /// error event.
    fn end(&self, done: Result<ChatResponse, BackendError>, out: &mut VecDeque<Bytes>) {
        let response = match done {
            Ok(r) => r,
            Err(e) => {
                out.push_back(event(&ApiError::from_backend(&e).body()));
                return;
            }
        };
        for (index, c) in response.choices.iter().enumerate() {
            out.push_back(self.chunk(json!([{
                "index": index,
                "delta": {},
                "logprobs": null,
                "finish_reason": wire::finish_reason(&c.finish_reason),
            }])));
        }
        if self.include_usage {
            out.push_back(event(&json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": wire::usage(&response.usage),
            })));
        }
        out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    }
}

fn event(value: &Value) -> Bytes {
    let mut s = String::with_capacity(256);
    s.push_str("data: ");
    s.push_str(&value.to_string());
    s.push_str("\n\n");
    Bytes::from(s)
}

/// Answer `request` as an event stream. The generation runs until its first
/// delta (or its end) before the response starts, so that a request the
/// backend refuses gets an HTTP error status rather than an error event.
pub(crate) async fn respond(
    backend: Arc<LlamaBackend>,
    model: String,
    request: ChatRequest,
    include_usage: bool,
) -> Response {
    let n = request.params.n as usize;
    let mut generation = Generation::start(backend, request);
    let first = generation.next().await;
    if let Some(Event::Done(Err(e))) = &first {
        return ApiError::from_backend(e).into_response();
    }
    let chunks = Chunks { id: wire::completion_id(), created: wire::unix_now(), model, include_usage };
    let mut queued: VecDeque<Bytes> = (0..n).map(|i| chunks.role(i)).collect();
    let mut finished = false;
    match first {
        Some(Event::Delta(d)) => queued.push_back(chunks.delta(&d)),
        Some(Event::Done(done)) => {
            chunks.end(done, &mut queued);
            finished = true;
        }
        None => finished = true,
    }
    let state = (generation, chunks, queued, finished);
    let body = futures_util::stream::unfold(
        state,
        |(mut generation, chunks, mut queued, mut finished)| async move {
            loop {
                if let Some(bytes) = queued.pop_front() {
                    return Some((Ok::<_, Infallible>(bytes), (generation, chunks, queued, finished)));
                }
                if finished {
                    return None;
                }
                match generation.next().await {
                    Some(Event::Delta(d)) => queued.push_back(chunks.delta(&d)),
                    Some(Event::Done(done)) => {
                        chunks.end(done, &mut queued);
                        finished = true;
                    }
                    None => finished = true,
                }
            }
        },
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")],
        Body::from_stream(body),
    )
        .into_response()
}
