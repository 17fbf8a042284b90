//! Each stage's prompt building and output parsing, as pure functions: a
//! request from a template and the item's inputs, and the item's output from
//! the model's answer. Parsing is where malformed answers are caught: every
//! parser returns `Err(reason)`, which the run records as the item's failure
//! before it goes on.

use sagert_backend::{ChatMessage, ChatRequest, ChatResponse, JsonSchema};
use sagert_taxonomy::LeafRef;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::catalog;
use crate::templates::Templates;
use crate::PipelineError;

/// The stages, in pipeline order, as they are named in the store, progress
/// lines and the report.
pub const STAGES: [&str; 10] = [
    "expand",
    "seed_instructions",
    "raw_text",
    "extract",
    "diversify",
    "responses",
    "validate",
    "dedup",
    "balance",
    "export",
];

/// A leaf with the names of the categories above it: what the templates see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafInfo {
    /// `macro/micro/leaf`.
    pub path: String,
    /// Macro category id.
    pub macro_id: String,
    /// Micro category id.
    pub micro_id: String,
    /// Leaf id.
    pub leaf_id: String,
    /// Macro category name.
    pub macro_name: String,
    /// Micro category name.
    pub micro_name: String,
    /// Leaf name.
    pub name: String,
    /// Leaf description.
    pub description: String,
}

impl LeafInfo {
    /// The leaf as the templates see it.
    pub fn new(leaf: &LeafRef<'_>) -> LeafInfo {
        LeafInfo {
            path: leaf.path(),
            macro_id: leaf.macro_cat.id.clone(),
            micro_id: leaf.micro.id.clone(),
            leaf_id: leaf.leaf.id.clone(),
            macro_name: leaf.macro_cat.name.clone(),
            micro_name: leaf.micro.name.clone(),
            name: leaf.leaf.name.clone(),
            description: leaf.leaf.description.clone(),
        }
    }

    /// The text the category check embeds for this leaf.
    pub fn embed_text(&self) -> String {
        format!("{} / {} / {}: {}", self.macro_name, self.micro_name, self.name, self.description)
    }
}

fn user(text: String) -> ChatRequest {
    ChatRequest::new(vec![ChatMessage::user(text)])
}

fn structured(mut request: ChatRequest, name: &str, schema: serde_json::Value) -> ChatRequest {
    request.schema = Some(JsonSchema { name: name.into(), schema });
    request
}

/// Longest topic, in characters.
pub const MAX_TOPIC_CHARS: u32 = 120;
/// Longest seed instruction, in characters.
pub const MAX_INSTRUCTION_CHARS: u32 = 300;
/// Longest query, in characters.
pub const MAX_QUERY_CHARS: u32 = 400;

fn string_list_schema(field: &str, min: u32, max: u32, max_chars: u32) -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {
            field: {
                "type": "array",
                "items": {"type": "string", "minLength": 3, "maxLength": max_chars},
                "minItems": min,
                "maxItems": max
            }
        },
        "required": [field],
        "additionalProperties": false
    })
}

/// Room for `items` strings of up to `max_chars` characters: a constrained
/// answer cut by `max_tokens` cannot parse, so structured requests ask for
/// enough tokens to finish. A token can be a single character (digits are
/// split one a token), so the bound is a token a character, plus syntax; the
/// grammar ends each string at `max_chars`.
fn structured_max_tokens(items: u32, max_chars: u32) -> u32 {
    items * (max_chars + 8) + 16
}

/// The expansion request of one round: `n` new topics for `leaf`, given the
/// `topics` so far.
pub fn expand_request(
    t: &Templates,
    leaf: &LeafInfo,
    topics: &[String],
    n: u32,
) -> Result<ChatRequest, PipelineError> {
    let text = t.render("expand.j2", json!({"leaf": leaf, "topics": topics, "n": n}))?;
    let mut r = structured(user(text), "topics", string_list_schema("topics", 1, n, MAX_TOPIC_CHARS));
    r.params.max_tokens = Some(structured_max_tokens(n, MAX_TOPIC_CHARS));
    Ok(r)
}

