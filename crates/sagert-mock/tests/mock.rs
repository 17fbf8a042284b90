//! Behaviour of the mock server as seen on the wire by a raw HTTP client.

mod util;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sagert_mock::{spawn_blocking_server, Fault, MockConfig, MockServer, Reply};
use serde_json::{json, Value};
use util::{blocking_chat, chat, user, Client};

async fn server() -> MockServer {
    MockServer::start(MockConfig::default()).await.expect("start the mock")
}

async fn server_with_replies(replies: Vec<Reply>) -> MockServer {
    MockServer::start(MockConfig { replies, ..MockConfig::default() }).await.expect("start the mock")
}

fn content(response: &Value, choice: usize) -> &str {
    response["choices"][choice]["message"]["content"].as_str().expect("choice content")
}

#[tokio::test]
async fn chat_answer_has_openai_shape_and_word_usage() {
    let server = server().await;
    assert_eq!(server.base_url(), format!("http://127.0.0.1:{}/v1", server.addr().port()));
    let body = json!({"model": "x", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hello there   world"},
    ]});
    let response = chat(server.addr(), &body).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let json = response.json();
    assert!(json["id"].as_str().unwrap().starts_with("chatcmpl-mock-"), "{json}");
    assert_eq!(json["object"], "chat.completion");
    assert_eq!(json["created"], 0);
    assert_eq!(json["model"], "mock-model");
    assert_eq!(json["choices"].as_array().unwrap().len(), 1);
    assert_eq!(json["choices"][0]["index"], 0);
    assert_eq!(json["choices"][0]["message"]["role"], "assistant");
    assert_eq!(content(&json, 0), "echo: hello there   world");
    assert_eq!(json["choices"][0]["finish_reason"], "stop");
    // (3 words + 4) + (3 words + 4) prompt; "echo: hello there world" is 4 words.
    assert_eq!(json["usage"], json!({"prompt_tokens": 14, "completion_tokens": 4, "total_tokens": 18}));
}

