//! The chat-completions logic: what a request asks for, what text answers it,
//! and the OpenAI-shaped JSON bodies, serialized straight into the
//! connection's reusable buffer.

use std::borrow::Cow;

use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::Reply;

/// The most choices one request may ask for (OpenAI's own limit).
const MAX_CHOICES: u32 = 128;

/// The fields of a chat-completions request that the mock looks at.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatRequest {
    messages: Vec<Message>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    response_format: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

/// Message content: a plain string or a list of parts, of which only the
/// text parts count.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

impl Content {
    fn words(&self) -> u64 {
        match self {
            Content::Text(text) => words(text),
            Content::Parts(parts) => parts.iter().filter_map(|part| part.text.as_deref()).map(words).sum(),
        }
    }

    fn text(&self) -> Cow<'_, str> {
        match self {
            Content::Text(text) => Cow::Borrowed(text),
            Content::Parts(parts) => Cow::Owned(
                parts.iter().filter_map(|part| part.text.as_deref()).collect::<Vec<_>>().join("\n"),
            ),
        }
    }
}

impl ChatRequest {
    /// Whether the request carries a (non-null) `response_format`.
    pub(crate) fn has_response_format(&self) -> bool {
        self.response_format.as_ref().is_some_and(|format| !format.is_null())
    }

    fn wants_json_schema(&self) -> bool {
        let kind = self.response_format.as_ref().and_then(|format| format.get("type"));
        kind.and_then(serde_json::Value::as_str) == Some("json_schema")
    }

    /// The text of the last `user` message, or "" when there is none.
    fn last_user_text(&self) -> Cow<'_, str> {
        let last = self.messages.iter().rev().find(|message| message.role == "user");
        last.and_then(|message| message.content.as_ref()).map_or(Cow::Borrowed(""), Content::text)
    }

    fn prompt_tokens(&self) -> u64 {
        self.messages.iter().map(|message| 4 + message.content.as_ref().map_or(0, Content::words)).sum()
    }
}

/// The computed answer to one request, before serialization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer<'a> {
    pub text: Cow<'a, str>,
    pub finish_reason: &'static str,
    pub n: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Decides the answer text: the first reply whose `when_contains` occurs in the
/// last user message, else a JSON echo for `json_schema` requests, else
/// `echo: <last user message>`; cut to `max_tokens` words. `Err` is the
/// message of a 400 answer.
pub(crate) fn answer<'a>(request: &'a ChatRequest, replies: &'a [Reply]) -> Result<Answer<'a>, String> {
    let n = request.n.unwrap_or(1);
    if !(1..=MAX_CHOICES).contains(&n) {
        return Err(format!("n must be between 1 and {MAX_CHOICES}, got {n}"));
    }
    let last = request.last_user_text();
    let mut text = match replies.iter().find(|reply| last.contains(reply.when_contains.as_str())) {
        Some(reply) if reply.content.contains(PROMPT_HASH) => {
            Cow::Owned(reply.content.replace(PROMPT_HASH, &prompt_hash(&last)))
        }
        Some(reply) => Cow::Borrowed(reply.content.as_str()),
        None if request.wants_json_schema() => Cow::Owned(serde_json::json!({ "echo": last }).to_string()),
        None => Cow::Owned(format!("echo: {last}")),
    };
    let mut finish_reason = "stop";
    let limit = request.max_completion_tokens.or(request.max_tokens);
    if let Some(limit) = limit.filter(|&limit| words(&text) > limit) {
        text = match text {
            Cow::Borrowed(text) => Cow::Borrowed(first_words(text, limit)),
            Cow::Owned(text) => Cow::Owned(first_words(&text, limit).to_owned()),
        };
        finish_reason = "length";
    }
    let completion_tokens = words(&text) * u64::from(n);
    Ok(Answer { finish_reason, n, prompt_tokens: request.prompt_tokens(), completion_tokens, text })
}

/// In a reply's content, replaced by [`prompt_hash`] of the last user message:
/// canned answers that still differ per prompt, deterministically.
pub const PROMPT_HASH: &str = "{prompt_hash}";

/// Eight hex digits of the FNV-1a hash of `text`.
pub fn prompt_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", (h >> 32) as u32 ^ h as u32)
}

/// The mock's token count: whitespace-separated words.
pub(crate) fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// `text` up to the end of its `count`-th word.
fn first_words(text: &str, count: u64) -> &str {
    let Some(last) = usize::try_from(count).ok().and_then(|count| count.checked_sub(1)) else {
        return "";
    };
    match text.split_whitespace().nth(last) {
        Some(word) => &text[..word.as_ptr() as usize - text.as_ptr() as usize + word.len()],
        None => text,
    }
}

