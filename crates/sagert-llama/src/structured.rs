//! Structured output, with the same contract as `sagert-openai`.
//!
//! [`schema_instructions`] go at the end of the system message (or into a new
//! one at the start). Each choice's text goes through [`extract_json`] and
//! [`validate`]; a failing choice gets one repair round (the conversation, the
//! bad answer as the assistant's turn, [`repair_instructions`] naming the
//! problem as the user's turn, `n = 1`). If that fails too, the call fails with
//! [`BackendError::Structured`]. Returned texts are the compact JSON of the
//! parsed values; the usage covers the repair rounds.
//!
//! With [`crate::LlamaOptions::constrained_decoding`] (the default) every
//! generation, the repair round included, is also decoded under the schema's
//! grammar ([`crate::constrained`]), so a choice fails the check only when
//! `max_tokens` cut it short. The instructions stay in the prompt even then:
//! the grammar fixes the form, the instructions tell the model what the
//! fields are for.

use std::time::Instant;

use sagert_backend::json::{check_or_repair, schema_instructions};
use sagert_backend::{BackendError, ChatMessage, ChatRequest, ChatResponse, ChatRole, JsonSchema};

use crate::LlamaBackend;

/// Answer a request that carries `schema`.
pub(crate) async fn chat(
    backend: &LlamaBackend,
    request: &ChatRequest,
    schema: &JsonSchema,
) -> Result<ChatResponse, BackendError> {
    let started = Instant::now();
    let model_id = &backend.options().model_id;
    let instructions = schema_instructions(schema);
    let constraint = backend.options().constrained_decoding.then_some(&schema.schema);
    let to_backend = |e: crate::LlamaError| e.into_backend_error(model_id, started.elapsed());
    let (first, usage) = backend
        .generate(&with_instructions(&request.messages, &instructions), &request.params, None, constraint)
        .await
        .map_err(to_backend)?;
    let (choices, repairs) = check_or_repair(first, request, schema, |round| {
        let instructions = &instructions;
        async move {
            let (repaired, usage) = backend
                .generate(&with_instructions(&round.messages, instructions), &round.params, None, constraint)
                .await
                .map_err(to_backend)?;
            Ok((repaired.into_iter().next().map(|c| c.text).unwrap_or_default(), usage))
        }
    })
    .await?;
    let mut usage = usage;
    usage += repairs;
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
