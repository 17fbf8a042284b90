//! Behaviour tests of the server on SmolLM2-135M-Instruct (Q4_1), through our
//! own HTTP client (`sagert-openai`), raw HTTP, and the Python `openai` package.
//!
//! Every test needs the model file from `scripts/fetch-models`; when it is
//! missing the test prints why and passes, except under `CI=true`, where it
//! fails. One engine (two threads) is shared by the tests, which run one at a
//! time; each test serves it on a fresh port from a fresh runtime.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use sagert_backend::{
    BackendError, ChatBackend, ChatMessage, ChatRequest, FailureKind, JsonSchema, SamplingParams,
};
use sagert_llama::{LlamaBackend, LlamaOptions};
use sagert_openai::{EndpointSettings, OpenAiBackend, RetryPolicy, StructuredMode};
use serde_json::{json, Value};

const MODEL_ID: &str = "smollm2-135m-instruct";

/// The model's path, or `None` (after saying why) when the test must skip.
fn model_or_skip(test: &str) -> Option<PathBuf> {
    sagert_models::testing::model_or_skip(test, "smollm2-135m-instruct")
}

/// Model tests run one at a time (two llama.cpp threads each on a small machine).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn shared_backend(path: &std::path::Path) -> Arc<LlamaBackend> {
    static BACKEND: OnceLock<Arc<LlamaBackend>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let options = LlamaOptions {
                model_id: MODEL_ID.into(),
                threads: 2,
                context_per_sequence: 1024,
                max_sequences: 8,
                batch_tokens: 256,
                ..LlamaOptions::default()
            };
            Arc::new(LlamaBackend::load(path, options).expect("model loads"))
        })
        .clone()
}

/// A served engine: the runtime the server runs on and its base URL.
struct Server {
    rt: tokio::runtime::Runtime,
    /// `http://127.0.0.1:PORT`
    root: String,
    backend: Arc<LlamaBackend>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    fn v1(&self) -> String {
        format!("{}/v1", self.root)
    }

