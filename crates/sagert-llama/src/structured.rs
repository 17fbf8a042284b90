//! Structured output in prompt mode, with the same contract as `sagert-openai`.
//!
//! [`schema_instructions`] go at the end of the system message (or into a new
//! one at the start). Each choice's text goes through [`extract_json`] and
//! [`validate`]; a failing choice gets one repair round (the conversation, the
//! bad answer as the assistant's turn, [`repair_instructions`] naming the
//! problem as the user's turn, `n = 1`). If that fails too, the call fails with
//! [`BackendError::Structured`]. Returned texts are the compact JSON of the
//! parsed values; the usage covers the repair rounds.
//!
//! Constrained decoding (llguidance) will replace this; until then
//! `capabilities().json_schema` is `false`.

use std::time::Instant;

use sagert_backend::json::{
    check_structured as check, repair_conversation as repair_messages, schema_instructions,
};
use sagert_backend::{
    BackendError, ChatMessage, ChatRequest, ChatResponse, ChatRole, Choice, JsonSchema, SamplingParams,
};

use crate::LlamaBackend;

/// Repair rounds per choice.
const REPAIR_ROUNDS: u32 = 1;

/// Answer a request that carries `schema`.
pub(crate) async fn chat(
    backend: &LlamaBackend,
    request: &ChatRequest,
    schema: &JsonSchema,
) -> Result<ChatResponse, BackendError> {
    let started = Instant::now();
    let model_id = &backend.options().model_id;
    let instructions = schema_instructions(schema);
    let to_backend = |e: crate::LlamaError| e.into_backend_error(model_id, started.elapsed());
    let (first, mut usage) = backend
        .generate(&with_instructions(&request.messages, &instructions), &request.params)
        .await
        .map_err(to_backend)?;
    let mut choices = Vec::with_capacity(first.len());
    for choice in first {
        let value = match check(&choice.text, &schema.schema) {
            Ok(value) => value,
            Err(problem) => {
                let repair = repair_messages(&request.messages, &choice.text, &problem);
                let params = SamplingParams { n: 1, ..request.params.clone() };
                let (repaired, repair_usage) = backend
                    .generate(&with_instructions(&repair, &instructions), &params)
                    .await
                    .map_err(to_backend)?;
                usage += repair_usage;
                let text = repaired.into_iter().next().map(|c| c.text).unwrap_or_default();
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
    Ok(ChatResponse { model: model_id.clone(), choices, usage })
}

/// `messages` with `instructions` appended to the first message when it is the
/// system message, or put before everything in a new system message.
fn with_instructions(messages: &[ChatMessage], instructions: &str) -> Vec<ChatMessage> {
    let mut out = messages.to_vec();
    match out.first_mut() {
        Some(first) if first.role == ChatRole::System => {
            first.content = format!("{}\n\n{instructions}", first.content);
        }
        _ => out.insert(0, ChatMessage::system(instructions)),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_join_the_system_message_or_make_one() {
        let joined = with_instructions(&[ChatMessage::system("Be brief."), ChatMessage::user("u")], "JSON!");
        assert_eq!(joined[0], ChatMessage::system("Be brief.\n\nJSON!"));
        assert_eq!(joined.len(), 2);
        let inserted = with_instructions(&[ChatMessage::user("u")], "JSON!");
        assert_eq!(inserted, vec![ChatMessage::system("JSON!"), ChatMessage::user("u")]);
    }
}