#[tokio::test]
async fn n_choices_and_max_tokens_cut_with_length() {
    let server = server().await;
    let body = json!({"messages": [{"role": "user", "content": "one two three"}], "n": 3, "max_tokens": 2});
    let json = chat(server.addr(), &body).await.json();
    let choices = json["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (index, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], index);
        assert_eq!(choice["message"]["content"], "echo: one");
        assert_eq!(choice["finish_reason"], "length");
    }
    assert_eq!(json["usage"]["completion_tokens"], 6);
    assert_eq!(json["usage"]["prompt_tokens"], 7);

    let roomy = json!({"messages": [{"role": "user", "content": "one"}], "max_tokens": 2});
    let json = chat(server.addr(), &roomy).await.json();
    assert_eq!(json["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn replies_match_the_last_user_message_in_order() {
    let server =
        server_with_replies(vec![Reply::new("capital", "Paris"), Reply::new("weather", "Sunny today")]).await;
    let json = chat(server.addr(), &user("capital and weather")).await.json();
    assert_eq!(content(&json, 0), "Paris");
    let json = chat(server.addr(), &user("the weather?")).await.json();
    assert_eq!(content(&json, 0), "Sunny today");
    assert_eq!(json["usage"]["completion_tokens"], 2);

    let earlier_only = json!({"messages": [
        {"role": "user", "content": "capital"},
        {"role": "assistant", "content": "weather"},
        {"role": "user", "content": "neither"},
    ]});
    let json = chat(server.addr(), &earlier_only).await.json();
    assert_eq!(content(&json, 0), "echo: neither");
}

#[tokio::test]
async fn json_schema_requests_get_a_json_echo_unless_a_reply_matches() {
    let server = server_with_replies(vec![Reply::new("canned", r#"{"label":"safe"}"#)]).await;
    let format = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}});
    let body = json!({"messages": [{"role": "user", "content": "say \"hi\""}], "response_format": format});
    let json = chat(server.addr(), &body).await.json();
    let inner: Value = serde_json::from_str(content(&json, 0)).expect("content is JSON");
    assert_eq!(inner, json!({"echo": "say \"hi\""}));

    let body = json!({"messages": [{"role": "user", "content": "canned"}], "response_format": format});
    let json = chat(server.addr(), &body).await.json();
    assert_eq!(content(&json, 0), r#"{"label":"safe"}"#);

    let body =
        json!({"messages": [{"role": "user", "content": "plain"}], "response_format": {"type": "text"}});
    assert_eq!(content(&chat(server.addr(), &body).await.json(), 0), "echo: plain");
}

#[tokio::test]
async fn models_route_and_unknown_routes() {
    let server =
        MockServer::start(MockConfig { model: "tiny".into(), ..MockConfig::default() }).await.unwrap();
    let mut client = Client::connect(server.addr()).await;
    client.send("GET", "/v1/models", b"", &[]).await;
    let models = client.response().await.unwrap();
    assert_eq!(models.status, 200);
    assert_eq!(models.json()["data"][0]["id"], "tiny");

    client.send("GET", "/v1/nothing", b"", &[]).await;
    let missing = client.response().await.unwrap();
    assert_eq!(missing.status, 404);
    assert!(missing.error_message().contains("/v1/nothing"), "{}", missing.error_message());
    assert_eq!(missing.json()["error"]["type"], "invalid_request_error");

    let body = chat(server.addr(), &user("hi")).await.json();
    assert_eq!(body["model"], "tiny");
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let server = server().await;
    let mut client = Client::connect(server.addr()).await;
    let first = client.chat(&user("first")).await.json();
    let second = client.chat(&user("second")).await.json();
    assert_eq!(content(&first, 0), "echo: first");
    assert_eq!(content(&second, 0), "echo: second");
    assert_ne!(first["id"], second["id"]);

    // Two requests in one write: both answered, in order.
    let mut pipelined =
        util::request_bytes("POST", "/v1/chat/completions", user("a").to_string().as_bytes(), &[]);
    pipelined.extend(util::request_bytes("GET", "/v1/models", b"", &[]));
    client.send_raw(&pipelined).await;
    assert_eq!(content(&client.response().await.unwrap().json(), 0), "echo: a");
    assert_eq!(client.response().await.unwrap().json()["object"], "list");

    client
        .send("POST", "/v1/chat/completions", user("last").to_string().as_bytes(), &[("Connection", "close")])
        .await;
    let last = client.response().await.unwrap();
    assert_eq!(last.status, 200);
    assert_eq!(last.header("connection"), Some("close"));
    assert_eq!(client.read_to_end().await.unwrap(), b"");
    assert_eq!(server.stats().received, 5);
}

#[tokio::test]
async fn rate_limited_and_unavailable_send_status_and_retry_headers() {
    let server = server().await;
    server.push_faults([
        Fault::RateLimited { retry_after: Some(Duration::from_secs(2)) },
        Fault::RateLimited { retry_after: None },
        Fault::Unavailable { retry_after: Some(Duration::from_millis(250)) },
    ]);
    let mut client = Client::connect(server.addr()).await;
    let limited = client.chat(&user("x")).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("2"));
    assert_eq!(limited.header("retry-after-ms"), Some("2000"));
    assert_eq!(limited.json()["error"]["type"], "rate_limit_error");

    let limited = client.chat(&user("x")).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), None);

    let unavailable = client.chat(&user("x")).await;
    assert_eq!(unavailable.status, 503);
    assert_eq!(unavailable.header("retry-after"), Some("1"));
    assert_eq!(unavailable.header("retry-after-ms"), Some("250"));
    assert_eq!(unavailable.json()["error"]["type"], "server_error");

    // The connection survives error answers, and the queue is now empty.
    assert_eq!(client.chat(&user("x")).await.status, 200);
}

