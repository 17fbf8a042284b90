use serde::{Deserialize, Serialize};

/// Who speaks a chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    /// Instructions that frame the conversation.
    System,
    /// The user's turn.
    User,
    /// The model's turn.
    Assistant,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: ChatRole,
    /// What is said.
    pub content: String,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage { role: ChatRole::System, content: content.into() }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage { role: ChatRole::User, content: content.into() }
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        ChatMessage { role: ChatRole::Assistant, content: content.into() }
    }
}

/// Sampling parameters. A field left `None` takes the backend's default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature; 0 is greedy.
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    pub top_p: Option<f32>,
    /// Most new tokens to generate.
    pub max_tokens: Option<u32>,
    /// Seed for reproducible sampling, where the backend honours one.
    pub seed: Option<u64>,
    /// Strings that end generation; they are not part of the returned text.
    pub stop: Vec<String>,
    /// Number of choices to return.
    pub n: u32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: None,
            top_p: None,
            max_tokens: None,
            seed: None,
            stop: Vec::new(),
            n: 1,
        }
    }
}

/// A JSON schema the output must satisfy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JsonSchema {
    /// A short name, sent as `response_format.json_schema.name`.
    pub name: String,
    /// The schema itself.
    pub schema: serde_json::Value,
}

/// A chat-completion request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// How to sample.
    #[serde(default)]
    pub params: SamplingParams,
    /// If set, every returned choice is JSON that satisfies this schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<JsonSchema>,
}

impl ChatRequest {
    /// A request with default sampling and no schema.
    pub fn new(messages: Vec<ChatMessage>) -> Self {
        ChatRequest { messages, params: SamplingParams::default(), schema: None }
    }

    /// A rough count of prompt tokens (4 characters a token, plus a few per
    /// message), for rate limiting and estimates before the server has counted.
    pub fn estimated_prompt_tokens(&self) -> u64 {
        self.messages.iter().map(|m| m.content.len() as u64 / 4 + 4).sum::<u64>() + 2
    }
}

/// Why generation stopped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural end or a stop string.
    Stop,
    /// The token limit.
    Length,
    /// The server's content filter.
    ContentFilter,
    /// Anything else the server said, kept verbatim.
    #[serde(untagged)]
    Other(String),
}

impl FinishReason {
    /// Map an OpenAI-style `finish_reason` string.
    pub fn from_api(s: &str) -> Self {
        match s {
            "stop" | "eos" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "content_filter" => FinishReason::ContentFilter,
            other => FinishReason::Other(other.to_string()),
        }
    }
}

/// One generated answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// The generated text.
    pub text: String,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
}

/// Token counts of one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated, over all choices.
    pub completion_tokens: u64,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, rhs: Usage) {
        self.prompt_tokens += rhs.prompt_tokens;
        self.completion_tokens += rhs.completion_tokens;
    }
}

/// The answer to a [`ChatRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The model that answered, as the server named it.
    pub model: String,
    /// One or more answers (`n` in the request).
    pub choices: Vec<Choice>,
    /// Token counts, summed over any retries that the backend had to pay for.
    pub usage: Usage,
}

impl ChatResponse {
    /// The first choice's text, or `""` when there is none.
    pub fn text(&self) -> &str {
        self.choices.first().map(|c| c.text.as_str()).unwrap_or("")
    }
}

/// What a backend can do natively.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Decoding constrained to a JSON schema (`response_format` or grammar).
    pub json_schema: bool,
    /// Log-prob scoring through [`crate::LogProbScorer`].
    pub logprobs: bool,
}

/// A completion to score given its prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreRequest {
    /// The conversation before the completion; it is rendered with the model's
    /// chat template and an open assistant turn.
    pub prompt: Vec<ChatMessage>,
    /// The text whose tokens are scored.
    pub completion: String,
}

/// The log-probability of one completion.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreResult {
    /// Sum of the completion tokens' natural-log probabilities.
    pub sum_logprob: f64,
    /// `sum_logprob / tokens`.
    pub mean_logprob: f64,
    /// Number of completion tokens scored.
    pub tokens: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reason_maps_and_round_trips() {
        assert_eq!(FinishReason::from_api("length"), FinishReason::Length);
        assert_eq!(FinishReason::from_api("tool_calls"), FinishReason::Other("tool_calls".into()));
        for r in [FinishReason::Stop, FinishReason::Length, FinishReason::Other("x".into())] {
            let j = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<FinishReason>(&j).unwrap(), r);
        }
        assert_eq!(serde_json::to_string(&FinishReason::Stop).unwrap(), "\"stop\"");
    }

    #[test]
    fn request_defaults_deserialize() {
        let r: ChatRequest =
            serde_json::from_str(r#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(r.params.n, 1);
        assert!(r.schema.is_none());
        assert_eq!(r.messages[0], ChatMessage::user("hi"));
    }
}
