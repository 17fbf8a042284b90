//! `sagert batch`: run a JSONL file of prompts through one role, resumably.
//!
//! Each input line is a work item in the store (stage `batch`). A killed batch,
//! run again with the same run directory, skips what is done, answers from the
//! call store what was paid for, and sends only what is left: nothing is lost,
//! duplicated, or paid twice. The output file is written from the store at the
//! end, atomically (a temporary file renamed into place).

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sagert_backend::{BackendError, ChatMessage, ChatRequest, JsonSchema};
use sagert_store::{ItemState, Store, WorkItem};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::client::{now_ms, RoleClient};
use crate::error::EngineError;
use crate::io::{read_text, write_atomic};

/// The stage name batch items are stored under.
pub const STAGE: &str = "batch";

/// One prompt of a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchInput {
    /// The item's id: the input's `id`, or its line number.
    pub id: String,
    /// The conversation to answer.
    pub messages: Vec<ChatMessage>,
}

/// Read a batch file: JSONL, one object per line, with `prompt` (a string) or
/// `messages` (a list of `{role, content}`), an optional `system` string and an
/// optional `id` (string or number; the line number when absent). Blank lines
/// are skipped. Every error names the file, the line and the field.
pub fn read_batch_input(path: &Path) -> Result<Vec<BatchInput>, EngineError> {
    let file = path.display().to_string();
    let text = read_text(path)?;
    let bad = |line: usize, field: &str, message: String| EngineError::Input {
        file: file.clone(),
        line,
        field: field.to_string(),
        message,
    };
    let mut inputs = Vec::new();
    let mut seen = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(raw).map_err(|e| bad(line, "-", format!("not valid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(bad(line, "-", "expected a JSON object".into()));
        };
        for key in obj.keys() {
            if !["id", "prompt", "messages", "system"].contains(&key.as_str()) {
                return Err(bad(line, key, "unknown field (expected id, prompt, messages, system)".into()));
            }
        }
        let id = match obj.get("id") {
            None | Some(Value::Null) => line.to_string(),
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(bad(line, "id", "must be a non-empty string or a number".into())),
        };
        if !seen.insert(id.clone()) {
            return Err(bad(line, "id", format!("duplicate id `{id}`")));
        }
        let mut messages = Vec::new();
        match obj.get("system") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => messages.push(ChatMessage::system(s.clone())),
            Some(_) => return Err(bad(line, "system", "must be a string".into())),
        }
        match (obj.get("prompt"), obj.get("messages")) {
            (Some(_), Some(_)) => {
                return Err(bad(line, "prompt", "give either prompt or messages, not both".into()))
            }
            (Some(Value::String(p)), None) if !p.trim().is_empty() => {
                messages.push(ChatMessage::user(p.clone()))
            }
            (Some(_), None) => return Err(bad(line, "prompt", "must be a non-empty string".into())),
            (None, Some(m)) => {
                let list: Vec<ChatMessage> = serde_json::from_value(m.clone()).map_err(|e| {
                    bad(
                        line,
                        "messages",
                        format!(
                            "must be a list of {{\"role\": system|user|assistant, \"content\": string}}: {e}"
                        ),
                    )
                })?;
                if list.is_empty() {
                    return Err(bad(line, "messages", "is empty".into()));
                }
                messages.extend(list);
            }
            (None, None) => return Err(bad(line, "prompt", "missing: give prompt or messages".into())),
        }
        inputs.push(BatchInput { id, messages });
    }
    if inputs.is_empty() {
        return Err(bad(0, "-", "no prompts in the file".into()));
    }
    Ok(inputs)
}

/// How to run a batch.
#[derive(Clone, Debug)]
pub struct BatchOptions {
    /// Most calls in flight (the endpoints' own limits apply too).
    pub concurrency: usize,
    /// Structured output schema for every call.
    pub schema: Option<JsonSchema>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// What a batch did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BatchSummary {
    /// Items in the input.
    pub total: usize,
    /// Items answered (in this session or an earlier one).
    pub done: usize,
    /// Items that failed in this session.
    pub failed: usize,
    /// Items not attempted because a budget stopped the run.
    pub not_run: usize,
    /// Of the calls made in this session, those answered from the store.
    pub cache_hits: usize,
    /// Items already done in an earlier session.
    pub resumed: usize,
    /// Why the run stopped early, if it did.
    pub stopped_by_budget: Option<String>,
}

