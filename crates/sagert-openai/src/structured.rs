//! Structured output: every choice must be JSON that satisfies the request's
//! schema, whether or not the server constrained its decoding.
//!
//! Each choice's text goes through [`extract_json`] and [`validate`]. A choice that
//! fails gets one repair round: the conversation, the bad answer as the assistant's
//! turn, and [`repair_instructions`] naming the problem as the user's turn, sent with
//! `n = 1`. If the repaired answer fails too, the call fails with
//! [`BackendError::Structured`]. Returned texts are the canonical compact JSON of the
//! parsed values, and the usage covers the repair rounds.

use sagert_backend::json::{extract_json, repair_instructions, schema_instructions, validate};
use sagert_backend::{
    BackendError, ChatMessage, ChatRequest, ChatResponse, Choice, JsonSchema, SamplingParams,
};
use serde_json::Value;

use crate::backend::{Call, OpenAiBackend};

/// Repair rounds per choice.
const REPAIR_ROUNDS: u32 = 1;

/// Answer a request that carries `schema`.
pub(crate) async fn chat(
    backend: &OpenAiBackend,
    request: &ChatRequest,
    schema: &JsonSchema,
) -> Result<ChatResponse, BackendError> {
    let instructions = schema_instructions(schema);
    let first = backend.complete(&Call { request, instructions: &instructions }).await?;
    let mut usage = first.usage;
    let mut choices = Vec::with_capacity(first.choices.len());
    for choice in first.choices {
        let value = match check(&choice.text, &schema.schema) {
            Ok(value) => value,
            Err(problem) => {
                let repair = repair_request(request, &choice.text, &problem);
                let repaired =
                    backend.complete(&Call { request: &repair, instructions: &instructions }).await?;
                usage += repaired.usage;
                let text = repaired.choices.into_iter().next().map(|c| c.text).unwrap_or_default();
                check(&text, &schema.schema).map_err(|message| BackendError::Structured {
                    schema: schema.name.clone(),
                    repairs: REPAIR_ROUNDS,
                    message,
                    raw: text.clone(),
                })?
            }
        };
        choices.push(Choice { text: value.to_string(), finish_reason: choice.finish_reason });
    }
    Ok(ChatResponse { model: first.model, choices, usage })
}

/// The JSON value in `text`, if it satisfies `schema`; otherwise what is wrong,
/// worded for the model to fix.
fn check(text: &str, schema: &Value) -> Result<Value, String> {
    let value = extract_json(text).ok_or_else(|| {
        if text.trim().is_empty() {
            "the answer was empty; no JSON value was found".to_string()
        } else {
            "no JSON value could be parsed from the answer".to_string()
        }
    })?;
    validate(&value, schema)
        .map_err(|violation| format!("the JSON does not match the schema {violation}"))?;
    Ok(value)
}

/// The request of a repair round: the conversation, the bad answer, and the
/// instructions to fix it; one choice, the same schema and sampling otherwise.
fn repair_request(request: &ChatRequest, bad_answer: &str, problem: &str) -> ChatRequest {
    let mut messages = Vec::with_capacity(request.messages.len() + 2);
    messages.extend_from_slice(&request.messages);
    messages.push(ChatMessage::assistant(bad_answer));
    messages.push(ChatMessage::user(repair_instructions(problem)));
    ChatRequest {
        messages,
        params: SamplingParams { n: 1, ..request.params.clone() },
        schema: request.schema.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn check_reports_parse_and_schema_problems() {
        let schema =
            json!({"type": "object", "required": ["label"], "properties": {"label": {"type": "string"}}});
        assert_eq!(check("Sure: {\"label\": \"safe\"}", &schema).unwrap(), json!({"label": "safe"}));
        assert!(check("no json", &schema).unwrap_err().contains("no JSON value"));
        assert!(check("", &schema).unwrap_err().contains("empty"));
        let e = check("{\"label\": 3}", &schema).unwrap_err();
        assert_eq!(e, "the JSON does not match the schema at /label: expected string, got number");
    }

    #[test]
    fn repair_request_extends_the_conversation() {
        let mut request = ChatRequest::new(vec![ChatMessage::system("s"), ChatMessage::user("u")]);
        request.params.n = 3;
        request.params.temperature = Some(0.5);
        let repair = repair_request(&request, "bad", "at /x: wrong");
        assert_eq!(repair.messages.len(), 4);
        assert_eq!(repair.messages[2], ChatMessage::assistant("bad"));
        assert!(repair.messages[3].content.contains("at /x: wrong"));
        assert_eq!(repair.params.n, 1);
        assert_eq!(repair.params.temperature, Some(0.5));
    }
}
