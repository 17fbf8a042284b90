//! Behaviour of `OpenAiBackend` against `sagert-mock`, the fault-injecting server.
//!
//! Timing assertions are lower bounds only (a limiter that does nothing fails
//! them; a slow machine does not), with generous margins.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sagert_backend::{BackendError, ChatBackend, ChatMessage, ChatRequest, FailureKind, JsonSchema, Secret};
use sagert_mock::{Fault, MockConfig, MockServer, Reply};
use sagert_openai::{EndpointSettings, OpenAiBackend, RetryPolicy, StructuredMode};
use serde_json::{json, Value};

const MODEL: &str = "test-model";

async fn mock(config: MockConfig) -> MockServer {
    MockServer::start(config).await.expect("the mock server starts")
}

async fn logging_mock() -> MockServer {
    mock(MockConfig { log_requests: true, ..MockConfig::default() }).await
}

fn endpoint(name: &str, server: &MockServer) -> EndpointSettings {
    let mut settings = EndpointSettings::new(name, server.base_url());
    settings.concurrency = 4;
    settings.timeout = Duration::from_secs(10);
    settings.connect_timeout = Duration::from_secs(2);
    settings
}

/// Quick retries, so that tests of retry paths stay fast.
fn quick_retries(max_retries: u32) -> RetryPolicy {
    RetryPolicy { max_retries, base_delay: Duration::from_millis(10), max_delay: Duration::from_millis(200) }
}

fn backend(endpoints: Vec<EndpointSettings>, retry: RetryPolicy) -> OpenAiBackend {
    OpenAiBackend::new(MODEL, endpoints, retry).expect("valid settings")
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest::new(vec![ChatMessage::user(text)])
}

fn requests_of(backend: &OpenAiBackend, name: &str) -> u64 {
    backend.endpoint_stats().into_iter().find(|s| s.name == name).expect("endpoint exists").requests
}

fn failures_of(backend: &OpenAiBackend, label: &str) -> u64 {
    backend.endpoint_stats().iter().map(|s| s.failures.get(label).copied().unwrap_or(0)).sum()
}

#[tokio::test]
async fn plain_call_sends_fields_and_key_and_parses_usage() {
    let server = logging_mock().await;
    let mut settings = endpoint("local", &server);
    settings.api_key = Some(Secret::new("sk-test-123"));
    let backend = backend(vec![settings], quick_retries(0));
    let mut request =
        ChatRequest::new(vec![ChatMessage::system("Be brief."), ChatMessage::user("hello there")]);
    request.params.temperature = Some(0.5);
    request.params.top_p = Some(0.9);
    request.params.max_tokens = Some(32);
    request.params.seed = Some(42);
    request.params.stop = vec!["END".into()];

    let response = backend.chat(&request).await.expect("the call succeeds");
    assert_eq!(response.text(), "echo: hello there");
    assert!(response.usage.prompt_tokens > 0 && response.usage.completion_tokens > 0, "{:?}", response.usage);
    assert!(!response.model.is_empty());
    assert_eq!(backend.model_id(), MODEL);

    let log = server.request_log();
    assert_eq!(log.len(), 1);
    let body = &log[0].body;
    assert_eq!(body["model"], MODEL);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello there"}
        ])
    );
    assert_eq!(body["temperature"], json!(0.5));
    assert_eq!(body["top_p"], json!(0.9));
    assert_eq!(body["max_tokens"], json!(32));
    assert_eq!(body["seed"], json!(42));
    assert_eq!(body["stop"], json!(["END"]));
    assert!(body.get("n").is_none() && body.get("response_format").is_none(), "{body}");
    assert_eq!(log[0].authorization.as_deref(), Some("Bearer sk-test-123"));

    let stats = &backend.endpoint_stats()[0];
    assert_eq!((stats.requests, stats.ok, stats.retries, stats.in_flight), (1, 1, 0, 0));
    assert_eq!(stats.usage_estimated, 0, "usage came from the server");
}

