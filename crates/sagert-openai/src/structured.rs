//! Structured output: every choice must be JSON that satisfies the request's
//! schema, whether or not the server constrained its decoding.
//!
//! Each choice's text goes through [`extract_json`] and [`validate`]. A choice that
//! fails gets one repair round: the conversation, the bad answer as the assistant's
//! turn, and [`repair_instructions`] naming the problem as the user's turn, sent with
//! `n = 1`. If the repaired answer fails too, the call fails with
//! [`BackendError::Structured`]. Returned texts are the canonical compact JSON of the
//! parsed values, and the usage covers the repair rounds.

use sagert_backend::json::{check_structured as check, repair_conversation, schema_instructions};
use sagert_backend::{BackendError, ChatRequest, ChatResponse, Choice, JsonSchema, SamplingParams};

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

/// The request of a repair round: the conversation, the bad answer, and the
/// instructions to fix it; one choice, the same schema and sampling otherwise.
fn repair_request(request: &ChatRequest, bad_answer: &str, problem: &str) -> ChatRequest {
    ChatRequest {
        messages: repair_conversation(&request.messages, bad_answer, problem),
        params: SamplingParams { n: 1, ..request.params.clone() },
        schema: request.schema.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sagert_backend::ChatMessage;

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