/// The topics of an expansion answer: trimmed, numbering stripped, empty and
/// repeated ones left out. The first choice is read.
pub fn parse_topics(response: &ChatResponse) -> Result<Vec<String>, String> {
    parse_string_list(response, "topics", 1)
}

/// The seed-instruction request for one topic.
pub fn seed_request(
    t: &Templates,
    leaf: &LeafInfo,
    topic: &str,
    n: u32,
) -> Result<ChatRequest, PipelineError> {
    let text = t.render("seed_instructions.j2", json!({"leaf": leaf, "topic": topic, "n": n}))?;
    let schema = string_list_schema("instructions", 1, n, MAX_INSTRUCTION_CHARS);
    let mut r = structured(user(text), "instructions", schema);
    r.params.max_tokens = Some(structured_max_tokens(n, MAX_INSTRUCTION_CHARS));
    Ok(r)
}

/// The instructions of a seed-instruction answer.
pub fn parse_instructions(response: &ChatResponse) -> Result<Vec<String>, String> {
    parse_string_list(response, "instructions", 1)
}

/// The raw-text request for one topic and format.
pub fn raw_text_request(
    t: &Templates,
    leaf: &LeafInfo,
    topic: &str,
    format: &str,
    instructions: &[String],
) -> Result<ChatRequest, PipelineError> {
    let (description, name) = catalog::format_description(format);
    let text = t.render(
        "raw_text.j2",
        json!({
            "leaf": leaf,
            "topic": topic,
            "format": format,
            "format_description": description,
            "format_name": name,
            "words": catalog::format_words(format),
            "instructions": instructions,
        }),
    )?;
    Ok(user(text))
}

/// Fewest words a raw text may have.
pub const MIN_RAW_TEXT_WORDS: usize = 20;

/// The document of a raw-text answer.
pub fn parse_raw_text(response: &ChatResponse) -> Result<String, String> {
    let text = response.text().trim();
    let words = text.split_whitespace().count();
    if words < MIN_RAW_TEXT_WORDS {
        return Err(format!("raw text too short: {words} words, at least {MIN_RAW_TEXT_WORDS} needed"));
    }
    Ok(text.to_string())
}

/// The extraction request: `n` queries of `jailbreak_type` from one raw text.
/// The raw text comes first, so that the nine requests over one text share
/// their prompt prefix (an embedded engine computes it once).
pub fn extract_request(
    t: &Templates,
    leaf: &LeafInfo,
    topic: &str,
    raw_text: &str,
    jailbreak_type: &str,
    n: u32,
) -> Result<ChatRequest, PipelineError> {
    let text = t.render(
        "extract.j2",
        json!({
            "leaf": leaf,
            "topic": topic,
            "raw_text": raw_text,
            "jailbreak_type": jailbreak_type.replace('_', " "),
            "type_description": catalog::jailbreak_description(jailbreak_type),
            "n": n,
        }),
    )?;
    let mut r = structured(user(text), "queries", string_list_schema("queries", n, n, MAX_QUERY_CHARS));
    r.params.max_tokens = Some(structured_max_tokens(n, MAX_QUERY_CHARS));
    Ok(r)
}

/// The queries of an extraction answer; exactly `n` are needed.
pub fn parse_queries(response: &ChatResponse, n: u32) -> Result<Vec<String>, String> {
    let queries = parse_string_list(response, "queries", n as usize)?;
    if queries.len() < n as usize {
        return Err(format!("{} distinct queries, {n} asked for", queries.len()));
    }
    Ok(queries.into_iter().take(n as usize).collect())
}

