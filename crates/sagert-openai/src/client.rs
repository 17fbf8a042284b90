//! One HTTP attempt: send a body to an endpoint and classify what comes back.

use std::error::Error as _;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use sagert_backend::FailureKind;

use crate::endpoint::Endpoint;
use crate::settings::MAX_RETRY_AFTER;
use crate::wire::{self, BodyProblem, ParsedResponse};

/// Why one attempt failed.
#[derive(Debug)]
pub(crate) struct AttemptError {
    pub kind: FailureKind,
    /// The server's message or the transport error, key scrubbed, cut to length.
    pub message: String,
    /// The server's `Retry-After`, on 429 and 5xx answers.
    pub retry_after: Option<Duration>,
    /// A 2xx status was seen: the server probably did (and billed) the work.
    pub success_status: bool,
    /// A 400/422 that names `response_format` / JSON schema as the problem, or a
    /// 500 that names `response_format`.
    pub rejects_response_format: bool,
}

impl AttemptError {
    fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        AttemptError {
            kind,
            message: message.into(),
            retry_after: None,
            success_status: false,
            rejects_response_format: false,
        }
    }
}

/// POST `body` to the endpoint's chat-completions URL, within its per-attempt
/// timeout (connecting, sending and reading the whole body).
pub(crate) async fn send(endpoint: &Endpoint, body: Vec<u8>) -> Result<ParsedResponse, AttemptError> {
    let mut success_status = false;
    let result =
        match tokio::time::timeout(endpoint.timeout, exchange(endpoint, body, &mut success_status)).await {
            Ok(result) => result,
            Err(_) => Err(AttemptError::new(
                FailureKind::Timeout,
                format!("no complete response within {:?}", endpoint.timeout),
            )),
        };
    result.map_err(|mut e| {
        e.success_status |= success_status;
        e.message = endpoint.scrub(e.message);
        e
    })
}

async fn exchange(
    endpoint: &Endpoint,
    body: Vec<u8>,
    success_status: &mut bool,
) -> Result<ParsedResponse, AttemptError> {
    let mut request = endpoint.client.post(endpoint.url.clone()).header(CONTENT_TYPE, "application/json");
    if let Some(authorization) = &endpoint.authorization {
        request = request.header(AUTHORIZATION, authorization.clone());
    }
    let response = request.body(body).send().await.map_err(transport_error)?;
    let status = response.status();
    *success_status = status.is_success();
    let retry_after = retry_after(response.headers());
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        // An error status says what went wrong even if its body is cut.
        Err(_) if !status.is_success() => Default::default(),
        Err(e) => return Err(transport_error(e)),
    };
    classify(status, &bytes, retry_after)
}

/// The server's requested delay: `retry-after-ms` (OpenAI's, in milliseconds) when
/// present, else `Retry-After` (seconds or an HTTP-date).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0).min(MAX_RETRY_AFTER));
        }
    }
    header(RETRY_AFTER.as_str()).and_then(|v| wire::parse_retry_after(v, SystemTime::now()))
}

/// Turn a status and a complete body into a response or a failure.
fn classify(
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<ParsedResponse, AttemptError> {
    if status.is_success() {
        return wire::parse_response(body).map_err(|problem| {
            let mut e = match problem {
                BodyProblem::Truncated(m) => AttemptError::new(FailureKind::TruncatedBody, m),
                BodyProblem::Malformed(m) => AttemptError::new(FailureKind::MalformedResponse, m),
            };
            e.success_status = true;
            e
        });
    }
    let code = status.as_u16();
    let kind = match code {
        // OpenAI's "you exceeded your current quota" is a 429 that no wait cures.
        429 if wire::is_quota_exhausted(body) => FailureKind::Client(429),
        429 => FailureKind::RateLimited,
        500..=599 => FailureKind::Server(code),
        _ => FailureKind::Client(code),
    };
    let mut e = AttemptError::new(kind, wire::error_message(body));
    if matches!(code, 429 | 500..=599) {
        e.retry_after = retry_after;
    }
    // llama-cpp-python's server answers an unknown `response_format` type with a
    // 500 whose message names the field: accept a 5xx only when it does.
    e.rejects_response_format = match code {
        400 | 422 => wire::rejects_response_format(body),
        500 => String::from_utf8_lossy(body).contains("response_format"),
        _ => false,
    };
    Err(e)
}

/// Classify a `reqwest` error, describing it with its causes but without the URL
/// (the endpoint's name says where).
fn transport_error(error: reqwest::Error) -> AttemptError {
    let kind = if error.is_timeout() {
        FailureKind::Timeout
    } else if error.is_body() || error.is_decode() {
        FailureKind::TruncatedBody
    } else {
        FailureKind::Connect
    };
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    AttemptError::new(kind, wire::truncate_chars(&message, wire::MAX_ERROR_MESSAGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        let kind = |code: u16| classify(StatusCode::from_u16(code).unwrap(), b"{}", None).unwrap_err().kind;
        assert_eq!(kind(429), FailureKind::RateLimited);
        assert_eq!(kind(503), FailureKind::Server(503));
        assert_eq!(kind(401), FailureKind::Client(401));
        assert_eq!(kind(200), FailureKind::MalformedResponse);
        let e = classify(StatusCode::OK, br#"{"choices":[{"message":{"content":"hi"#, None).unwrap_err();
        assert_eq!(e.kind, FailureKind::TruncatedBody);
        assert!(e.success_status);
    }

    #[test]
    fn exhausted_quota_is_not_retried() {
        let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        let e = classify(StatusCode::TOO_MANY_REQUESTS, body, None).unwrap_err();
        assert_eq!(e.kind, FailureKind::Client(429));
        assert!(!e.kind.is_retryable());
    }

    #[test]
    fn retry_after_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn retry_after_only_where_it_means_something() {
        let after = Some(Duration::from_secs(2));
        assert_eq!(classify(StatusCode::TOO_MANY_REQUESTS, b"", after).unwrap_err().retry_after, after);
        assert_eq!(classify(StatusCode::SERVICE_UNAVAILABLE, b"", after).unwrap_err().retry_after, after);
        assert_eq!(classify(StatusCode::BAD_REQUEST, b"", after).unwrap_err().retry_after, None);
    }

    #[test]
    fn response_format_rejection_needs_400_422_or_a_500_naming_it() {
        let body = br#"{"error":{"message":"response_format is not supported"}}"#;
        assert!(classify(StatusCode::BAD_REQUEST, body, None).unwrap_err().rejects_response_format);
        assert!(classify(StatusCode::UNPROCESSABLE_ENTITY, body, None).unwrap_err().rejects_response_format);
        // llama-cpp-python 0.3.36 answers `json_schema` with this 500.
        let llama = br#"{"error":{"message":"1 validation error: {'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\"}","type":"internal_server_error"}}"#;
        assert!(
            classify(StatusCode::INTERNAL_SERVER_ERROR, llama, None).unwrap_err().rejects_response_format
        );
        let unrelated = br#"{"error":{"message":"json schema not supported; out of memory"}}"#;
        assert!(
            !classify(StatusCode::INTERNAL_SERVER_ERROR, unrelated, None)
                .unwrap_err()
                .rejects_response_format
        );
        assert!(!classify(StatusCode::BAD_GATEWAY, llama, None).unwrap_err().rejects_response_format);
    }
}