/// Run every input not yet done through `client`, recording item states in the
/// store.
pub async fn run_batch(
    client: Arc<RoleClient>,
    store: Arc<Store>,
    inputs: &[BatchInput],
    options: &BatchOptions,
) -> Result<BatchSummary, EngineError> {
    // Register items; an id the store knows with other messages is a conflict.
    let mut new_items = Vec::new();
    let mut todo = Vec::new();
    let mut summary = BatchSummary { total: inputs.len(), ..Default::default() };
    for input in inputs {
        let payload = json!({ "messages": input.messages });
        match store.get_item(STAGE, &input.id)? {
            Some(existing) => {
                if existing.payload.get("messages") != payload.get("messages") {
                    return Err(EngineError::Conflict(format!(
                        "run directory already has batch item `{}` with a different prompt; use another run directory",
                        input.id
                    )));
                }
                if existing.state == ItemState::Done {
                    summary.done += 1;
                    summary.resumed += 1;
                } else {
                    todo.push((input.clone(), existing.attempts));
                }
            }
            None => {
                new_items.push(WorkItem {
                    stage: STAGE.into(),
                    item_id: input.id.clone(),
                    state: ItemState::Pending,
                    payload,
                    attempts: 0,
                    error: None,
                    updated_at_unix_ms: now_ms(),
                });
                todo.push((input.clone(), 0));
            }
        }
    }
    store.put_items(&new_items)?;

    let bar = progress_bar(options.progress, inputs.len() as u64, summary.done as u64);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(options.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let mut pending = todo.into_iter();
    let mut budget_stop: Option<String> = None;
    loop {
        // Keep up to `concurrency` calls in flight; stop dispatching on a budget stop.
        while budget_stop.is_none() && tasks.len() < options.concurrency.max(1) {
            let Some((input, attempts)) = pending.next() else { break };
            let permit = semaphore.clone().acquire_owned().await.expect("semaphore open");
            let client = client.clone();
            let schema = options.schema.clone();
            tasks.spawn(async move {
                let _permit = permit;
                let mut request = ChatRequest::new(input.messages.clone());
                request.schema = schema;
                let out = client.chat(&request, Some(&format!("{STAGE}/{}", input.id))).await;
                (input, attempts, out)
            });
        }
        let Some(joined) = tasks.join_next().await else { break };
        let (input, attempts, out) = joined.expect("batch task panicked");
        let mut item = WorkItem {
            stage: STAGE.into(),
            item_id: input.id.clone(),
            state: ItemState::Done,
            payload: json!({ "messages": input.messages }),
            attempts: attempts + 1,
            error: None,
            updated_at_unix_ms: now_ms(),
        };
        match out {
            Ok(outcome) => {
                summary.done += 1;
                summary.cache_hits += usize::from(outcome.cached);
                item.payload["key"] = Value::String(outcome.key);
                store.put_item(&item)?;
            }
            Err(EngineError::Backend(BackendError::Budget(reason))) => {
                // Not attempted: it stays pending for a later session.
                budget_stop.get_or_insert(reason);
                summary.not_run += 1;
                continue;
            }
            Err(EngineError::Backend(err)) => {
                summary.failed += 1;
                item.state = ItemState::Failed;
                item.error = Some(err.to_string());
                store.put_item(&item)?;
                bar.set_message(format!("{} failed", summary.failed));
            }
            Err(other) => return Err(other),
        }
        bar.inc(1);
    }
    summary.not_run += pending.count();
    bar.finish_and_clear();
    if let Some(reason) = &budget_stop {
        store.set_meta("stop_reason", &format!("budget: {reason}"))?;
    }
    summary.stopped_by_budget = budget_stop;
    Ok(summary)
}

fn progress_bar(enabled: bool, total: u64, done: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} {per_sec} eta {eta} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix("batch");
    bar.set_position(done);
    bar
}

/// Write the batch's results as JSONL, in input order, atomically: one line per
/// input with `id`, `messages`, and either `response`, `finish_reason`,
/// `usage`, `model` or `error` (`"not run"` for items a budget stopped).
pub fn write_batch_output(store: &Store, inputs: &[BatchInput], path: &Path) -> Result<(), EngineError> {
    let mut out = Vec::new();
    for input in inputs {
        let item = store.get_item(STAGE, &input.id)?;
        let mut row = json!({ "id": input.id, "messages": input.messages });
        let key = item.as_ref().and_then(|i| i.payload.get("key")).and_then(Value::as_str);
        match (item.as_ref().map(|i| i.state), key) {
            (Some(ItemState::Done), Some(key)) => {
                let call = store.peek_call(&sagert_store::CallKey(key.to_string()))?.ok_or_else(|| {
                    EngineError::Conflict(format!(
                        "batch item `{}` is done but its call {key} is not in the store",
                        input.id
                    ))
                })?;
                let choice = call.response.choices.first();
                row["response"] = json!(call.response.text());
                row["finish_reason"] = json!(choice.map(|c| &c.finish_reason));
                row["usage"] = json!(call.response.usage);
                row["model"] = json!(call.model);
            }
            (Some(ItemState::Failed), _) => {
                row["error"] = json!(item.and_then(|i| i.error).unwrap_or_default());
            }
            _ => row["error"] = json!("not run"),
        }
        serde_json::to_writer(&mut out, &row).expect("serialising JSON to memory");
        out.write_all(b"\n").expect("writing to memory");
    }
    write_atomic(path, &out)
}