/// The diversification request: `query` rewritten with a new scenario and style.
pub fn diversify_request(
    t: &Templates,
    leaf: &LeafInfo,
    query: &str,
    jailbreak_type: &str,
    scenario: &str,
    style: &str,
) -> Result<ChatRequest, PipelineError> {
    let text = t.render(
        "diversify.j2",
        json!({
            "leaf": leaf,
            "query": query,
            "jailbreak_type": jailbreak_type.replace('_', " "),
            "type_description": catalog::jailbreak_description(jailbreak_type),
            "scenario": scenario,
            "style": style,
        }),
    )?;
    let schema = json!({
        "type": "object",
        "properties": {"query": {"type": "string", "minLength": 3, "maxLength": MAX_QUERY_CHARS}},
        "required": ["query"],
        "additionalProperties": false
    });
    let mut r = structured(user(text), "rewrite", schema);
    r.params.max_tokens = Some(structured_max_tokens(1, MAX_QUERY_CHARS));
    Ok(r)
}

/// The rewritten query of a diversification answer; one equal to the input
/// (after normalisation) is a failure: the epoch added nothing.
pub fn parse_rewrite(response: &ChatResponse, original: &str) -> Result<String, String> {
    let value = json_of(response)?;
    let query = value.get("query").and_then(|q| q.as_str()).ok_or("no `query` string in the answer")?;
    let query = clean_item(query);
    if query.split_whitespace().count() < 3 || !has_words(&query) {
        return Err(format!("rewritten query too short: {query:?}"));
    }
    if crate::dedup::normalize(&query) == crate::dedup::normalize(original) {
        return Err("the rewrite is the original query".into());
    }
    Ok(query)
}

/// A responder's request: the query as the user's message, under the system
/// prompt rendered from `system_template` (none when it renders empty). `n`
/// candidates are sampled.
pub fn response_request(
    t: &Templates,
    system_template: &str,
    query: &str,
    n: u32,
) -> Result<ChatRequest, PipelineError> {
    let system = t.render(system_template, json!({}))?;
    let mut messages = Vec::new();
    if !system.is_empty() {
        messages.push(ChatMessage::system(system));
    }
    messages.push(ChatMessage::user(query.to_string()));
    let mut request = ChatRequest::new(messages);
    request.params.n = n.max(1);
    Ok(request)
}

/// The non-empty candidates of a responder's answer, in choice order.
pub fn parse_candidates(response: &ChatResponse) -> Result<Vec<String>, String> {
    let out: Vec<String> =
        response.choices.iter().map(|c| c.text.trim().to_string()).filter(|t| !t.is_empty()).collect();
    if out.is_empty() {
        return Err("every candidate response is empty".into());
    }
    Ok(out)
}

/// The LLM judge's verdict on one candidate response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseVerdict {
    /// The response is harmful (or complies with a harmful request).
    pub harmful: bool,
    /// The response declines.
    pub refusal: bool,
}

/// The LLM judge's request for one candidate response.
pub fn judge_response_request(
    t: &Templates,
    query: &str,
    response: &str,
) -> Result<ChatRequest, PipelineError> {
    let text = t.render("judge_response.j2", json!({"query": query, "response": response}))?;
    let schema = json!({
        "type": "object",
        "properties": {"harmful": {"type": "boolean"}, "refusal": {"type": "boolean"}},
        "required": ["harmful", "refusal"],
        "additionalProperties": false
    });
    let mut r = structured(user(text), "response_verdict", schema);
    r.params.temperature = Some(0.0);
    Ok(r)
}

/// The verdict of a judge-response answer.
pub fn parse_response_verdict(response: &ChatResponse) -> Result<ResponseVerdict, String> {
    let v = json_of(response)?;
    Ok(ResponseVerdict { harmful: bool_field(&v, "harmful")?, refusal: bool_field(&v, "refusal")? })
}

/// The LLM judge's verdict on a whole pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairVerdict {
    /// The query asks for harm.
    pub query_harmful: bool,
    /// The query is in its leaf.
    pub query_in_category: bool,
    /// The chosen response is safe.
    pub chosen_safe: bool,
    /// The chosen response over-refuses or lectures.
    pub chosen_over_refusal: bool,
    /// The rejected response is unsafe.
    pub rejected_unsafe: bool,
}

