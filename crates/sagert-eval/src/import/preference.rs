//! Preference datasets: PKU-SafeRLHF, HH-RLHF and TRL files, into TRL records.
//!
//! # PKU-SafeRLHF (`pku-saferlhf`)
//!
//! Required fields: `prompt`, `response_0`, `response_1` (strings),
//! `is_response_0_safe`, `is_response_1_safe` (booleans), `safer_response_id`
//! (0 or 1). Checked when present: `response_{0,1}_harm_category` (objects of
//! booleans), `response_{0,1}_severity_level` (0..=3), `better_response_id` (0
//! or 1), `prompt_source`, `response_{0,1}_source`, `response_{0,1}_sha256`
//! (strings).
//!
//! - `chosen` = `response_{safer_response_id}`, `rejected` = the other, both
//!   strings (standard form), the prompt as it is.
//! - Dropped, in this order: a blank response (`empty_response`), identical
//!   responses (`identical_responses`); with `only_one_safe`, pairs where not
//!   exactly one response is safe (`not_exactly_one_safe`) and pairs whose
//!   safer response is marked unsafe (`safer_not_safe`).
//! - Source labels: the harm categories marked `true` for the rejected
//!   response; if it has none, those of either response. They map onto the
//!   taxonomy by the inverse rule over the PKU targets ([`super::taxmap`]).
//! - Kept: `prompt_source`, `response_0_source`, `response_1_source`,
//!   `is_response_0_safe`, `is_response_1_safe`, `response_0_severity_level`,
//!   `response_1_severity_level`, `better_response_id`, `safer_response_id`,
//!   `response_0_sha256`, `response_1_sha256`.
//! - `id`: 16 hex digits of the SHA-256 of the prompt and the two response
//!   hashes (the responses themselves where the hashes are missing). The prompt
//!   is part of it because the same two short refusals recur under many prompts.
//!
//! # HH-RLHF (`hh-rlhf`)
//!
//! Required: `chosen` and `rejected`, each a whole dialogue of `\n\nHuman:` and
//! `\n\nAssistant:` turns.
//!
//! - `chosen` is split at its **last** `\n\nAssistant:`: the text before it is
//!   the prompt, the text after it the chosen response. `rejected` must start
//!   with the same prompt followed by `\n\nAssistant:` (else an error on field
//!   `rejected`); the rest is the rejected response. A response that still
//!   holds a turn marker is an error.
//! - The prompt is written as messages, one per turn (`Human` -> `user`,
//!   `Assistant` -> `assistant`), and each response as one `assistant` message,
//!   as TRL's own conversion of HH-RLHF does. A turn's text is everything up to
//!   the next marker, less the one space after the marker's colon; nothing else
//!   is trimmed.
//! - Dropped, in this order: a blank response (`empty_response`), identical
//!   responses (`identical_responses`), a blank prompt turn (`empty_message`),
//!   a prompt whose turns do not alternate user/assistant starting and ending
//!   with the user (`non_alternating_turns`).
//! - HH-RLHF has no harm labels: `category` is `unmapped`, `source_categories`
//!   is `[subset]` (the `subset` option, else the last path component named
//!   `harmless-base`, `helpful-base`, `helpful-online` or
//!   `helpful-rejection-sampled`; `[]` when neither says).
//! - `id`: 16 hex digits of the SHA-256 of the two dialogues.
//!
//! # TRL files (`trl`)
//!
//! Required: `prompt`, `chosen`, `rejected`, in standard form (three strings) or
//! conversational form (`prompt` a list of `{role, content}` messages with roles
//! `system`, `user`, `assistant`; `chosen` and `rejected` lists of `assistant`
//! messages). A file holds one form; mixing them is an error.
//!
//! - Validated: roles, non-blank strings; `ref_chosen_logps` and
//!   `ref_rejected_logps` finite numbers, both or neither.
//! - Normalised: a message keeps only `role` and `content`; content given as a
//!   list of parts (`[{"type": "text", "text": ...}]`) becomes the parts' texts
//!   joined with nothing between them (other part types are an error). Text is
//!   otherwise kept byte for byte.
//! - Dropped: identical `chosen` and `rejected` (`identical_responses`).
//! - `id`: the record's `id` (string or integer), else 16 hex digits of the
//!   SHA-256 of the prompt and responses (as JSON). `source`: the record's
//!   `source` string, else `trl`. Source labels: `source_categories` (a list),
//!   else `category`. The category maps directly when `category` names a micro
//!   category (an ALERT label or a taxonomy path), else by the direct-then-inverse
//!   rule over all targets. `jailbreak_type` is kept; every other column is kept.

