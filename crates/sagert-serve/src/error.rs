//! The crate's error type, and the OpenAI-style error bodies the server answers with.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use sagert_backend::{BackendError, FailureKind};
use serde_json::json;

/// Why the server could not be set up or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No model to serve.
    #[error("no model to serve")]
    NoModels,
    /// Two models with one id.
    #[error("two models are served as `{0}`; model ids must be unique")]
    DuplicateModel(String),
    /// The listener failed.
    #[error("serving on {addr} failed: {source}")]
    Io {
        /// The address being served.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// An error answer: an HTTP status and the OpenAI error body
/// `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 for a request that is wrong in itself.
    pub(crate) fn invalid(message: impl Into<String>, param: Option<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    /// A 404 for a model this server does not serve.
    pub(crate) fn unknown_model(model: &str, served: &[String]) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("The model `{model}` does not exist; this server serves {}", served.join(", ")),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        }
    }

    /// A 404 for a path this server does not have.
    pub(crate) fn not_found(method: &str, path: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "no route {method} {path}; this server has POST /v1/chat/completions, GET /v1/models and GET /health"
            ),
            kind: "invalid_request_error",
            param: None,
            code: Some("unknown_url"),
        }
    }

    /// A 413 for a body over the limit.
    pub(crate) fn too_large(limit: usize) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("the request body is larger than {limit} bytes"),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_too_large"),
        }
    }

    /// The answer for a failed backend call.
    pub(crate) fn from_backend(e: &BackendError) -> Self {
        let (status, kind) = match e {
            BackendError::Invalid(_) | BackendError::Unsupported { .. } => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            BackendError::Budget(_) => (StatusCode::SERVICE_UNAVAILABLE, "server_error"),
            BackendError::Structured { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
            BackendError::Request { kind, .. } => match kind {
                FailureKind::Client(s) => {
                    (StatusCode::from_u16(*s).unwrap_or(StatusCode::BAD_REQUEST), "invalid_request_error")
                }
                FailureKind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
                FailureKind::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "server_error"),
                FailureKind::Server(s) => {
                    (StatusCode::from_u16(*s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "server_error")
                }
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
            },
        };
        ApiError { status, message: e.to_string(), kind, param: None, code: None }
    }

    /// The error body.
    pub(crate) fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        (self.status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn backend_errors_map_to_statuses() {
        let status = |e: BackendError| ApiError::from_backend(&e).status;
        assert_eq!(status(BackendError::Invalid("prompt too long".into())), StatusCode::BAD_REQUEST);
        let engine = BackendError::Request {
            endpoint: "llama.cpp:m".into(),
            kind: FailureKind::Server(500),
            attempts: 1,
            elapsed: Duration::ZERO,
            message: "decode failed".into(),
        };
        assert_eq!(status(engine), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status(BackendError::Budget("x".into())), StatusCode::SERVICE_UNAVAILABLE);
        let body = ApiError::unknown_model("gpt-4", &["smol".into()]).body();
        assert_eq!(body["error"]["code"], "model_not_found");
        assert_eq!(body["error"]["param"], "model");
        assert!(body["error"]["message"].as_str().unwrap().contains("gpt-4"));
    }
}