#[tokio::test]
async fn server_error_and_bad_request_send_openai_error_bodies() {
    let server = server().await;
    server.push_faults([Fault::ServerError(502), Fault::BadRequest("prompt too long".into())]);
    let failed = chat(server.addr(), &user("x")).await;
    assert_eq!(failed.status, 502);
    assert_eq!(failed.json()["error"]["type"], "server_error");

    let bad = chat(server.addr(), &user("x")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.error_message(), "prompt too long");
    assert_eq!(bad.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn truncated_body_is_shorter_than_its_content_length() {
    let server = server().await;
    server.push_faults([Fault::TruncatedBody]);
    let mut client = Client::connect(server.addr()).await;
    client.send("POST", "/v1/chat/completions", user("x").to_string().as_bytes(), &[]).await;
    let bytes = client.read_to_end().await.unwrap();
    let (head, head_len) = util::parse_head(&bytes).expect("a response head");
    assert_eq!(head.status, 200);
    let announced = head.content_length().expect("content-length");
    let sent = bytes.len() - head_len;
    assert!(0 < sent && sent < announced, "sent {sent} of {announced} announced bytes");
    assert_eq!(server.stats().ok, 0);
}

#[tokio::test]
async fn malformed_json_is_complete_but_not_json() {
    let server = server().await;
    server.push_faults([Fault::MalformedJson]);
    let mut client = Client::connect(server.addr()).await;
    let response = client.chat(&user("x")).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.content_length(), Some(response.body.len()));
    assert!(serde_json::from_slice::<Value>(&response.body).is_err());
    assert!(response.body.starts_with(br#"{"#));
    // The body was complete, so the connection is still usable.
    assert_eq!(client.chat(&user("x")).await.status, 200);
    assert_eq!(server.stats().ok, 1);
}

#[tokio::test]
async fn close_connection_gives_eof_without_bytes() {
    let server = server().await;
    server.push_faults([Fault::CloseConnection]);
    let mut client = Client::connect(server.addr()).await;
    client.send("POST", "/v1/chat/completions", user("x").to_string().as_bytes(), &[]).await;
    assert_eq!(client.read_to_end().await.unwrap_or_default(), b"");
    assert_eq!(server.stats().fault("close_connection"), 1);
    assert!(server.stats().by_status.is_empty());
}

#[tokio::test]
async fn hang_sends_nothing_until_the_server_drops() {
    let server = server().await;
    server.push_faults([Fault::Hang]);
    let mut client = Client::connect(server.addr()).await;
    client.send("POST", "/v1/chat/completions", user("x").to_string().as_bytes(), &[]).await;
    assert_eq!(client.read_within(Duration::from_millis(300)).await, None, "hang must send nothing");
    let log = server.request_log();
    assert_eq!((log[0].fault, log[0].status), (Some("hang"), None));

    drop(server);
    assert_eq!(
        client.read_within(Duration::from_secs(5)).await,
        Some(0),
        "dropping the server closes the socket"
    );
}

#[tokio::test]
async fn delay_answers_normally_after_the_delay() {
    let server = server().await;
    server.push_faults([Fault::Delay(Duration::from_millis(300))]);
    let started = Instant::now();
    let response = chat(server.addr(), &user("slow")).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "answered after {:?}", started.elapsed());
    assert_eq!(content(&response.json(), 0), "echo: slow");
    assert_eq!(server.stats().ok, 1);
}

#[tokio::test]
async fn reject_response_format_only_rejects_requests_with_one() {
    let server = server().await;
    server.push_faults([Fault::RejectResponseFormat, Fault::RejectResponseFormat]);
    let plain = chat(server.addr(), &user("x")).await;
    assert_eq!(plain.status, 200);
    let body =
        json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}});
    let rejected = chat(server.addr(), &body).await;
    assert_eq!(rejected.status, 400);
    assert_eq!(rejected.error_message(), "response_format json_schema is not supported");
    assert_eq!(rejected.json()["error"]["param"], "response_format");
}

#[tokio::test]
async fn faults_apply_in_order_then_the_default_while_the_queue_is_empty() {
    let server = server().await;
    server.set_default_fault(Some(Fault::Unavailable { retry_after: None }));
    server.push_faults([Fault::ServerError(500), Fault::RateLimited { retry_after: None }]);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(chat(server.addr(), &user("x")).await.status);
    }
    assert_eq!(statuses, [500, 429, 503, 503]);
    // Other routes never take faults.
    let mut client = Client::connect(server.addr()).await;
    client.send("GET", "/v1/models", b"", &[]).await;
    assert_eq!(client.response().await.unwrap().status, 200);

    server.set_default_fault(None);
    assert_eq!(chat(server.addr(), &user("x")).await.status, 200);
    assert_eq!(server.stats().fault("unavailable"), 2);
}

#[tokio::test]
async fn stats_and_request_log_record_every_request() {
    let server = server().await;
    server.push_faults([Fault::ServerError(500)]);
    let mut client = Client::connect(server.addr()).await;
    let first = user("first");
    client
        .send(
            "POST",
            "/v1/chat/completions",
            first.to_string().as_bytes(),
            &[("Authorization", "Bearer sk-a")],
        )
        .await;
    assert_eq!(client.response().await.unwrap().status, 500);
    client.send("POST", "/v1/chat/completions", b"not json", &[]).await;
    assert_eq!(client.response().await.unwrap().status, 400);
    server.push_faults([Fault::TruncatedBody]);
    client.send("POST", "/v1/chat/completions", user("cut").to_string().as_bytes(), &[]).await;
    assert!(client.response().await.is_err(), "a truncated body ends the connection early");
    let ok = user("ok");
    assert_eq!(Client::connect(server.addr()).await.chat(&ok).await.status, 200);

    let stats = server.stats();
    assert_eq!(stats.received, 4);
    assert_eq!(stats.ok, 1);
    assert_eq!((stats.status(200), stats.status(400), stats.status(500)), (2, 1, 1));
    assert_eq!((stats.fault("server_error"), stats.fault("truncated_body")), (1, 1));

    let log = server.request_log();
    assert_eq!(log.len(), 4);
    assert_eq!(log[0].body, first);
    assert_eq!(log[0].authorization.as_deref(), Some("Bearer sk-a"));
    assert!(!format!("{:?}", log[0]).contains("sk-a"), "Debug masks the key");
    assert_eq!((log[0].status, log[0].fault, log[0].completed), (Some(500), Some("server_error"), false));
    assert_eq!(log[1].body, Value::String("not json".into()));
    assert_eq!((log[1].status, log[1].fault, log[1].authorization.as_deref()), (Some(400), None, None));
    assert_eq!((log[2].status, log[2].fault, log[2].completed), (Some(200), Some("truncated_body"), false));
    assert_eq!((log[3].method.as_str(), log[3].path.as_str()), ("POST", "/v1/chat/completions"));
    assert_eq!((log[3].status, log[3].fault, log[3].completed), (Some(200), None, true));
    assert_eq!(server.completed_bodies(), vec![ok]);
}