use std::path::Path;

use sagert_taxonomy::MappingTarget;
use serde_json::{Map, Value};

use super::read::Row;
use super::row::{content_id, RESERVED};
use super::taxmap::category_columns;
use super::{Context, ImportKind, Message, Outcome, Record, Turns};
use crate::jsonl::kind;
use crate::Result;

/// The columns a PKU-SafeRLHF file must have.
pub(crate) const PKU_REQUIRED: [&str; 6] =
    ["prompt", "response_0", "response_1", "is_response_0_safe", "is_response_1_safe", "safer_response_id"];

const PKU_KEPT: [&str; 11] = [
    "prompt_source",
    "response_0_source",
    "response_1_source",
    "is_response_0_safe",
    "is_response_1_safe",
    "response_0_severity_level",
    "response_1_severity_level",
    "better_response_id",
    "safer_response_id",
    "response_0_sha256",
    "response_1_sha256",
];

/// HH-RLHF's preference subsets, as its directories are named.
pub const HH_SUBSETS: [&str; 4] =
    ["harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled"];

const HUMAN: &str = "\n\nHuman:";
const ASSISTANT: &str = "\n\nAssistant:";

/// One PKU-SafeRLHF record.
pub(crate) fn pku(row: &Row, ctx: &Context<'_>) -> Result<Outcome> {
    let prompt = row.text("prompt")?;
    let responses = [row.string("response_0")?, row.string("response_1")?];
    let safe = [row.boolean("is_response_0_safe")?, row.boolean("is_response_1_safe")?];
    let safer = row.integer("safer_response_id", 0, 1)? as usize;
    row.opt_integer("better_response_id", 0, 1)?;
    row.opt_integer("response_0_severity_level", 0, 3)?;
    row.opt_integer("response_1_severity_level", 0, 3)?;
    for field in ["prompt_source", "response_0_source", "response_1_source"] {
        row.opt_string(field)?;
    }
    let hashes = [row.opt_string("response_0_sha256")?, row.opt_string("response_1_sha256")?];
    let harms =
        [harm_labels(row, "response_0_harm_category")?, harm_labels(row, "response_1_harm_category")?];

    if responses.iter().any(|r| r.trim().is_empty()) {
        return Ok(Outcome::Drop("empty_response"));
    }
    if responses[0] == responses[1] {
        return Ok(Outcome::Drop("identical_responses"));
    }
    if ctx.opts.only_one_safe {
        if safe[0] == safe[1] {
            return Ok(Outcome::Drop("not_exactly_one_safe"));
        }
        if !safe[safer] {
            return Ok(Outcome::Drop("safer_not_safe"));
        }
    }
    let rejected = 1 - safer;
    let labels = if harms[rejected].is_empty() {
        let mut both: Vec<String> = harms.concat();
        both.sort();
        both.dedup();
        both
    } else {
        harms[rejected].clone()
    };
    let (category, macro_category) = category_columns(ctx.map.inverse(&labels, &[MappingTarget::Pku]));
    let id = match hashes {
        [Some(a), Some(b)] => content_id(ImportKind::Pku.name(), &[prompt, a, b]),
        _ => content_id(ImportKind::Pku.name(), &[prompt, responses[0], responses[1]]),
    };
    Ok(Outcome::Keep(Box::new(Record {
        id,
        prompt: Turns::Text(prompt.to_string()),
        chosen: Some(Turns::Text(responses[safer].to_string())),
        rejected: Some(Turns::Text(responses[rejected].to_string())),
        category,
        macro_category,
        source: ImportKind::Pku.name().into(),
        source_categories: labels,
        jailbreak_type: None,
        labels: row.keep(&PKU_KEPT),
    })))
}

