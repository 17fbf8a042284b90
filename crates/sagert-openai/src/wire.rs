//! The OpenAI chat-completions wire format: the request body, the response body,
//! error bodies and the `Retry-After` header, as OpenAI, vLLM, Ollama and
//! llama.cpp's server write them.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sagert_backend::{ChatMessage, ChatRole, Choice, FinishReason, JsonSchema, SamplingParams, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::settings::MAX_RETRY_AFTER;

/// Longest server error message kept in an error, in characters.
pub(crate) const MAX_ERROR_MESSAGE: usize = 300;

/// A chat-completions request body. `None` fields, an empty `stop` and `n = 1` are
/// left out, so that servers apply their own defaults and old servers that do not
/// know a field are not bothered with it.
#[derive(Serialize)]
pub(crate) struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "is_one")]
    n: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormat<'a>>,
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: ChatRole,
    content: Cow<'a, str>,
}

#[derive(Serialize)]
struct ResponseFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    json_schema: Option<JsonSchemaFormat<'a>>,
    /// llama.cpp's `json_object` extension: decoding constrained to this schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    schema: Option<&'a Value>,
}

#[derive(Serialize)]
struct JsonSchemaFormat<'a> {
    name: Cow<'a, str>,
    schema: &'a Value,
    strict: bool,
}

/// How a request asks for structured output, if at all.
#[derive(Clone, Copy)]
pub(crate) enum StructuredAsk<'a> {
    /// No schema.
    None,
    /// `response_format: json_schema`.
    ResponseFormat(&'a JsonSchema),
    /// The given instructions appended to the system message.
    Prompt(&'a str),
    /// `response_format: json_object` with the schema, and the instructions.
    JsonObject(&'a JsonSchema, &'a str),
}

impl<'a> StructuredAsk<'a> {
    /// Whether the body carries a `response_format`.
    pub(crate) fn sends_response_format(&self) -> bool {
        matches!(self, StructuredAsk::ResponseFormat(_) | StructuredAsk::JsonObject(..))
    }

    /// The instructions put into the system message, if any.
    pub(crate) fn instructions(self) -> Option<&'a str> {
        match self {
            StructuredAsk::Prompt(i) | StructuredAsk::JsonObject(_, i) => Some(i),
            _ => None,
        }
    }
}

impl<'a> WireRequest<'a> {
    /// The body for `messages` sent to `model`.
    pub(crate) fn new(
        model: &'a str,
        messages: &'a [ChatMessage],
        params: &'a SamplingParams,
        structured: StructuredAsk<'a>,
    ) -> Self {
        let mut wire: Vec<WireMessage<'a>> = Vec::with_capacity(messages.len() + 1);
        wire.extend(
            messages.iter().map(|m| WireMessage { role: m.role, content: Cow::Borrowed(&m.content) }),
        );
        let mut response_format = None;
        match structured {
            StructuredAsk::None => {}
            StructuredAsk::ResponseFormat(schema) => {
                response_format = Some(ResponseFormat {
                    kind: "json_schema",
                    json_schema: Some(JsonSchemaFormat {
                        name: schema_format_name(&schema.name),
                        schema: &schema.schema,
                        strict: true,
                    }),
                    schema: None,
                });
            }
            StructuredAsk::JsonObject(schema, _) => {
                response_format = Some(ResponseFormat {
                    kind: "json_object",
                    json_schema: None,
                    schema: Some(&schema.schema),
                });
            }
            StructuredAsk::Prompt(_) => {}
        }
        if let Some(instructions) = structured.instructions() {
            match wire.first_mut() {
                Some(first) if first.role == ChatRole::System => {
                    first.content = Cow::Owned(format!("{}\n\n{instructions}", first.content));
                }
                _ => wire
                    .insert(0, WireMessage { role: ChatRole::System, content: Cow::Borrowed(instructions) }),
            }
        }
        WireRequest {
            model,
            messages: wire,
            temperature: params.temperature,
            top_p: params.top_p,
            max_tokens: params.max_tokens,
            seed: params.seed,
            stop: &params.stop,
            n: params.n,
            response_format,
        }
    }

    /// The body as JSON bytes.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        // Strings, numbers and `Value`s: serialization cannot fail.
        serde_json::to_vec(self).expect("a chat request always serializes")
    }
}

/// OpenAI requires `json_schema.name` to match `^[a-zA-Z0-9_-]{1,64}$`.
fn schema_format_name(name: &str) -> Cow<'_, str> {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !name.is_empty() && name.len() <= 64 && name.chars().all(ok) {
        return Cow::Borrowed(name);
    }
    let cleaned: String = name.chars().map(|c| if ok(c) { c } else { '_' }).take(64).collect();
    Cow::Owned(if cleaned.is_empty() { "output".to_string() } else { cleaned })
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<WireChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    message: Option<WireResponseMessage>,
    /// The legacy completions field, which a few servers still fill.
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireResponseMessage {
    #[serde(default)]
    content: Option<Content>,
}