#[tokio::test]
async fn request_log_off_keeps_only_stats() {
    let server =
        MockServer::start(MockConfig { log_requests: false, ..MockConfig::default() }).await.unwrap();
    assert_eq!(chat(server.addr(), &user("x")).await.status, 200);
    assert!(server.request_log().is_empty());
    assert!(server.completed_bodies().is_empty());
    assert_eq!((server.stats().received, server.stats().ok), (1, 1));
}

#[tokio::test]
async fn start_on_refuses_non_loopback_addresses() {
    for addr in ["0.0.0.0:0", "192.0.2.1:0", "[::]:0"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let error = MockServer::start_on(addr, MockConfig::default()).await.expect_err("must refuse");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{addr}: {error}");
    }
    let server = MockServer::start_on("127.0.0.1:0".parse().unwrap(), MockConfig::default()).await.unwrap();
    assert!(server.addr().ip().is_loopback());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_overlap_their_latency() {
    let config = MockConfig { latency: Duration::from_millis(20), ..MockConfig::default() };
    let server = MockServer::start(config).await.unwrap();
    let addr = server.addr();
    let started = Instant::now();
    let tasks: Vec<_> = (0..200)
        .map(|i| tokio::spawn(async move { chat(addr, &user(&format!("request {i}"))).await.json() }))
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(content(&task.await.unwrap(), 0), format!("echo: request {i}"));
    }
    // Serially this would take 200 × 20 ms = 4 s.
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(server.stats().ok, 200);
}

#[tokio::test]
async fn dropping_the_server_stops_serving() {
    let server = server().await;
    let addr = server.addr();
    let mut client = Client::connect(addr).await;
    assert_eq!(client.chat(&user("x")).await.status, 200);
    drop(server);
    assert_eq!(client.read_within(Duration::from_secs(5)).await, Some(0), "open connections are closed");
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting connections after drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn unframeable_requests_get_an_error_and_a_close() {
    let server = server().await;
    let mut client = Client::connect(server.addr()).await;
    client.send_raw(b"NONSENSE\r\n\r\n").await;
    assert_eq!(client.response().await.unwrap().status, 400);
    assert_eq!(client.read_to_end().await.unwrap(), b"");

    let mut client = Client::connect(server.addr()).await;
    let huge = format!("GET /v1/models HTTP/1.1\r\nx-filler: {}\r\n\r\n", "a".repeat(40 * 1024));
    client.send_raw(huge.as_bytes()).await;
    assert_eq!(client.response().await.unwrap().status, 431);
}

#[test]
fn blocking_server_serves_synchronous_clients() {
    let server = spawn_blocking_server(MockConfig {
        replies: vec![Reply::new("ping", "pong")],
        ..MockConfig::default()
    })
    .expect("start the threaded mock");
    let response = blocking_chat(server.addr(), &user("ping"));
    assert_eq!(response.status, 200);
    assert_eq!(content(&response.json(), 0), "pong");
    server.push_faults([Fault::ServerError(500)]);
    assert_eq!(blocking_chat(server.addr(), &user("ping")).status, 500);
    assert_eq!(server.request_log()[0].authorization.as_deref(), Some("Bearer sk-sync"));
    let addr = server.addr();
    drop(server);
    assert!(std::net::TcpStream::connect(addr).is_err(), "the runtime is gone after drop");
}

#[test]
fn binary_prints_its_url_and_serves_until_killed() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sagert-mock"))
        .args(["--port", "0", "--latency-ms", "1", "--reply", "capital=Paris", "--model", "bench"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sagert-mock");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim_end().strip_prefix("listening on ").unwrap_or_else(|| panic!("first line {line:?}"));
    let port =
        url.strip_prefix("http://127.0.0.1:").and_then(|rest| rest.strip_suffix("/v1")).expect("url shape");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let response = blocking_chat(addr, &user("the capital?"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(response.status, 200);
    let json = response.json();
    assert_eq!((content(&json, 0), json["model"].as_str()), ("Paris", Some("bench")));
}

#[test]
fn binary_help_prints_usage() {
    let output = Command::new(env!("CARGO_BIN_EXE_sagert-mock")).arg("--help").output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("usage: sagert-mock"));
    let output = Command::new(env!("CARGO_BIN_EXE_sagert-mock")).arg("--bogus").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}