/// The keys of a PKU harm-category object whose value is `true`, in key order.
fn harm_labels(row: &Row, field: &str) -> Result<Vec<String>> {
    match row.get(field) {
        None => Ok(Vec::new()),
        Some(Value::Object(map)) => {
            let mut out = Vec::new();
            for (name, value) in map {
                match value {
                    Value::Bool(true) => out.push(name.clone()),
                    Value::Bool(false) | Value::Null => {}
                    other => {
                        return Err(row.error(
                            &format!("{field}.{name}"),
                            format!("expected a boolean, found {}", kind(other)),
                        ))
                    }
                }
            }
            // In PKU-SafeRLHF's own order, whatever order the JSON map keeps
            // (serde_json sorts keys unless a crate in the build asks it to keep
            // file order): the output must not depend on the build.
            let rank = |l: &String| {
                sagert_taxonomy::PKU_CATEGORIES.iter().position(|c| c == l).unwrap_or(usize::MAX)
            };
            out.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
            Ok(out)
        }
        Some(other) => {
            Err(row.error(field, format!("expected an object of category booleans, found {}", kind(other))))
        }
    }
}

/// The HH-RLHF subset named by the last matching component of `path`.
pub(crate) fn infer_hh_subset(path: &Path) -> Option<String> {
    path.components()
        .rev()
        .filter_map(|c| c.as_os_str().to_str())
        .find(|c| HH_SUBSETS.contains(c))
        .map(str::to_string)
}

/// One HH-RLHF record.
pub(crate) fn hh(row: &Row, ctx: &Context<'_>) -> Result<Outcome> {
    if row.get("chosen").is_none() && row.get("transcript").is_some() {
        return Err(row.error(
            "chosen",
            "missing: this looks like HH-RLHF's red-team-attempts (a `transcript`), which holds no preference pairs",
        ));
    }
    let chosen = row.string("chosen")?;
    let rejected = row.string("rejected")?;
    let cut = chosen
        .rfind(ASSISTANT)
        .ok_or_else(|| row.error("chosen", "no `\\n\\nAssistant:` turn: not an HH-RLHF dialogue"))?;
    let prefix = &chosen[..cut];
    if !prefix.starts_with(HUMAN) {
        return Err(row.error("chosen", "does not start with `\\n\\nHuman:`: not an HH-RLHF dialogue"));
    }
    let chosen_reply = after_marker(&chosen[cut + ASSISTANT.len()..]);
    if chosen_reply.contains(HUMAN) {
        return Err(row.error("chosen", "ends with a Human turn after its last Assistant turn"));
    }
    let rejected_reply =
        rejected.strip_prefix(prefix).and_then(|r| r.strip_prefix(ASSISTANT)).ok_or_else(|| {
            row.error(
                "rejected",
                "does not share the prompt of `chosen` (its text before the last `\\n\\nAssistant:`) \
             followed by an Assistant turn",
            )
        })?;
    let rejected_reply = after_marker(rejected_reply);
    if rejected_reply.contains(HUMAN) || rejected_reply.contains(ASSISTANT) {
        return Err(row.error("rejected", "has more turns after the prompt it shares with `chosen`"));
    }

    if chosen_reply.trim().is_empty() || rejected_reply.trim().is_empty() {
        return Ok(Outcome::Drop("empty_response"));
    }
    if chosen_reply == rejected_reply {
        return Ok(Outcome::Drop("identical_responses"));
    }
    let turns = split_turns(prefix);
    if turns.iter().any(|m| m.content.trim().is_empty()) {
        return Ok(Outcome::Drop("empty_message"));
    }
    let alternates =
        turns.iter().enumerate().all(|(i, m)| m.role == if i % 2 == 0 { "user" } else { "assistant" })
            && turns.len() % 2 == 1;
    if !alternates {
        return Ok(Outcome::Drop("non_alternating_turns"));
    }
    let reply =
        |text: &str| Some(Turns::Messages(vec![Message { role: "assistant", content: text.to_string() }]));
    Ok(Outcome::Keep(Box::new(Record {
        id: content_id(ImportKind::Hh.name(), &[chosen, rejected]),
        prompt: Turns::Messages(turns),
        chosen: reply(chosen_reply),
        rejected: reply(rejected_reply),
        category: super::taxmap::UNMAPPED.into(),
        macro_category: String::new(),
        source: ImportKind::Hh.name().into(),
        source_categories: if ctx.subset.is_empty() { Vec::new() } else { vec![ctx.subset.clone()] },
        jailbreak_type: None,
        labels: row.rest(&["chosen", "rejected"]),
    })))
}

/// A turn's text: what follows the marker's colon, less one space.
fn after_marker(text: &str) -> &str {
    text.strip_prefix(' ').unwrap_or(text)
}