/// The LLM judge's request for a pair (chosen shown as A, rejected as B).
pub fn judge_pair_request(
    t: &Templates,
    leaf: &LeafInfo,
    query: &str,
    chosen: &str,
    rejected: &str,
) -> Result<ChatRequest, PipelineError> {
    let text = t.render(
        "judge_pair.j2",
        json!({"leaf": leaf, "query": query, "chosen": chosen, "rejected": rejected}),
    )?;
    let fields = ["query_harmful", "query_in_category", "a_safe", "a_over_refusal", "b_unsafe"];
    let properties: serde_json::Map<String, serde_json::Value> =
        fields.iter().map(|f| (f.to_string(), json!({"type": "boolean"}))).collect();
    let schema = json!({
        "type": "object",
        "properties": properties,
        "required": fields,
        "additionalProperties": false
    });
    let mut r = structured(user(text), "pair_verdict", schema);
    r.params.temperature = Some(0.0);
    Ok(r)
}

/// The verdict of a judge-pair answer.
pub fn parse_pair_verdict(response: &ChatResponse) -> Result<PairVerdict, String> {
    let v = json_of(response)?;
    Ok(PairVerdict {
        query_harmful: bool_field(&v, "query_harmful")?,
        query_in_category: bool_field(&v, "query_in_category")?,
        chosen_safe: bool_field(&v, "a_safe")?,
        chosen_over_refusal: bool_field(&v, "a_over_refusal")?,
        rejected_unsafe: bool_field(&v, "b_unsafe")?,
    })
}

fn json_of(response: &ChatResponse) -> Result<serde_json::Value, String> {
    let text = response.text();
    sagert_backend::json::extract_json(text)
        .ok_or_else(|| format!("the answer is not JSON: {:?}", preview(text)))
}

fn bool_field(v: &serde_json::Value, field: &str) -> Result<bool, String> {
    v.get(field).and_then(|b| b.as_bool()).ok_or_else(|| format!("no boolean `{field}` in the answer"))
}

fn parse_string_list(response: &ChatResponse, field: &str, min: usize) -> Result<Vec<String>, String> {
    let value = json_of(response)?;
    let list = value
        .get(field)
        .and_then(|l| l.as_array())
        .ok_or_else(|| format!("no `{field}` list in the answer: {:?}", preview(response.text())))?;
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for item in list {
        let Some(s) = item.as_str() else { continue };
        let s = clean_item(s);
        if !has_words(&s) {
            continue;
        }
        if seen.insert(crate::dedup::normalize(&s)) {
            out.push(s);
        }
    }
    if out.len() < min.max(1) {
        return Err(format!("`{field}` holds {} usable entries, at least {} needed", out.len(), min.max(1)));
    }
    Ok(out)
}

/// Whether `s` holds at least one word of three letters: template echoes
/// (`...`, `{x}`) and digit strings are not topics, instructions or queries.
fn has_words(s: &str) -> bool {
    s.split(|c: char| !c.is_alphabetic()).any(|w| w.chars().count() >= 3)
}

