//! Structured output: every choice must be JSON that satisfies the request's
//! schema, whether or not the server constrained its decoding.
//!
//! Each choice's text goes through [`extract_json`] and [`validate`]. A choice that
//! fails gets one repair round: the conversation, the bad answer as the assistant's
//! turn, and [`repair_instructions`] naming the problem as the user's turn, sent with
//! `n = 1`. If the repaired answer fails too, the call fails with
//! [`BackendError::Structured`]. Returned texts are the canonical compact JSON of the
//! parsed values, and the usage covers the repair rounds.

use sagert_backend::json::{check_or_repair, schema_instructions};
use sagert_backend::{BackendError, ChatRequest, ChatResponse, JsonSchema};

use crate::backend::{Call, OpenAiBackend};

/// Answer a request that carries `schema`.
pub(crate) async fn chat(
    backend: &OpenAiBackend,
    request: &ChatRequest,
    schema: &JsonSchema,
) -> Result<ChatResponse, BackendError> {
    let instructions = schema_instructions(schema);
    let first = backend.complete(&Call { request, instructions: &instructions }).await?;
    let (choices, repairs) = check_or_repair(first.choices, request, schema, |round| {
        let instructions = &instructions;
        async move {
            let repaired = backend.complete(&Call { request: &round, instructions }).await?;
            let text = repaired.choices.into_iter().next().map(|c| c.text).unwrap_or_default();
            Ok((text, repaired.usage))
        }
    })
    .await?;
    let mut usage = first.usage;
    usage += repairs;
    Ok(ChatResponse { model: first.model, choices, usage })
}
