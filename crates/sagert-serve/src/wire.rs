//! The OpenAI chat-completions wire format as a server reads and writes it:
//! request bodies into [`ChatRequest`]s, responses, chunks and error bodies.

use std::time::{SystemTime, UNIX_EPOCH};

use sagert_backend::{
    ChatMessage, ChatRequest, ChatResponse, ChatRole, FinishReason, JsonSchema, SamplingParams, Usage,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;

/// A chat-completions request body. Known fields only: unknown ones are
/// ignored, and the ones we recognise but cannot honour are rejected by
/// [`CompletionRequest::check_unsupported`].
#[derive(Debug, Deserialize)]
pub(crate) struct CompletionRequest {
    pub model: String,
    pub messages: Vec<WireMessage>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub n: Option<u32>,
    pub seed: Option<serde_json::Number>,
    pub stop: Option<Value>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub response_format: Option<ResponseFormat>,
    // Recognised, and rejected when they would change the answer.
    tools: Option<Value>,
    tool_choice: Option<Value>,
    functions: Option<Value>,
    function_call: Option<Value>,
    logit_bias: Option<Value>,
    logprobs: Option<bool>,
    top_logprobs: Option<u32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    audio: Option<Value>,
    prediction: Option<Value>,
}

/// One message; `content` is read by hand so that errors can say what is wrong.
#[derive(Debug, Deserialize)]
pub(crate) struct WireMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    json_schema: Option<JsonSchemaFormat>,
    /// llama.cpp's extension of `json_object`: the schema to constrain to.
    schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct JsonSchemaFormat {
    name: Option<String>,
    schema: Option<Value>,
}

/// Parse a request body, with the JSON path of the first problem in the error.
pub(crate) fn parse(body: &[u8]) -> Result<CompletionRequest, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let param = (path != ".").then(|| path.clone());
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("the request body is not valid JSON: {inner}")
        } else if path == "." {
            format!("invalid request body: {inner}")
        } else {
            format!("invalid value for `{path}`: {inner}")
        };
        ApiError::invalid(message, param)
    })
}

impl CompletionRequest {
    /// Fields we recognise but do not implement, when set to something other
    /// than their neutral value.
    pub(crate) fn check_unsupported(&self) -> Result<(), ApiError> {
        let set = |v: &Option<Value>| match v {
            None | Some(Value::Null) => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
            Some(Value::String(s)) => s != "none",
            Some(_) => true,
        };
        let unsupported = |field: &str, what: &str| {
            Err(ApiError::invalid(
                format!("`{field}` is not supported by this server: {what}"),
                Some(field.into()),
            ))
        };
        for (field, value) in [
            ("tools", &self.tools),
            ("tool_choice", &self.tool_choice),
            ("functions", &self.functions),
            ("function_call", &self.function_call),
        ] {
            if set(value) {
                return unsupported(field, "it does not call tools");
            }
        }
        if set(&self.logit_bias) {
            return unsupported("logit_bias", "it does not bias logits");
        }
        if self.logprobs == Some(true) || self.top_logprobs.is_some_and(|n| n > 0) {
            let field = if self.logprobs == Some(true) { "logprobs" } else { "top_logprobs" };
            return unsupported(field, "it does not return token log-probabilities");
        }
        for (field, value) in
            [("presence_penalty", self.presence_penalty), ("frequency_penalty", self.frequency_penalty)]
        {
            if value.is_some_and(|v| v != 0.0) {
                return unsupported(field, "only 0 is accepted");
            }
        }
        if set(&self.audio) {
            return unsupported("audio", "it answers in text only");
        }
        if set(&self.prediction) {
            return unsupported("prediction", "it does not use predicted outputs");
        }
        Ok(())
    }