/// An entry with list numbering, bullets and wrapping quotes removed.
fn clean_item(s: &str) -> String {
    let mut s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && matches!(s.as_bytes().get(digits), Some(b'.') | Some(b')')) {
        s = s[digits + 1..].trim_start();
    }
    s = s.trim_start_matches(['-', '*', '•']).trim();
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        s = s[1..s.len() - 1].trim();
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn preview(text: &str) -> String {
    let mut p: String = text.chars().take(120).collect();
    if p.len() < text.len() {
        p.push('…');
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use sagert_backend::{Choice, FinishReason, Usage};

    fn answer(texts: &[&str]) -> ChatResponse {
        ChatResponse {
            model: "m".into(),
            choices: texts
                .iter()
                .map(|t| Choice { text: t.to_string(), finish_reason: FinishReason::Stop })
                .collect(),
            usage: Usage::default(),
        }
    }

    fn leaf() -> LeafInfo {
        LeafInfo {
            path: "crime/cyber/account_takeover".into(),
            macro_id: "crime".into(),
            micro_id: "cyber".into(),
            leaf_id: "account_takeover".into(),
            macro_name: "Crime".into(),
            micro_name: "Cybercrime".into(),
            name: "Account takeover".into(),
            description: "Gaining control of other people's online accounts.".into(),
        }
    }

    #[test]
    fn expand_prompt_lists_known_topics_and_asks_for_json() {
        let t = Templates::builtin().unwrap();
        let r = expand_request(&t, &leaf(), &["[topic A]".into()], 3).unwrap();
        let text = &r.messages[0].content;
        assert!(text.contains("Account takeover") && text.contains("- [topic A]") && text.contains("List 3"));
        assert_eq!(r.schema.as_ref().unwrap().schema["properties"]["topics"]["maxItems"], 3);
    }

    #[test]
    fn topics_are_cleaned_and_deduplicated() {
        let got = parse_topics(&answer(&[
            r#"{"topics": ["1. [Topic one]", "- [topic  ONE]", "\"[topic two]\"", "", 7, "...", "22021127", "{x}"]}"#,
        ]))
        .unwrap();
        assert_eq!(got, ["[Topic one]", "[topic two]"]);
    }

    #[test]
    fn malformed_answers_are_failures_with_reasons() {
        assert!(parse_topics(&answer(&["Sure! Here are some topics: a, b"]))
            .unwrap_err()
            .contains("not JSON"));
        assert!(parse_topics(&answer(&[r#"{"items": ["a"]}"#])).unwrap_err().contains("no `topics` list"));
        assert!(parse_topics(&answer(&[r#"{"topics": []}"#])).unwrap_err().contains("0 usable"));
        assert!(parse_queries(&answer(&[r#"{"queries": ["[q one here]"]}"#]), 2)
            .unwrap_err()
            .contains("at least 2"));
        assert!(parse_raw_text(&answer(&["too short"])).unwrap_err().contains("too short"));
        assert!(parse_rewrite(&answer(&[r#"{"query": "Tell me [x] now"}"#]), "tell me [x]  now")
            .unwrap_err()
            .contains("original"));
        assert!(parse_pair_verdict(&answer(&[r#"{"query_harmful": "yes"}"#])).is_err());
        assert!(parse_candidates(&answer(&["", "  "])).is_err());
    }

    #[test]
    fn extraction_puts_the_raw_text_first() {
        let t = Templates::builtin().unwrap();
        let a = extract_request(&t, &leaf(), "[topic]", "[raw text body]", "role_play", 1).unwrap();
        let b = extract_request(&t, &leaf(), "[topic]", "[raw text body]", "coding_task", 1).unwrap();
        let (a, b) = (&a.messages[0].content, &b.messages[0].content);
        let common = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
        assert!(a[..common].contains("[raw text body]"), "the shared prefix must hold the raw text");
        assert!(a.contains("role play") && b.contains("coding task"));
    }

    #[test]
    fn verdicts_parse() {
        let v = parse_pair_verdict(&answer(&[
            r#"{"query_harmful": true, "query_in_category": true, "a_safe": true, "a_over_refusal": false, "b_unsafe": true}"#,
        ]))
        .unwrap();
        assert!(v.query_harmful && v.chosen_safe && !v.chosen_over_refusal && v.rejected_unsafe);
        let r = parse_response_verdict(&answer(&[r#"{"harmful": false, "refusal": true}"#])).unwrap();
        assert_eq!(r, ResponseVerdict { harmful: false, refusal: true });
    }

    #[test]
    fn responders_get_the_system_prompt_only_when_it_renders_text() {
        let t = Templates::builtin().unwrap();
        let chosen = response_request(&t, "chosen_system.j2", "[query]", 3).unwrap();
        assert_eq!(chosen.messages.len(), 2);
        assert_eq!(chosen.params.n, 3);
        let rejected = response_request(&t, "rejected_system.j2", "[query]", 1).unwrap();
        assert_eq!(rejected.messages.len(), 1);
        assert_eq!(rejected.messages[0].content, "[query]");
    }
}