/// The turns of a dialogue that starts with `\n\nHuman:`.
fn split_turns(dialogue: &str) -> Vec<Message> {
    let next_marker = |from: usize| -> Option<(usize, &'static str, &'static str)> {
        let human = dialogue[from..].find(HUMAN).map(|i| (from + i, HUMAN, "user"));
        let assistant = dialogue[from..].find(ASSISTANT).map(|i| (from + i, ASSISTANT, "assistant"));
        match (human, assistant) {
            (Some(h), Some(a)) => Some(if h.0 <= a.0 { h } else { a }),
            (h, a) => h.or(a),
        }
    };
    let mut turns = Vec::new();
    let mut at = next_marker(0);
    while let Some((start, marker, role)) = at {
        let body = start + marker.len();
        at = next_marker(body);
        let end = at.map_or(dialogue.len(), |(next, _, _)| next);
        turns.push(Message { role, content: after_marker(&dialogue[body..end]).to_string() });
    }
    turns
}

/// One TRL record.
pub(crate) fn trl(row: &Row, ctx: &Context<'_>) -> Result<Outcome> {
    if row.get("chosen").is_none() && row.get("completion").is_some() && row.get("label").is_some() {
        return Err(row.error(
            "chosen",
            "missing: unpaired (KTO) records (`completion`, `label`) are not preference pairs",
        ));
    }
    if row.get("prompt").is_none() {
        let hint = if row.get("chosen").is_some() {
            ": implicit-prompt records (the prompt inside `chosen` and `rejected`) are not read; \
             split the shared prompt off first"
        } else {
            ""
        };
        return Err(row.error("prompt", format!("missing{hint}")));
    }
    let prompt = turns(row, "prompt", &["system", "user", "assistant"])?;
    let chosen = turns(row, "chosen", &["assistant"])?;
    let rejected = turns(row, "rejected", &["assistant"])?;
    let conversational = matches!(prompt, Turns::Messages(_));
    for (field, t) in [("chosen", &chosen), ("rejected", &rejected)] {
        if matches!(t, Turns::Messages(_)) != conversational {
            let message = if conversational {
                "a string, but `prompt` is a list of messages: conversational records hold lists of \
                 assistant messages"
            } else {
                "a list of messages, but `prompt` is a string: standard records hold strings"
            };
            return Err(row.error(field, message));
        }
    }
    let logps = [logp(row, "ref_chosen_logps")?, logp(row, "ref_rejected_logps")?];
    match logps {
        [Some(_), None] => {
            return Err(row.error("ref_rejected_logps", "missing, but `ref_chosen_logps` is given"))
        }
        [None, Some(_)] => {
            return Err(row.error("ref_chosen_logps", "missing, but `ref_rejected_logps` is given"))
        }
        _ => {}
    }
    let category = row.opt_string("category")?.filter(|c| !c.trim().is_empty());
    let mut labels = row.labels("source_categories")?;
    if labels.is_empty() {
        labels.extend(category.map(str::to_string));
    }
    let micro =
        category.and_then(|c| ctx.map.direct(c)).or_else(|| ctx.map.resolve(&labels, &MappingTarget::ALL));
    let (category, macro_category) = category_columns(micro);
    let id = match row.id("id")? {
        Some(id) => id,
        None => {
            let json = serde_json::to_string(&(&prompt, &chosen, &rejected)).expect("turns serialise");
            content_id(ImportKind::Trl.name(), &[&json])
        }
    };
    let source =
        row.opt_string("source")?.filter(|s| !s.is_empty()).unwrap_or(ImportKind::Trl.name()).to_string();
    let jailbreak_type = row.opt_string("jailbreak_type")?.map(str::to_string);
    if chosen == rejected {
        return Ok(Outcome::Drop("identical_responses"));
    }
    Ok(Outcome::Keep(Box::new(Record {
        id,
        prompt,
        chosen: Some(chosen),
        rejected: Some(rejected),
        category,
        macro_category,
        source,
        source_categories: labels,
        jailbreak_type,
        // A TRL file's own output columns are the record's: none is kept twice.
        labels: row.rest(&RESERVED),
    })))
}

