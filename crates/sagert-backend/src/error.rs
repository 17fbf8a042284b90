use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What kind of failure a request ended in. Stored with every recorded failure.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "status")]
pub enum FailureKind {
    /// HTTP 429.
    RateLimited,
    /// HTTP 5xx.
    Server(u16),
    /// HTTP 4xx other than 429: the request itself is wrong.
    Client(u16),
    /// The connection could not be made or broke.
    Connect,
    /// No complete answer within the timeout.
    Timeout,
    /// The body ended before its announced length or before the JSON ended.
    TruncatedBody,
    /// A complete body that is not the expected JSON.
    MalformedResponse,
    /// Output that does not satisfy the requested schema, after repair.
    SchemaMismatch,
}

impl FailureKind {
    /// Whether trying the same request again (here or on another endpoint) may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            FailureKind::RateLimited
            | FailureKind::Server(_)
            | FailureKind::Connect
            | FailureKind::Timeout
            | FailureKind::TruncatedBody
            | FailureKind::MalformedResponse => true,
            FailureKind::Client(_) | FailureKind::SchemaMismatch => false,
        }
    }

    /// A short stable label, as stored and reported (`server_503`, `timeout`, ...).
    pub fn label(&self) -> String {
        match self {
            FailureKind::RateLimited => "rate_limited".into(),
            FailureKind::Server(s) => format!("server_{s}"),
            FailureKind::Client(s) => format!("client_{s}"),
            FailureKind::Connect => "connect".into(),
            FailureKind::Timeout => "timeout".into(),
            FailureKind::TruncatedBody => "truncated_body".into(),
            FailureKind::MalformedResponse => "malformed_response".into(),
            FailureKind::SchemaMismatch => "schema_mismatch".into(),
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::RateLimited => f.write_str("rate limited (HTTP 429)"),
            FailureKind::Server(s) => write!(f, "server error (HTTP {s})"),
            FailureKind::Client(s) => write!(f, "request rejected (HTTP {s})"),
            FailureKind::Connect => f.write_str("connection failed"),
            FailureKind::Timeout => f.write_str("timed out"),
            FailureKind::TruncatedBody => f.write_str("truncated response body"),
            FailureKind::MalformedResponse => f.write_str("malformed response"),
            FailureKind::SchemaMismatch => f.write_str("output does not match the schema"),
        }
    }
}

/// Why a backend call failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BackendError {
    /// A request that failed for good, after retries and failover.
    #[error("{endpoint}: {kind} after {attempts} attempt(s) in {elapsed:.1?}: {message}")]
    Request {
        /// The endpoint(s) tried, by name.
        endpoint: String,
        /// The last failure's kind.
        kind: FailureKind,
        /// How many attempts were made in all.
        attempts: u32,
        /// Time from the first attempt to giving up.
        elapsed: Duration,
        /// The last failure's detail (a server message, an I/O error).
        message: String,
    },
    /// Structured output that could not be parsed or repaired to fit the schema.
    #[error("structured output for schema `{schema}` is invalid after {repairs} repair round(s): {message}")]
    Structured {
        /// The schema's name.
        schema: String,
        /// Repair rounds tried.
        repairs: u32,
        /// What is wrong with the last output.
        message: String,
        /// The last raw output, for the failure record.
        raw: String,
    },
    /// A hard budget is spent; the run must stop cleanly.
    #[error("budget exhausted: {0}")]
    Budget(String),
    /// The backend cannot do what was asked.
    #[error("not supported by {backend}: {what}")]
    Unsupported {
        /// The backend's model id.
        backend: String,
        /// What was asked.
        what: String,
    },
    /// The request is invalid before anything is sent.
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl BackendError {
    /// The failure kind to record, where there is one.
    pub fn kind(&self) -> Option<FailureKind> {
        match self {
            BackendError::Request { kind, .. } => Some(kind.clone()),
            BackendError::Structured { .. } => Some(FailureKind::SchemaMismatch),
            _ => None,
        }
    }

    /// A short stable label for reports: the failure kind's, or the variant's.
    pub fn label(&self) -> String {
        match self {
            BackendError::Request { kind, .. } => kind.label(),
            BackendError::Structured { .. } => FailureKind::SchemaMismatch.label(),
            BackendError::Budget(_) => "budget".into(),
            BackendError::Unsupported { .. } => "unsupported".into(),
            BackendError::Invalid(_) => "invalid".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_error_says_what_how_often_how_long() {
        let e = BackendError::Request {
            endpoint: "local".into(),
            kind: FailureKind::Server(503),
            attempts: 4,
            elapsed: Duration::from_millis(2500),
            message: "overloaded".into(),
        };
        let s = e.to_string();
        assert!(
            s.contains("local") && s.contains("HTTP 503") && s.contains("4 attempt") && s.contains("2.5s"),
            "{s}"
        );
        assert_eq!(e.label(), "server_503");
        assert!(FailureKind::Timeout.is_retryable());
        assert!(!FailureKind::Client(400).is_retryable());
    }
}