/// Message content: a string, or (rarely, in answers) an array of parts.
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize)]
struct ContentPart {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// A parsed successful response.
#[derive(Debug)]
pub(crate) struct ParsedResponse {
    /// The model the server says answered.
    pub model: Option<String>,
    /// The answers, in index order.
    pub choices: Vec<Choice>,
    /// Prompt and completion tokens, where the server gave both.
    pub usage: Option<Usage>,
}

/// Why a 2xx body could not be used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BodyProblem {
    /// The JSON ended early: the body was cut.
    Truncated(String),
    /// Complete, but not a chat-completions response.
    Malformed(String),
}

/// Parse a 2xx response body.
pub(crate) fn parse_response(body: &[u8]) -> Result<ParsedResponse, BodyProblem> {
    let response: WireResponse = serde_json::from_slice(body).map_err(|e| {
        let what = format!("response body is not valid JSON ({e}); body starts: {}", snippet(body));
        match e.classify() {
            serde_json::error::Category::Eof => BodyProblem::Truncated(what),
            _ => BodyProblem::Malformed(what),
        }
    })?;
    let Some(mut choices) = response.choices.filter(|c| !c.is_empty()) else {
        let detail = match &response.error {
            Some(error) => format!("error in a successful response: {}", error_text(error)),
            None => format!("response has no choices; body starts: {}", snippet(body)),
        };
        return Err(BodyProblem::Malformed(detail));
    };
    choices.sort_by_key(|c| c.index.unwrap_or(0));
    let choices = choices
        .into_iter()
        .map(|c| Choice {
            text: match c.message.and_then(|m| m.content) {
                Some(Content::Text(text)) => text,
                Some(Content::Parts(parts)) => parts.into_iter().filter_map(|p| p.text).collect(),
                None => c.text.unwrap_or_default(),
            },
            finish_reason: match c.finish_reason.as_deref() {
                Some(reason) => FinishReason::from_api(reason),
                None => FinishReason::Other("unknown".into()),
            },
        })
        .collect();
    let usage = response.usage.and_then(|u| match (u.prompt_tokens, u.completion_tokens) {
        (Some(prompt_tokens), Some(completion_tokens)) => Some(Usage { prompt_tokens, completion_tokens }),
        _ => None,
    });
    Ok(ParsedResponse { model: response.model, choices, usage })
}

/// The start of a body, for messages.
fn snippet(body: &[u8]) -> String {
    truncate_chars(String::from_utf8_lossy(body).trim(), 120)
}

/// Cut `text` to `max` characters, marking the cut.
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// The message of an error body, in any of the shapes servers use:
/// `{"error": {"message": ..}}` (OpenAI, llama.cpp), `{"error": ".."}` (Ollama),
/// `{"message": ..}` (vLLM), `{"detail": ..}` (FastAPI servers); otherwise the body
/// itself. Cut to [`MAX_ERROR_MESSAGE`] characters.
pub(crate) fn error_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(value) => {
            let found = ["error", "message", "detail"].iter().find_map(|k| value.get(k));
            match found {
                Some(inner) => error_text(inner),
                None => value.to_string(),
            }
        }
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    };
    let text = if text.is_empty() { "(empty body)".to_string() } else { text };
    truncate_chars(&text, MAX_ERROR_MESSAGE)
}

fn error_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Object(map) => match map.get("message") {
            Some(Value::String(s)) => s.clone(),
            _ => value.to_string(),
        },
        other => other.to_string(),
    }
}

/// Whether an error body says that `response_format` / JSON-schema output is
/// not accepted. Deliberately loose: servers word it in many ways, and a false
/// positive only costs one resend in prompt mode.
pub(crate) fn rejects_response_format(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    ["response_format", "json_schema", "json schema", "not supported", "unsupported", "structured output"]
        .iter()
        .any(|marker| text.contains(marker))
}

/// Whether a 429 body says the account's quota or credit is spent (OpenAI's
/// `insufficient_quota`), which waiting does not fix.
pub(crate) fn is_quota_exhausted(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    text.contains("insufficient_quota")
}