    /// Whether the answer is streamed.
    pub(crate) fn streamed(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether a streamed answer ends with a usage chunk.
    pub(crate) fn include_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|o| o.include_usage)
    }

    /// The backend request this body asks for.
    pub(crate) fn to_chat_request(&self) -> Result<ChatRequest, ApiError> {
        self.check_unsupported()?;
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "`messages` must hold at least one message",
                Some("messages".into()),
            ));
        }
        let messages =
            self.messages.iter().enumerate().map(|(i, m)| m.to_message(i)).collect::<Result<Vec<_>, _>>()?;
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(ApiError::invalid(
                    format!("`temperature` must be between 0 and 2, got {t}"),
                    Some("temperature".into()),
                ));
            }
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ApiError::invalid(
                    format!("`top_p` must be in (0, 1], got {p}"),
                    Some("top_p".into()),
                ));
            }
        }
        let max_tokens = self.max_completion_tokens.or(self.max_tokens);
        if max_tokens == Some(0) {
            let field =
                if self.max_completion_tokens.is_some() { "max_completion_tokens" } else { "max_tokens" };
            return Err(ApiError::invalid(format!("`{field}` must be at least 1"), Some(field.into())));
        }
        let n = self.n.unwrap_or(1);
        if n == 0 {
            return Err(ApiError::invalid("`n` must be at least 1", Some("n".into())));
        }
        let seed = match &self.seed {
            None => None,
            // Negative seeds are as good as any: keep their bits.
            Some(s) => Some(s.as_u64().or_else(|| s.as_i64().map(|v| v as u64)).ok_or_else(|| {
                ApiError::invalid(format!("`seed` must be an integer, got {s}"), Some("seed".into()))
            })?),
        };
        let stop = match &self.stop {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(ApiError::invalid(
                        format!("`stop[{i}]` must be a string, got {other}"),
                        Some(format!("stop[{i}]")),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(ApiError::invalid(
                    format!("`stop` must be a string or an array of strings, got {other}"),
                    Some("stop".into()),
                ))
            }
        };
        let stop: Vec<String> = stop.into_iter().filter(|s| !s.is_empty()).collect();
        let schema = match &self.response_format {
            None => None,
            Some(f) => f.schema()?,
        };
        let mut request = ChatRequest::new(messages);
        request.params =
            SamplingParams { temperature: self.temperature, top_p: self.top_p, max_tokens, seed, stop, n };
        request.schema = schema;
        Ok(request)
    }
}

impl WireMessage {
    fn to_message(&self, i: usize) -> Result<ChatMessage, ApiError> {
        let role = match self.role.as_str() {
            "system" | "developer" => ChatRole::System,
            "user" => ChatRole::User,
            "assistant" => ChatRole::Assistant,
            other => {
                return Err(ApiError::invalid(
                    format!(
                        "`messages[{i}].role` is `{other}`; this server takes system, developer, user and assistant messages"
                    ),
                    Some(format!("messages[{i}].role")),
                ))
            }
        };
        let content = match &self.content {
            Value::String(s) => s.clone(),
            Value::Null if role == ChatRole::Assistant => String::new(),
            Value::Array(parts) => {
                let mut text = String::new();
                for (j, part) in parts.iter().enumerate() {
                    match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => text.push_str(t),
                        (kind, _) => {
                            return Err(ApiError::invalid(
                                format!(
                                    "`messages[{i}].content[{j}]` must be a text part {{\"type\": \"text\", \"text\": ...}}, got type {}",
                                    kind.unwrap_or("(none)")
                                ),
                                Some(format!("messages[{i}].content[{j}]")),
                            ))
                        }
                    }
                }
                text
            }
            other => {
                return Err(ApiError::invalid(
                    format!(
                        "`messages[{i}].content` must be a string or an array of text parts, got {other}"
                    ),
                    Some(format!("messages[{i}].content")),
                ))
            }
        };
        Ok(ChatMessage { role, content })
    }
}

