//! An OpenAI-compatible HTTP server over sagert's embedded engine.
//!
//! [`serve`] answers on a TCP listener for one or more loaded
//! [`sagert_llama::LlamaBackend`]s, each under a model id:
//!
//! - `POST /v1/chat/completions`: the OpenAI chat-completions request (model,
//!   messages with string or text-part content, temperature, top_p, max_tokens /
//!   max_completion_tokens, n, seed, stop, stream with
//!   `stream_options.include_usage`, and `response_format` text / json_object /
//!   json_schema, which the engine enforces by constrained decoding). Fields we
//!   recognise but do not implement (tools, logprobs, logit_bias, non-zero
//!   penalties, ...) are refused with a 400 naming the field; unknown fields are
//!   ignored. Streamed answers are Server-Sent Events as OpenAI writes them: a
//!   role chunk per choice, content deltas, a finish chunk per choice, an
//!   optional usage chunk, then `data: [DONE]`. A client that disconnects
//!   cancels its generation (see `stream.rs`).
//! - `GET /v1/models`, `GET /v1/models/{id}`: the served ids in OpenAI's list format.
//! - `GET /health`: `{"status": "ok", ...}` with the engines' counters.
//!
//! Errors are OpenAI's body `{"error": {"message", "type", "param", "code"}}`:
//! 400 for a request that is wrong (malformed JSON names the path of the first
//! problem), 404 for an unknown model or path, 413 for a body over
//! [`BODY_LIMIT`], 500 when the engine fails.
//!
//! The server is axum on hyper (HTTP/1.1). The `sagert serve` command
//! (`crates/sagert/src/cmd/serve.rs`) loads models and calls [`serve`]; the
//! client side of the same wire format is `sagert-openai`, which the tests run
//! against this server.

mod error;
mod stream;
mod wire;

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sagert_backend::ChatBackend;
use sagert_llama::LlamaBackend;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use error::ApiError;
pub use error::ServeError;

/// The largest request body accepted, in bytes (8 MiB).
pub const BODY_LIMIT: usize = 8 << 20;

struct Served {
    models: Vec<(String, Arc<LlamaBackend>)>,
    created: u64,
}

impl Served {
    fn find(&self, id: &str) -> Result<&Arc<LlamaBackend>, ApiError> {
        self.models.iter().find(|(m, _)| m == id).map(|(_, b)| b).ok_or_else(|| {
            ApiError::unknown_model(id, &self.models.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>())
        })
    }

    fn model_object(&self, id: &str) -> Value {
        json!({"id": id, "object": "model", "created": self.created, "owned_by": "sagert"})
    }
}

type AppState = State<Arc<Served>>;

/// The server's routes over `models` (model id, engine), for [`serve`] or a test
/// harness. Ids must be unique and there must be at least one.
pub fn router(models: Vec<(String, Arc<LlamaBackend>)>) -> Result<Router, ServeError> {
    if models.is_empty() {
        return Err(ServeError::NoModels);
    }
    for (i, (id, _)) in models.iter().enumerate() {
        if models[..i].iter().any(|(other, _)| other == id) {
            return Err(ServeError::DuplicateModel(id.clone()));
        }
    }
    let served = Arc::new(Served { models, created: wire::unix_now() });
    Ok(Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(served))
}

/// Serve `models` on `listener` until `shutdown` completes; then stop taking
/// connections and return once the requests in flight are answered.
pub async fn serve(
    listener: TcpListener,
    models: Vec<(String, Arc<LlamaBackend>)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    use axum::serve::ListenerExt;

    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    let app = router(models)?;
    // Streamed chunks are small writes: send each at once.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServeError::Io { addr, source })
}

async fn chat_completions(State(served): AppState, body: Body) -> Response {
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            let message = format!("{e:#}");
            let over = std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit"))
                || message.contains("length limit");
            return if over {
                ApiError::too_large(BODY_LIMIT).into_response()
            } else {
                ApiError::invalid(format!("cannot read the request body: {message}"), None).into_response()
            };
        }
    };
    let parsed = match wire::parse(&bytes) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let backend = match served.find(&parsed.model) {
        Ok(b) => b.clone(),
        Err(e) => return e.into_response(),
    };
    let request = match parsed.to_chat_request() {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if parsed.streamed() {
        let include_usage = parsed.include_usage();
        return stream::respond(backend, parsed.model, request, include_usage).await;
    }
    match backend.chat(&request).await {
        Ok(response) => {
            let body = wire::completion(&wire::completion_id(), wire::unix_now(), &parsed.model, &response);
            json_response(StatusCode::OK, &body)
        }
        Err(e) => ApiError::from_backend(&e).into_response(),
    }
}

async fn list_models(State(served): AppState) -> Response {
    let data: Vec<Value> = served.models.iter().map(|(id, _)| served.model_object(id)).collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

async fn get_model(State(served): AppState, Path(id): Path<String>) -> Response {
    match served.find(&id) {
        Ok(_) => json_response(StatusCode::OK, &served.model_object(&id)),
        Err(e) => e.into_response(),
    }
}

async fn health(State(served): AppState) -> Response {
    let models: Vec<Value> = served
        .models
        .iter()
        .map(|(id, b)| {
            let s = b.stats();
            json!({
                "id": id,
                "max_sequences": b.options().max_sequences,
                "tokens_generated": s.tokens_generated,
                "prompt_tokens": s.prompt_tokens,
                "decode_steps": s.decode_steps,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({"status": "ok", "models": models}))
}

async fn not_found(method: Method, uri: Uri) -> Response {
    ApiError::not_found(method.as_str(), uri.path()).into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let mut e = ApiError::not_found(method.as_str(), uri.path());
    e.status = StatusCode::METHOD_NOT_ALLOWED;
    e.code = Some("method_not_allowed");
    e.into_response()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