/// A `Retry-After` value: delay-seconds (integer or decimal) or an HTTP-date
/// (`Sun, 06 Nov 1994 08:49:37 GMT`). Capped at [`MAX_RETRY_AFTER`]; a date in the
/// past is zero.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else if let Some(seconds) = value.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0) {
        Duration::from_secs_f64(seconds.min(MAX_RETRY_AFTER.as_secs_f64()))
    } else {
        let at = UNIX_EPOCH + Duration::from_secs(parse_http_date(value)?);
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Seconds since the epoch of an IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(value: &str) -> Option<u64> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_weekday, day, month, year, time, zone] = parts.as_slice() else { return None };
    if !zone.eq_ignore_ascii_case("GMT") && !zone.eq_ignore_ascii_case("UTC") {
        return None;
    }
    const MONTHS: [&str; 12] =
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as u64 + 1;
    let day: u64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let year: u64 = year.parse().ok().filter(|y| *y >= 1970)?;
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days from 1970-01-01 to the given date (Howard Hinnant's algorithm), for years
/// from 1970 on.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(messages: &[ChatMessage], params: &SamplingParams, ask: StructuredAsk<'_>) -> Value {
        serde_json::from_slice(&WireRequest::new("m", messages, params, ask).to_bytes()).unwrap()
    }

    #[test]
    fn request_leaves_out_unset_fields() {
        let messages = [ChatMessage::user("hi")];
        let b = body(&messages, &SamplingParams::default(), StructuredAsk::None);
        assert_eq!(b, json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        let params = SamplingParams {
            temperature: Some(0.7),
            top_p: Some(0.9),
            max_tokens: Some(64),
            seed: Some(7),
            stop: vec!["END".into()],
            n: 2,
        };
        let b = body(&messages, &params, StructuredAsk::None);
        assert_eq!(b["temperature"], json!(0.7));
        assert_eq!(b["top_p"], json!(0.9));
        assert_eq!(b["max_tokens"], json!(64));
        assert_eq!(b["seed"], json!(7));
        assert_eq!(b["stop"], json!(["END"]));
        assert_eq!(b["n"], json!(2));
    }

    #[test]
    fn structured_asks() {
        let schema = JsonSchema { name: "my schema!".into(), schema: json!({"type": "object"}) };
        let params = SamplingParams::default();
        let with_system = [ChatMessage::system("Be brief."), ChatMessage::user("hi")];
        let b = body(&with_system, &params, StructuredAsk::ResponseFormat(&schema));
        assert_eq!(
            b["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "my_schema_", "schema": {"type": "object"}, "strict": true}})
        );
        assert_eq!(b["messages"][0]["content"], "Be brief.");
        let b = body(&with_system, &params, StructuredAsk::Prompt("ONLY JSON"));
        assert!(b.get("response_format").is_none());
        assert_eq!(b["messages"][0]["content"], "Be brief.\n\nONLY JSON");
        let without = [ChatMessage::user("hi")];
        let b = body(&without, &params, StructuredAsk::Prompt("ONLY JSON"));
        assert_eq!(b["messages"][0], json!({"role": "system", "content": "ONLY JSON"}));
        assert_eq!(b["messages"][1], json!({"role": "user", "content": "hi"}));
    }

    #[test]
    fn parses_responses_of_several_servers() {
        let openai = br#"{"id":"x","model":"gpt-4o-mini","choices":[
            {"index":1,"message":{"role":"assistant","content":"b"},"finish_reason":"length"},
            {"index":0,"message":{"role":"assistant","content":"a"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
        let r = parse_response(openai).unwrap();
        assert_eq!(r.model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(r.choices[0].text, "a");
        assert_eq!(r.choices[1].finish_reason, FinishReason::Length);
        assert_eq!(r.usage, Some(Usage { prompt_tokens: 5, completion_tokens: 7 }));
        // No usage, null content, no finish reason.
        let sparse = br#"{"choices":[{"message":{"content":null}}]}"#;
        let r = parse_response(sparse).unwrap();
        assert_eq!(r.usage, None);
        assert_eq!(r.choices[0].text, "");
        assert_eq!(r.choices[0].finish_reason, FinishReason::Other("unknown".into()));
        let parts = br#"{"choices":[{"message":{"content":[{"type":"text","text":"x"},{"text":"y"}]}}]}"#;
        assert_eq!(parse_response(parts).unwrap().choices[0].text, "xy");
    }

    #[test]
    fn classifies_bad_bodies() {
        assert!(matches!(parse_response(br#"{"choices":[{"mess"#), Err(BodyProblem::Truncated(_))));
        assert!(matches!(parse_response(b"<html>oops</html>"), Err(BodyProblem::Malformed(_))));
        assert!(matches!(parse_response(br#"{"choices":[]}"#), Err(BodyProblem::Malformed(_))));
        let Err(BodyProblem::Malformed(m)) = parse_response(br#"{"error":{"message":"model crashed"}}"#)
        else {
            panic!("expected malformed")
        };
        assert!(m.contains("model crashed"), "{m}");
    }

    #[test]
    fn error_messages_of_several_servers() {
        assert_eq!(error_message(br#"{"error":{"message":"bad key","type":"x"}}"#), "bad key");
        assert_eq!(error_message(br#"{"error":"model not found"}"#), "model not found");
        assert_eq!(error_message(br#"{"object":"error","message":"too long","code":400}"#), "too long");
        assert!(
            error_message(br#"{"detail":[{"loc":["body","response_format"]}]}"#).contains("response_format")
        );
        assert_eq!(error_message(b"  Bad Gateway \n"), "Bad Gateway");
        assert_eq!(error_message(b""), "(empty body)");
        let long = "x".repeat(1000);
        assert_eq!(error_message(long.as_bytes()).chars().count(), MAX_ERROR_MESSAGE + 1);
    }

    #[test]
    fn response_format_rejections() {
        assert!(rejects_response_format(
            br#"{"error":{"message":"response_format json_schema is not supported"}}"#
        ));
        assert!(rejects_response_format(br#"{"detail":[{"loc":["body","response_format","type"]}]}"#));
        assert!(rejects_response_format(b"Unsupported parameter"));
        assert!(!rejects_response_format(br#"{"error":"context length exceeded"}"#));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 1.5 ", now), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("99999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT"), Some(951_825_600));
    }
}