impl ResponseFormat {
    fn schema(&self) -> Result<Option<JsonSchema>, ApiError> {
        let param = || Some("response_format".to_string());
        match self.kind.as_str() {
            "text" => Ok(None),
            "json_object" => Ok(Some(JsonSchema {
                name: "json_object".into(),
                schema: self.schema.clone().unwrap_or_else(|| json!({"type": "object"})),
            })),
            "json_schema" => {
                let Some(format) = &self.json_schema else {
                    return Err(ApiError::invalid(
                        "`response_format.json_schema` is required with type json_schema",
                        param(),
                    ));
                };
                let Some(schema) = &format.schema else {
                    return Err(ApiError::invalid(
                        "`response_format.json_schema.schema` is required",
                        Some("response_format.json_schema.schema".into()),
                    ));
                };
                if !schema.is_object() {
                    return Err(ApiError::invalid(
                        "`response_format.json_schema.schema` must be a JSON object",
                        Some("response_format.json_schema.schema".into()),
                    ));
                }
                Ok(Some(JsonSchema {
                    name: format.name.clone().unwrap_or_else(|| "response".into()),
                    schema: schema.clone(),
                }))
            }
            other => Err(ApiError::invalid(
                format!("`response_format.type` is `{other}`; this server takes text, json_object and json_schema"),
                Some("response_format.type".into()),
            )),
        }
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A fresh completion id, `chatcmpl-` and 24 random hex digits.
pub(crate) fn completion_id() -> String {
    format!("chatcmpl-{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..))
}

/// `finish_reason` as OpenAI writes it.
pub(crate) fn finish_reason(r: &FinishReason) -> String {
    match r {
        FinishReason::Stop => "stop".into(),
        FinishReason::Length => "length".into(),
        FinishReason::ContentFilter => "content_filter".into(),
        FinishReason::Other(s) => s.clone(),
    }
}

pub(crate) fn usage(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total(),
    })
}

/// The body of a whole (not streamed) answer.
pub(crate) fn completion(id: &str, created: u64, model: &str, response: &ChatResponse) -> Value {
    let choices: Vec<Value> = response
        .choices
        .iter()
        .enumerate()
        .map(|(index, c)| {
            json!({
                "index": index,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": null,
                "finish_reason": finish_reason(&c.finish_reason),
            })
        })
        .collect();
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage(&response.usage),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> Result<ChatRequest, ApiError> {
        parse(body.as_bytes())?.to_chat_request()
    }

    #[test]
    fn full_request_maps_to_chat_request() {
        let r = request(
            r#"{"model":"m","messages":[{"role":"developer","content":"Be brief."},
                {"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]}],
                "temperature":0,"top_p":0.9,"max_tokens":10,"max_completion_tokens":20,"n":2,"seed":-1,
                "stop":"END","user":"ignored","presence_penalty":0,
                "response_format":{"type":"json_schema","json_schema":{"name":"p","schema":{"type":"object"},"strict":true}}}"#,
        )
        .unwrap();
        assert_eq!(r.messages, vec![ChatMessage::system("Be brief."), ChatMessage::user("Hi there")]);
        assert_eq!(r.params.temperature, Some(0.0));
        assert_eq!(r.params.max_tokens, Some(20), "max_completion_tokens wins");
        assert_eq!((r.params.n, r.params.seed), (2, Some(u64::MAX)));
        assert_eq!(r.params.stop, vec!["END".to_string()]);
        assert_eq!(r.schema.unwrap(), JsonSchema { name: "p".into(), schema: json!({"type": "object"}) });
        let r = request(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"},"stop":["a","b"]}"#).unwrap();
        assert_eq!(r.schema.unwrap().schema, json!({"type": "object"}));
        assert_eq!(r.params.stop.len(), 2);
    }

    #[test]
    fn errors_name_the_field() {
        let message = |body: &str| request(body).unwrap_err().message;
        assert!(message("{\"model\": ").contains("not valid JSON"));
        assert!(message(r#"{"messages":[]}"#).contains("model"));
        assert!(
            message(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":"two"}"#).contains("`n`")
        );
        let m = message(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}"#,
        );
        assert!(m.contains("`tools`"), "{m}");
        let m = message(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true}"#);
        assert!(m.contains("`logprobs`"), "{m}");
        let m = message(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"logit_bias":{"1":5}}"#);
        assert!(m.contains("`logit_bias`"), "{m}");
        let m = message(r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#);
        assert!(m.contains("messages[0].role"), "{m}");
        let m = message(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#);
        assert!(m.contains("messages[0].content[0]"), "{m}");
        let m = message(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#);
        assert!(m.contains("temperature"), "{m}");
        let m = message(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"grammar"}}"#,
        );
        assert!(m.contains("response_format.type"), "{m}");
        // Neutral values of unsupported fields pass.
        request(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[],"logprobs":false,"tool_choice":"none","logit_bias":{}}"#).unwrap();
    }
}