    fn client(&self, mode: StructuredMode) -> OpenAiBackend {
        let mut s = EndpointSettings::new("ours", self.v1());
        s.structured_output = mode;
        s.timeout = Duration::from_secs(300);
        let retry = RetryPolicy {
            max_retries: 0,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
        };
        OpenAiBackend::new(MODEL_ID, vec![s], retry).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serve the shared engine alone (see [`serial`]) and run `body`; or skip.
fn with_server(test: &str, body: impl FnOnce(&Server)) {
    let Some(path) = model_or_skip(test) else { return };
    let _serial = serial();
    let backend = shared_backend(&path);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let root = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let models = vec![(MODEL_ID.to_string(), backend.clone())];
    rt.spawn(async move {
        sagert_serve::serve(listener, models, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let server = Server { rt, root, backend, stop: Some(stop) };
    body(&server);
}

fn request(user: &str, max_tokens: u32) -> ChatRequest {
    let mut r = ChatRequest::new(vec![ChatMessage::user(user)]);
    r.params =
        SamplingParams { temperature: Some(0.0), max_tokens: Some(max_tokens), ..SamplingParams::default() };
    r
}

async fn post(server: &Server, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.v1()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

#[test]
fn our_client_chats_greedily_with_n_and_stop() {
    with_server("our_client_chats_greedily_with_n_and_stop", |server| {
        server.rt.block_on(async {
            let client = server.client(StructuredMode::Auto);
            let r = request("Name three colours.", 24);
            let first = client.chat(&r).await.unwrap();
            assert!(!first.text().trim().is_empty());
            assert_eq!(first.model, MODEL_ID);
            assert!(first.usage.prompt_tokens > 5 && first.usage.completion_tokens > 0, "{:?}", first.usage);
            let second = client.chat(&r).await.unwrap();
            assert_eq!(first.text(), second.text(), "temperature 0 is deterministic");
            // The server answers exactly what the engine answers.
            let direct = server.backend.chat(&r).await.unwrap();
            assert_eq!(first.text(), direct.text());

            let mut two = request("Write a word.", 12);
            two.params.n = 2;
            two.params.temperature = Some(0.9);
            two.params.seed = Some(11);
            let both = client.chat(&two).await.unwrap();
            assert_eq!(both.choices.len(), 2);
            assert!(both.choices.iter().all(|c| !c.text.is_empty()));

            // Stop at the first word of the greedy answer's second half.
            let long = client.chat(&request("Count from one to ten in words.", 48)).await.unwrap();
            let words: Vec<&str> = long.text().split_whitespace().collect();
            assert!(words.len() > 3, "{}", long.text());
            let stop = words[words.len() / 2].to_string();
            let mut stopped = request("Count from one to ten in words.", 48);
            stopped.params.stop = vec![stop.clone(), "never-appears".into()];
            let cut = client.chat(&stopped).await.unwrap();
            assert!(!cut.text().contains(&stop), "{stop:?} in {:?}", cut.text());
            assert!(long.text().starts_with(cut.text()), "{:?} vs {:?}", cut.text(), long.text());
            assert_eq!(cut.choices[0].finish_reason, sagert_backend::FinishReason::Stop);
        });
    });
}

#[test]
fn json_schema_output_parses_and_validates() {
    with_server("json_schema_output_parses_and_validates", |server| {
        server.rt.block_on(async {
            let schema = json!({
                "type": "object",
                "required": ["name", "age"],
                "properties": {
                    "name": {"type": "string", "maxLength": 30},
                    "age": {"type": "integer", "minimum": 0, "maximum": 120}
                },
                "additionalProperties": false
            });
            let client = server.client(StructuredMode::Auto);
            let mut r = request("Invent a fictional person. Give their name and age.", 64);
            r.schema = Some(JsonSchema { name: "person".into(), schema: schema.clone() });
            let answer = client.chat(&r).await.expect("structured output");
            let value: Value = serde_json::from_str(answer.text()).expect("JSON");
            assert!(sagert_backend::json::validate(&value, &schema).is_ok(), "{value}");
            // Auto kept sending response_format: the server took json_schema.
            assert!(client.capabilities().json_schema, "the client fell back to prompting");

            // json_object through our client's llama.cpp-style extension, and raw.
            let client = server.client(StructuredMode::JsonObject);
            let value: Value = serde_json::from_str(client.chat(&r).await.unwrap().text()).unwrap();
            assert!(sagert_backend::json::validate(&value, &schema).is_ok(), "{value}");
            let (status, body) = post(
                server,
                &json!({"model": MODEL_ID, "max_tokens": 48, "temperature": 0,
                    "messages": [{"role": "user", "content": "Describe a cat as JSON."}],
                    "response_format": {"type": "json_object"}})
                .to_string(),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let content = body["choices"][0]["message"]["content"].as_str().unwrap();
            if body["choices"][0]["finish_reason"] == "stop" {
                assert!(serde_json::from_str::<Value>(content).unwrap().is_object(), "{content}");
            }
        });
    });
}

#[test]
fn errors_are_openai_error_bodies() {
    with_server("errors_are_openai_error_bodies", |server| {
        server.rt.block_on(async {
            let check = |status: u16, body: &Value, want: u16, needle: &str| {
                assert_eq!(status, want, "{body}");
                let message = body["error"]["message"].as_str().unwrap_or_else(|| panic!("error body: {body}"));
                assert!(message.contains(needle), "{needle:?} not in {message:?}");
                assert!(body["error"]["type"].is_string(), "{body}");
            };
            let user = json!([{"role": "user", "content": "hi"}]);
            let (s, b) = post(server, &json!({"model": "gpt-4o", "messages": user}).to_string()).await;
            check(s, &b, 404, "gpt-4o");
            assert_eq!(b["error"]["code"], "model_not_found");
            let (s, b) = post(server, "{\"model\": \"x\", \"messages\": [").await;
            check(s, &b, 400, "not valid JSON");
            let (s, b) = post(server, &json!({"model": MODEL_ID, "messages": user, "n": "2"}).to_string()).await;
            check(s, &b, 400, "`n`");
            let (s, b) = post(server, &json!({"model": MODEL_ID, "messages": "hi"}).to_string()).await;
            check(s, &b, 400, "messages");
            let tools = json!({"model": MODEL_ID, "messages": user, "tools": [{"type": "function", "function": {"name": "f"}}]});
            let (s, b) = post(server, &tools.to_string()).await;
            check(s, &b, 400, "`tools`");
            assert_eq!(b["error"]["param"], "tools");
            let (s, b) = post(server, &json!({"model": MODEL_ID, "messages": user, "max_tokens": 4, "logprobs": true}).to_string()).await;
            check(s, &b, 400, "`logprobs`");
            // The engine's own refusals: more choices than sequences, a prompt over the context.
            let (s, b) = post(server, &json!({"model": MODEL_ID, "messages": user, "max_tokens": 4, "n": 9}).to_string()).await;
            check(s, &b, 400, "");
            let long = json!([{"role": "user", "content": "word ".repeat(1500)}]);
            let (s, b) = post(server, &json!({"model": MODEL_ID, "messages": long, "max_tokens": 4}).to_string()).await;
            check(s, &b, 400, "context");
            // Harmless unknown fields are ignored.
            let (s, b) = post(
                server,
                &json!({"model": MODEL_ID, "messages": user, "max_tokens": 2, "user": "u1", "metadata": {"a": "b"}, "store": false}).to_string(),
            )
            .await;
            assert_eq!(s, 200, "{b}");

            let http = reqwest::Client::new();
            let big = format!("{{\"model\": \"{MODEL_ID}\", \"pad\": \"{}\"}}", "x".repeat(sagert_serve::BODY_LIMIT));
            let r = http.post(format!("{}/chat/completions", server.v1())).body(big).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 413);
            let r = http.get(format!("{}/nowhere", server.v1())).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 404);
            assert!(r.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().contains("/v1/nowhere"));

            let models: Value = http.get(format!("{}/models", server.v1())).send().await.unwrap().json().await.unwrap();
            assert_eq!(models["object"], "list");
            assert_eq!(models["data"][0]["id"], MODEL_ID);
            let health = http.get(format!("{}/health", server.root)).send().await.unwrap();
            assert_eq!(health.status().as_u16(), 200);

            // Our client reports the 404 as a client error, without retrying.
            let e = OpenAiBackend::new("nope", vec![EndpointSettings::new("ours", server.v1())], RetryPolicy::default())
                .unwrap()
                .chat(&request("hi", 2))
                .await
                .unwrap_err();
            assert!(matches!(&e, BackendError::Request { kind: FailureKind::Client(404), attempts: 1, .. }), "{e}");
        });
    });
}

/// The `data:` payloads of an event stream.
fn sse_events(body: &str) -> Vec<String> {
    assert!(body.ends_with("\n\n"), "events end with a blank line: {body:?}");
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data event: {e:?}")).to_string())
        .collect()
}

#[test]
fn streaming_matches_the_whole_answer() {
    with_server("streaming_matches_the_whole_answer", |server| {
        server.rt.block_on(async {
            let messages = json!([{"role": "user", "content": "Name three colours."}]);
            let plain = json!({"model": MODEL_ID, "messages": messages, "max_tokens": 32, "temperature": 0});
            let (status, whole) = post(server, &plain.to_string()).await;
            assert_eq!(status, 200, "{whole}");
            assert!(whole["id"].as_str().unwrap().starts_with("chatcmpl-"));
            assert_eq!(whole["object"], "chat.completion");
            let expected = whole["choices"][0]["message"]["content"].as_str().unwrap();

            let mut streamed = plain.clone();
            streamed["stream"] = json!(true);
            streamed["stream_options"] = json!({"include_usage": true});
            let response = reqwest::Client::new()
                .post(format!("{}/chat/completions", server.v1()))
                .json(&streamed)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
            assert_eq!(response.headers()["content-type"], "text/event-stream");
            let body = response.text().await.unwrap();
            let events = sse_events(&body);
            assert_eq!(events.last().unwrap(), "[DONE]");
            let chunks: Vec<Value> =
                events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
            let id = chunks[0]["id"].as_str().unwrap();
            assert!(chunks.iter().all(|c| c["id"] == id && c["object"] == "chat.completion.chunk"));
            assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
            let content: String = chunks
                .iter()
                .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str().map(str::to_string))
                .collect();
            assert_eq!(content, expected, "the streamed text is the whole answer");
            assert!(chunks.len() > 5, "text arrives in pieces: {} chunks", chunks.len());
            let finish = &chunks[chunks.len() - 2];
            assert_eq!(finish["choices"][0]["finish_reason"], whole["choices"][0]["finish_reason"]);
            assert_eq!(finish["choices"][0]["delta"], json!({}));
            let usage = chunks.last().unwrap();
            assert_eq!(usage["choices"], json!([]));
            assert_eq!(usage["usage"], whole["usage"]);
            assert!(chunks[..chunks.len() - 1].iter().all(|c| c["usage"].is_null()));

            // n = 2 streams both choices by index, each ending with its finish chunk.
            let mut two = plain.clone();
            two["stream"] = json!(true);
            two["n"] = json!(2);
            two["temperature"] = json!(0.8);
            two["seed"] = json!(3);
            let body = reqwest::Client::new()
                .post(format!("{}/chat/completions", server.v1()))
                .json(&two)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let events = sse_events(&body);
            assert_eq!(events.last().unwrap(), "[DONE]");
            let mut finished = [false; 2];
            for e in &events[..events.len() - 1] {
                let c: Value = serde_json::from_str(e).unwrap();
                let choice = &c["choices"][0];
                if choice["finish_reason"].is_string() {
                    finished[choice["index"].as_u64().unwrap() as usize] = true;
                }
            }
            assert_eq!(finished, [true, true]);
        });
    });
}

#[test]
fn a_disconnected_stream_stops_generating() {
    with_server("a_disconnected_stream_stops_generating", |server| {
        server.rt.block_on(async {
            let body = json!({"model": MODEL_ID, "max_tokens": 600, "temperature": 0.8, "seed": 1, "stream": true,
                "messages": [{"role": "user", "content": "Write a very long story about a dragon."}]});
            let before = server.backend.stats().tokens_generated;
            let mut response = reqwest::Client::new()
                .post(format!("{}/chat/completions", server.v1()))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
            let first = response.chunk().await.unwrap().unwrap();
            assert!(String::from_utf8_lossy(&first).starts_with("data: "));
            drop(response);
            // The engine notices at its next step; give it a moment, then it must be idle.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let settled = server.backend.stats().tokens_generated;
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let later = server.backend.stats().tokens_generated;
            assert_eq!(settled, later, "generation went on after the client left");
            assert!(later - before < 600, "generated {} tokens for a dropped stream", later - before);
        });
    });
}

#[test]
fn python_openai_client_works() {
    let probe = Command::new("python3").args(["-c", "import openai"]).output();
    if !matches!(&probe, Ok(o) if o.status.success()) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run python_openai_client_works, but `import openai` fails (pip install openai)"
        );
        eprintln!(
            "skipped python_openai_client_works: python3 -c 'import openai' fails (pip install openai)"
        );
        return;
    }
    with_server("python_openai_client_works", |server| {
        let script = r#"
import json, sys, openai
client = openai.OpenAI(base_url=sys.argv[1], api_key="x", max_retries=0)
messages = [{"role": "user", "content": "Name three colours."}]
whole = client.chat.completions.create(model=sys.argv[2], messages=messages, max_tokens=24, temperature=0)
parts = []
usage = None
for chunk in client.chat.completions.create(model=sys.argv[2], messages=messages, max_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True}):
    if chunk.usage is not None:
        usage = chunk.usage.completion_tokens
    for c in chunk.choices:
        parts.append(c.delta.content or "")
models = [m.id for m in client.models.list()]
try:
    client.chat.completions.create(model="nope", messages=messages)
    error = None
except openai.NotFoundError as e:
    error = e.status_code
print(json.dumps({"whole": whole.choices[0].message.content, "streamed": "".join(parts),
                  "finish": whole.choices[0].finish_reason, "usage": whole.usage.completion_tokens,
                  "stream_usage": usage, "models": models, "error": error}))
"#;
        let started = Instant::now();
        let out = Command::new("python3").args(["-c", script, &server.v1(), MODEL_ID]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let r: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert!(!r["whole"].as_str().unwrap().is_empty(), "{r}");
        assert_eq!(r["whole"], r["streamed"], "{r}");
        assert_eq!(r["usage"], r["stream_usage"], "{r}");
        assert_eq!(r["models"], json!([MODEL_ID]));
        assert_eq!(r["error"], 404);
        eprintln!("python openai client: {:.1?}", started.elapsed());
    });
}