#[tokio::test]
async fn endpoint_model_overrides_the_role_model() {
    let server = logging_mock().await;
    let mut settings = endpoint("ollama", &server);
    settings.model = Some("llama3.2:1b".into());
    let backend = backend(vec![settings], quick_retries(0));
    backend.chat(&ask("hi")).await.unwrap();
    assert_eq!(server.request_log()[0].body["model"], "llama3.2:1b");
    assert!(server.request_log()[0].authorization.is_none());
}

#[tokio::test]
async fn rate_limit_retry_after_is_honoured() {
    let server = mock(MockConfig::default()).await;
    server.push_faults([Fault::RateLimited { retry_after: Some(Duration::from_secs(1)) }]);
    let backend = backend(vec![endpoint("local", &server)], quick_retries(3));
    let start = Instant::now();
    let response = backend.chat(&ask("patience")).await.expect("succeeds after the wait");
    let elapsed = start.elapsed();
    assert_eq!(response.text(), "echo: patience");
    assert!(elapsed >= Duration::from_secs(1), "retried after {elapsed:?}, before the Retry-After");
    assert_eq!(server.stats().received, 2);
    assert_eq!(failures_of(&backend, "rate_limited"), 1);
    assert_eq!(backend.endpoint_stats()[0].retries, 1);
}

#[tokio::test]
async fn server_errors_are_retried() {
    let server = mock(MockConfig::default()).await;
    server.push_faults([
        Fault::ServerError(500),
        Fault::Unavailable { retry_after: None },
        Fault::CloseConnection,
    ]);
    let backend = backend(vec![endpoint("local", &server)], quick_retries(4));
    let response = backend.chat(&ask("again")).await.expect("succeeds on the 4th attempt");
    assert_eq!(response.text(), "echo: again");
    assert_eq!(server.stats().received, 4);
    assert_eq!(failures_of(&backend, "server_500"), 1);
    assert_eq!(failures_of(&backend, "server_503"), 1);
    assert_eq!(failures_of(&backend, "connect"), 1);
    assert_eq!(backend.endpoint_stats()[0].ok, 1);
}

#[tokio::test]
async fn a_hanging_attempt_times_out_and_is_retried() {
    let server = mock(MockConfig::default()).await;
    server.push_faults([Fault::Hang]);
    let mut settings = endpoint("local", &server);
    settings.timeout = Duration::from_millis(300);
    let backend = backend(vec![settings], quick_retries(2));
    let start = Instant::now();
    let response = backend.chat(&ask("wake up")).await.expect("the retry succeeds");
    assert_eq!(response.text(), "echo: wake up");
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(failures_of(&backend, "timeout"), 1);
}

#[tokio::test]
async fn a_truncated_body_is_retried() {
    let server = mock(MockConfig::default()).await;
    server.push_faults([Fault::TruncatedBody]);
    let backend = backend(vec![endpoint("local", &server)], quick_retries(2));
    let response = backend.chat(&ask("whole")).await.expect("the retry succeeds");
    assert_eq!(response.text(), "echo: whole");
    assert_eq!(failures_of(&backend, "truncated_body"), 1);
    assert_eq!(server.stats().received, 2);
}

#[tokio::test]
async fn malformed_json_is_retried() {
    let server = mock(MockConfig::default()).await;
    server.push_faults([Fault::MalformedJson]);
    let backend = backend(vec![endpoint("local", &server)], quick_retries(2));
    let response = backend.chat(&ask("well formed")).await.expect("the retry succeeds");
    assert_eq!(response.text(), "echo: well formed");
    // The mock's malformed body is JSON cut short under a correct Content-Length,
    // which `FailureKind` calls truncated ("before the JSON ended"); a complete
    // body that is not a chat completion is malformed. Both are retried.
    let bad_bodies = failures_of(&backend, "malformed_response") + failures_of(&backend, "truncated_body");
    assert_eq!(bad_bodies, 1);
    assert_eq!(server.stats().received, 2);
}