/// Serializes a `chat.completion` object for `answer` into `out`.
pub(crate) fn write_completion(out: &mut Vec<u8>, id: u64, model: &str, answer: &Answer<'_>) {
    let body = Completion {
        id: MockId(id),
        object: "chat.completion",
        created: 0,
        model,
        choices: Choices { n: answer.n, content: &answer.text, finish_reason: answer.finish_reason },
        usage: Usage {
            prompt_tokens: answer.prompt_tokens,
            completion_tokens: answer.completion_tokens,
            total_tokens: answer.prompt_tokens + answer.completion_tokens,
        },
    };
    write_json(out, &body);
}

/// Serializes the `GET /v1/models` list, which holds the one configured model.
pub(crate) fn write_models(out: &mut Vec<u8>, model: &str) {
    let body = serde_json::json!({
        "object": "list",
        "data": [{ "id": model, "object": "model", "created": 0, "owned_by": "sagert-mock" }],
    });
    write_json(out, &body);
}

/// Serializes an OpenAI-style error: `{"error":{"message","type","param","code"}}`.
pub(crate) fn write_error(out: &mut Vec<u8>, kind: &str, message: &str, param: Option<&str>) {
    let body = ErrorBody { error: ErrorDetail { message, kind, param, code: None } };
    write_json(out, &body);
}

/// A body that announces a completion and stops mid-string: complete bytes
/// (its Content-Length is right) that are not JSON.
pub(crate) const MALFORMED_BODY: &[u8] =
    br#"{"id":"chatcmpl-mock-malformed","object":"chat.completion","choices": [{"index":0,"message":{"role":"assistant","content":"this body stops he"#;

fn write_json<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    // Serializing these plain structs into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}

#[derive(Serialize)]
struct Completion<'a> {
    id: MockId,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Choices<'a>,
    usage: Usage,
}

/// `chatcmpl-mock-N`, formatted straight into the output.
struct MockId(u64);

impl Serialize for MockId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("chatcmpl-mock-{}", self.0))
    }
}

/// `n` identical choices, serialized without building a list.
struct Choices<'a> {
    n: u32,
    content: &'a str,
    finish_reason: &'static str,
}

impl Serialize for Choices<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.n as usize))?;
        for index in 0..self.n {
            seq.serialize_element(&Choice {
                index,
                message: AssistantMessage { role: "assistant", content: self.content },
                finish_reason: self.finish_reason,
            })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> ChatRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn first_words_keeps_original_spacing() {
        assert_eq!(first_words("  a  b\tc d", 3), "  a  b\tc");
        assert_eq!(first_words("a b", 5), "a b");
        assert_eq!(first_words("a b", 0), "");
    }

    #[test]
    fn counts_words_in_text_parts_and_four_per_message() {
        let request = request(serde_json::json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "one two"}, {"type": "image_url"}, {"type": "text", "text": "three"}]},
            {"role": "assistant", "content": null},
        ]}));
        assert_eq!(request.prompt_tokens(), (2 + 4) + (3 + 4) + 4);
        assert_eq!(request.last_user_text(), "one two\nthree");
    }

    #[test]
    fn reply_order_decides_and_only_the_last_user_message_counts() {
        let replies = [
            Reply { when_contains: "beta".into(), content: "B".into() },
            Reply { when_contains: "alpha".into(), content: "A".into() },
        ];
        let request = request(serde_json::json!({"messages": [
            {"role": "user", "content": "gamma"},
            {"role": "user", "content": "alpha and beta"},
        ]}));
        assert_eq!(answer(&request, &replies).unwrap().text, "B");
        let request2 = serde_json::json!({"messages": [
            {"role": "user", "content": "alpha"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "gamma"},
        ]});
        let request2: ChatRequest = serde_json::from_value(request2).unwrap();
        assert_eq!(answer(&request2, &replies).unwrap().text, "echo: gamma");
    }

    #[test]
    fn max_tokens_cuts_and_reports_length() {
        let request = request(serde_json::json!({
            "messages": [{"role": "user", "content": "a b c"}], "n": 2, "max_tokens": 2,
        }));
        let answer = answer(&request, &[]).unwrap();
        assert_eq!(answer.text, "echo: a");
        assert_eq!(answer.finish_reason, "length");
        assert_eq!(answer.completion_tokens, 4);
    }

    #[test]
    fn rejects_zero_choices() {
        let request = request(serde_json::json!({"messages": [], "n": 0}));
        assert!(answer(&request, &[]).unwrap_err().contains("n must be"));
    }
}