/// A TRL field as a string or as messages with one of `roles`.
fn turns(row: &Row, field: &str, roles: &[&'static str]) -> Result<Turns> {
    match row.get(field) {
        None => Err(row.error(field, "missing")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(row.error(field, "empty")),
        Some(Value::String(s)) => Ok(Turns::Text(s.clone())),
        Some(Value::Array(items)) if items.is_empty() => Err(row.error(field, "empty list of messages")),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| message(row, &format!("{field}[{i}]"), item, roles))
            .collect::<Result<Vec<_>>>()
            .map(Turns::Messages),
        Some(other) => Err(row.error(
            field,
            format!("expected a string or a list of {{role, content}} messages, found {}", kind(other)),
        )),
    }
}

fn message(row: &Row, at: &str, item: &Value, roles: &[&'static str]) -> Result<Message> {
    let Value::Object(m) = item else {
        return Err(row.error(at, format!("expected a {{role, content}} object, found {}", kind(item))));
    };
    let role = match m.get("role") {
        Some(Value::String(r)) => roles.iter().copied().find(|known| known == r).ok_or_else(|| {
            row.error(&format!("{at}.role"), format!("`{r}` here; expected {}", roles.join(" or ")))
        })?,
        None | Some(Value::Null) => return Err(row.error(&format!("{at}.role"), "missing")),
        Some(other) => {
            return Err(row.error(&format!("{at}.role"), format!("expected a string, found {}", kind(other))))
        }
    };
    let content = content(row, &format!("{at}.content"), m)?;
    Ok(Message { role, content })
}

/// A message's content as one string: a string, or the texts of a list of parts.
fn content(row: &Row, at: &str, m: &Map<String, Value>) -> Result<String> {
    let text = match m.get("content") {
        Some(Value::String(c)) => c.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                let at = format!("{at}[{i}]");
                let Value::Object(part) = part else {
                    return Err(
                        row.error(&at, format!("expected a content part object, found {}", kind(part)))
                    );
                };
                match (part.get("type"), part.get("text")) {
                    (Some(Value::String(t)), Some(Value::String(s))) if t == "text" => text.push_str(s),
                    (Some(Value::String(t)), _) if t != "text" => {
                        return Err(row.error(&at, format!("a `{t}` part: only text content is read")))
                    }
                    _ => return Err(row.error(&at, "expected {\"type\": \"text\", \"text\": STRING}")),
                }
            }
            text
        }
        None | Some(Value::Null) => return Err(row.error(at, "missing")),
        Some(other) => {
            return Err(
                row.error(at, format!("expected a string or a list of text parts, found {}", kind(other)))
            )
        }
    };
    if text.trim().is_empty() {
        return Err(row.error(at, "empty"));
    }
    Ok(text)
}

fn logp(row: &Row, field: &str) -> Result<Option<f64>> {
    match row.get(field) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(row.error(field, format!("{n} is not a finite number"))),
        },
        Some(other) => Err(row.error(field, format!("expected a number, found {}", kind(other)))),
    }
}

/// A TRL file holds one form: the first record's form, with its line, is in `first`.
pub(crate) fn check_same_form(row: &Row, record: &Record, first: &mut Option<(bool, String)>) -> Result<()> {
    let conversational = matches!(record.prompt, Turns::Messages(_));
    let name = |c: bool| if c { "conversational (a list of messages)" } else { "standard (a string)" };
    match first {
        None => *first = Some((conversational, format!("{}:{}", row.file.display(), row.line))),
        Some((form, place)) if *form != conversational => {
            return Err(row.error(
                "prompt",
                format!(
                    "{} form, but the record at {place} is {}: a file holds one form",
                    name(conversational),
                    name(*form)
                ),
            ))
        }
        Some(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_split_at_markers_and_keep_inner_text() {
        let turns = split_turns("\n\nHuman: hi\n\nthere\n\nAssistant: hello \n\nHuman:  again");
        let got: Vec<(&str, &str)> = turns.iter().map(|m| (m.role, m.content.as_str())).collect();
        assert_eq!(got, vec![("user", "hi\n\nthere"), ("assistant", "hello "), ("user", " again")]);
    }

    #[test]
    fn subsets_come_from_the_closest_matching_component() {
        let p = Path::new("/data/hh-rlhf/harmless-base/train.jsonl.gz");
        assert_eq!(infer_hh_subset(p).as_deref(), Some("harmless-base"));
        assert_eq!(
            infer_hh_subset(Path::new("helpful-base/x/helpful-online/t.jsonl")).as_deref(),
            Some("helpful-online")
        );
        assert_eq!(infer_hh_subset(Path::new("/data/train.jsonl")), None);
    }
}