#[tokio::test]
async fn exhausted_retries_say_what_how_often_and_how_long() {
    let server = mock(MockConfig::default()).await;
    server.set_default_fault(Some(Fault::ServerError(503)));
    let backend = backend(vec![endpoint("flaky", &server)], quick_retries(2));
    let error = backend.chat(&ask("never")).await.expect_err("every attempt fails");
    match &error {
        BackendError::Request { endpoint, kind, attempts, elapsed, .. } => {
            assert_eq!(endpoint, "flaky");
            assert_eq!(*kind, FailureKind::Server(503));
            assert_eq!(*attempts, 3);
            assert!(*elapsed > Duration::ZERO);
        }
        other => panic!("expected a request error, got {other:?}"),
    }
    let text = error.to_string();
    assert!(text.contains("flaky") && text.contains("HTTP 503") && text.contains("3 attempt"), "{text}");
    assert_eq!(server.stats().received, 3);
}

#[tokio::test]
async fn a_bad_request_is_not_retried() {
    let server = mock(MockConfig::default()).await;
    server.push_faults([Fault::BadRequest("maximum context length exceeded".into())]);
    let backend = backend(vec![endpoint("local", &server)], quick_retries(5));
    let error = backend.chat(&ask("too long")).await.expect_err("a 400 is final");
    assert!(
        matches!(error, BackendError::Request { kind: FailureKind::Client(400), attempts: 1, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("maximum context length exceeded"), "{error}");
    assert_eq!(server.stats().received, 1);
}

#[tokio::test]
async fn a_down_endpoint_fails_over_to_a_healthy_one() {
    let down = mock(MockConfig::default()).await;
    down.set_default_fault(Some(Fault::ServerError(500)));
    let healthy = mock(MockConfig::default()).await;
    let backend = backend(vec![endpoint("a", &down), endpoint("b", &healthy)], quick_retries(3));
    for i in 0..20 {
        let response = backend.chat(&ask(&format!("call {i}"))).await.expect("every call succeeds");
        assert_eq!(response.text(), format!("echo: call {i}"));
    }
    let (a, b) = (requests_of(&backend, "a"), requests_of(&backend, "b"));
    assert_eq!(b, 20, "every success came from b");
    assert!(a < b, "the down endpoint got {a} requests, the healthy one {b}");
    assert_eq!(healthy.stats().ok, 20);
}

#[tokio::test]
async fn calls_are_spread_over_healthy_endpoints() {
    let one = mock(MockConfig::default()).await;
    let two = mock(MockConfig::default()).await;
    let backend = Arc::new(backend(vec![endpoint("one", &one), endpoint("two", &two)], quick_retries(0)));
    for i in 0..20 {
        backend.chat(&ask(&format!("sequential {i}"))).await.unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..20 {
        let backend = Arc::clone(&backend);
        tasks.push(tokio::spawn(async move { backend.chat(&ask(&format!("parallel {i}"))).await }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let (a, b) = (one.stats().received, two.stats().received);
    assert_eq!(a + b, 40);
    assert!(a >= 10 && b >= 10, "one got {a}, two got {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_holds() {
    let server = mock(MockConfig { latency: Duration::from_millis(100), ..MockConfig::default() }).await;
    let mut settings = endpoint("local", &server);
    settings.concurrency = 2;
    let backend = Arc::new(backend(vec![settings], quick_retries(0)));
    let start = Instant::now();
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let backend = Arc::clone(&backend);
            tokio::spawn(async move { backend.chat(&ask(&format!("slot {i}"))).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let elapsed = start.elapsed();
    // 6 calls, 2 at a time, 100 ms each: three rounds.
    assert!(elapsed >= Duration::from_millis(290), "6 calls took only {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_minute_delay_calls() {
    let server = mock(MockConfig::default()).await;
    let mut settings = endpoint("local", &server);
    settings.concurrency = 16;
    settings.requests_per_minute = Some(300); // 5 a second, a burst of 5
    let backend = Arc::new(backend(vec![settings], quick_retries(0)));
    let start = Instant::now();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let backend = Arc::clone(&backend);
            tokio::spawn(async move { backend.chat(&ask(&format!("paced {i}"))).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let elapsed = start.elapsed();
    // 5 at once, then one every 200 ms: the 10th starts at 1 s.
    assert!(elapsed >= Duration::from_millis(800), "10 calls at 300/min took only {elapsed:?}");
}

fn label_schema() -> JsonSchema {
    JsonSchema {
        name: "verdict".into(),
        schema: json!({
            "type": "object",
            "properties": {"label": {"enum": ["safe", "unsafe"]}},
            "required": ["label"],
            "additionalProperties": false
        }),
    }
}

fn structured(text: &str, schema: JsonSchema) -> ChatRequest {
    let mut request = ask(text);
    request.schema = Some(schema);
    request
}

#[tokio::test]
async fn structured_output_through_response_format() {
    let server = logging_mock().await;
    let mut settings = endpoint("local", &server);
    settings.structured_output = StructuredMode::JsonSchema;
    let backend = backend(vec![settings], quick_retries(0));
    assert!(backend.capabilities().json_schema);
    let schema = JsonSchema {
        name: "echo".into(),
        schema: json!({"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}),
    };
    let response = backend.chat(&structured("hi", schema.clone())).await.expect("valid JSON");
    let value: Value = serde_json::from_str(response.text()).unwrap();
    assert!(value["echo"].is_string(), "{value}");
    assert_eq!(response.text(), value.to_string(), "the text is the compact JSON");
    let body = &server.request_log()[0].body;
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(body["response_format"]["json_schema"]["name"], "echo");
    assert_eq!(body["response_format"]["json_schema"]["schema"], schema.schema);
    assert_eq!(body["response_format"]["json_schema"]["strict"], true);
    assert_eq!(body["messages"].as_array().unwrap().len(), 1, "no schema instructions in the prompt");
}

#[tokio::test]
async fn auto_mode_steps_down_to_json_object_then_the_prompt_when_response_format_is_rejected() {
    let config = MockConfig {
        log_requests: true,
        replies: vec![Reply {
            when_contains: "judge-marker".into(),
            content: "{\"label\": \"safe\"}".into(),
        }],
        ..MockConfig::default()
    };
    let server = mock(config).await;
    // Rejects json_schema, then json_object: the endpoint ends in prompt mode.
    server.push_faults([Fault::RejectResponseFormat, Fault::RejectResponseFormat]);
    let backend = backend(vec![endpoint("llamacpp", &server)], quick_retries(0));
    assert!(backend.capabilities().json_schema);

    let response = backend.chat(&structured("judge-marker one", label_schema())).await.expect("answered");
    assert_eq!(response.text(), r#"{"label":"safe"}"#);
    let log = server.request_log();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].body["response_format"]["type"], "json_schema");
    assert_eq!(log[1].body["response_format"]["type"], "json_object");
    assert_eq!(
        log[1].body["response_format"]["schema"],
        label_schema().schema,
        "llama.cpp's schema extension"
    );
    assert!(log[2].body.get("response_format").is_none(), "{}", log[2].body);
    for entry in &log[1..] {
        let system = &entry.body["messages"][0];
        assert_eq!(system["role"], "system");
        let instructions = system["content"].as_str().unwrap();
        assert!(instructions.contains("Answer with only a JSON value") && instructions.contains("\"label\""));
    }

    // The endpoint stays in prompt mode: the next call goes straight there.
    backend.chat(&structured("judge-marker two", label_schema())).await.unwrap();
    let log = server.request_log();
    assert_eq!(log.len(), 4);
    assert!(log[3].body.get("response_format").is_none());
    assert_eq!(backend.endpoint_stats()[0].structured_mode, StructuredMode::Prompt);
    assert!(!backend.capabilities().json_schema);
}

#[tokio::test]
async fn auto_mode_stays_on_json_object_when_the_server_takes_it() {
    let config = MockConfig {
        log_requests: true,
        replies: vec![Reply {
            when_contains: "obj-marker".into(),
            content: "{\"label\": \"unsafe\"}".into(),
        }],
        ..MockConfig::default()
    };
    let server = mock(config).await;
    server.push_faults([Fault::RejectResponseFormat]);
    let backend = backend(vec![endpoint("llamacpp", &server)], quick_retries(0));
    backend.chat(&structured("obj-marker first", label_schema())).await.expect("answered");
    backend.chat(&structured("obj-marker second", label_schema())).await.expect("answered");
    let log = server.request_log();
    assert_eq!(log.len(), 3);
    assert_eq!(log[2].body["response_format"]["type"], "json_object");
    assert_eq!(backend.endpoint_stats()[0].structured_mode, StructuredMode::JsonObject);
    assert!(backend.capabilities().json_schema);
}

#[tokio::test]
async fn json_schema_mode_does_not_fall_back() {
    let server = mock(MockConfig::default()).await;
    server.push_faults([Fault::RejectResponseFormat]);
    let mut settings = endpoint("strict", &server);
    settings.structured_output = StructuredMode::JsonSchema;
    let backend = backend(vec![settings], quick_retries(3));
    let error = backend.chat(&structured("x", label_schema())).await.expect_err("rejected");
    assert!(matches!(error.kind(), Some(FailureKind::Client(_))), "{error:?}");
    assert_eq!(server.stats().received, 1);
}

#[tokio::test]
async fn invalid_structured_output_gets_one_repair_round() {
    let config = MockConfig {
        log_requests: true,
        replies: vec![
            // The repair round's user message is the repair template; the first
            // reply that matches wins, so it comes first.
            Reply { when_contains: "cannot be used".into(), content: "{\"label\": \"unsafe\"}".into() },
            Reply {
                when_contains: "repair-marker".into(),
                content: "Sure! Here it is: {\"label\": maybe}".into(),
            },
        ],
        ..MockConfig::default()
    };
    let server = mock(config).await;
    let mut settings = endpoint("local", &server);
    settings.structured_output = StructuredMode::Prompt;
    let backend = backend(vec![settings], quick_retries(0));
    let response = backend.chat(&structured("repair-marker", label_schema())).await.expect("repaired");
    assert_eq!(response.text(), r#"{"label":"unsafe"}"#);
    let log = server.request_log();
    assert_eq!(log.len(), 2);
    let messages = log[1].body["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 4, "system, user, bad answer, repair: {messages:?}");
    assert_eq!(messages[2]["role"], "assistant");
    assert_eq!(messages[2]["content"], "Sure! Here it is: {\"label\": maybe}");
    assert_eq!(messages[3]["role"], "user");
    assert!(messages[3]["content"].as_str().unwrap().contains("no JSON value"), "{}", messages[3]);
    // Usage covers both rounds.
    assert!(response.usage.prompt_tokens > 0);
}

#[tokio::test]
async fn output_still_invalid_after_repair_is_a_structured_error() {
    let config = MockConfig {
        replies: vec![
            Reply::new("hopeless-marker", "{\"label\": \"perhaps\"}"),
            Reply::new("cannot be used", "{\"label\": \"perhaps not\"}"),
        ],
        ..MockConfig::default()
    };
    let server = mock(config).await;
    let mut settings = endpoint("local", &server);
    settings.structured_output = StructuredMode::Prompt;
    let backend = backend(vec![settings], quick_retries(0));
    let error =
        backend.chat(&structured("hopeless-marker", label_schema())).await.expect_err("not repairable");
    match &error {
        BackendError::Structured { schema, repairs, message, raw } => {
            assert_eq!(schema, "verdict");
            assert_eq!(*repairs, 1);
            assert!(message.contains("/label"), "{message}");
            assert_eq!(raw, "{\"label\": \"perhaps not\"}", "the repaired answer is kept");
        }
        other => panic!("expected a structured-output error, got {other:?}"),
    }
    assert_eq!(error.label(), "schema_mismatch");
    assert_eq!(server.stats().received, 2);
}

#[tokio::test]
async fn the_api_key_is_never_printed() {
    const KEY: &str = "sk-planted-secret-4242";
    let server = mock(MockConfig::default()).await;
    // A server that echoes the key in its error message.
    server.push_faults([Fault::BadRequest(format!("Incorrect API key provided: {KEY}"))]);
    let mut settings = endpoint("openai", &server);
    settings.api_key = Some(Secret::new(KEY));
    let mut refused = EndpointSettings::new("closed", "http://127.0.0.1:9/v1");
    refused.api_key = Some(Secret::new(KEY));
    refused.connect_timeout = Duration::from_secs(2);
    let backend = backend(vec![settings.clone()], quick_retries(0));

    let debug = format!("{backend:?} {settings:?}");
    assert!(!debug.contains(KEY), "{debug}");
    let error = backend.chat(&ask("hi")).await.expect_err("rejected");
    let printed = format!("{error} {error:?}");
    assert!(!printed.contains(KEY), "{printed}");
    assert!(printed.contains("Incorrect API key provided: ****"), "{printed}");

    let closed = OpenAiBackend::new(MODEL, vec![refused], quick_retries(0)).unwrap();
    let error = closed.chat(&ask("hi")).await.expect_err("nothing listens on port 9");
    assert_eq!(error.kind(), Some(FailureKind::Connect), "{error:?}");
    let printed = format!("{error} {error:?} {closed:?}");
    assert!(!printed.contains(KEY), "{printed}");

    let mut bad_header = EndpointSettings::new("bad", server.base_url());
    bad_header.api_key = Some(Secret::new(format!("{KEY}\n")));
    let error = OpenAiBackend::new(MODEL, vec![bad_header], quick_retries(0)).expect_err("invalid header");
    assert!(!format!("{error} {error:?}").contains(KEY));
}

#[tokio::test]
async fn settings_are_validated() {
    let retry = quick_retries(0);
    assert!(OpenAiBackend::new(MODEL, vec![], retry).is_err());
    let ok = EndpointSettings::new("a", "http://127.0.0.1:1/v1/");
    assert!(OpenAiBackend::new(MODEL, vec![ok.clone()], retry).is_ok());
    assert!(OpenAiBackend::new(MODEL, vec![ok.clone(), ok.clone()], retry).is_err(), "duplicate names");
    assert!(OpenAiBackend::new("", vec![ok.clone()], retry).is_err(), "no model name anywhere");
    let mut zero = ok.clone();
    zero.concurrency = 0;
    assert!(OpenAiBackend::new(MODEL, vec![zero], retry).is_err());
    let bad_url = EndpointSettings::new("a", "localhost:8080");
    assert!(OpenAiBackend::new(MODEL, vec![bad_url], retry).is_err());
    let backend = OpenAiBackend::new(MODEL, vec![ok], retry).unwrap();
    let empty = ChatRequest::new(vec![]);
    assert!(matches!(backend.chat(&empty).await, Err(BackendError::Invalid(_))));
}

#[tokio::test]
async fn tokens_per_minute_reserve_then_reconcile() {
    let server = mock(MockConfig::default()).await;
    let mut settings = endpoint("local", &server);
    settings.tokens_per_minute = Some(60_000); // 1000 a second, holds 1000
    let backend = backend(vec![settings], quick_retries(0));

    // Each call reserves ~310 tokens and uses ~10: reconciling gives the rest
    // back, so ten calls in a row never wait (without it, the 4th would).
    let mut request = ask("short");
    request.params.max_tokens = Some(300);
    let start = Instant::now();
    for _ in 0..10 {
        backend.chat(&request).await.unwrap();
    }
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_millis(1500), "reconciled calls waited {elapsed:?}");

    // A reservation beyond the bucket waits in proportion: 2000 tokens ≈ 1 s.
    request.params.max_tokens = Some(2000);
    let start = Instant::now();
    backend.chat(&request).await.unwrap();
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(900), "a 2000-token reservation waited only {elapsed:?}");
}

/// A server that answers every request on one connection at a time with `body`
/// (status 200), for response shapes the mock does not make.
async fn canned_server(body: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head and the announced body, then answer and close.
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen);
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if seen.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn missing_usage_is_estimated_and_counted() {
    let url = canned_server(r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"a short answer"},"finish_reason":"stop"}]}"#).await;
    let backend = backend(vec![EndpointSettings::new("bare", url)], quick_retries(0));
    let response = backend.chat(&ask("how many tokens is this prompt?")).await.expect("usage is optional");
    assert_eq!(response.text(), "a short answer");
    assert!(response.usage.prompt_tokens > 0 && response.usage.completion_tokens > 0, "{:?}", response.usage);
    assert_eq!(response.model, MODEL, "no model in the answer: the one sent");
    assert_eq!(backend.endpoint_stats()[0].usage_estimated, 1);
}
