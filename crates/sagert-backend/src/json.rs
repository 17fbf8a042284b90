//! Tolerant JSON extraction and a JSON-schema subset validator.
//!
//! Backends that cannot constrain their decoding (or servers that ignore
//! `response_format`) return JSON wrapped in prose or Markdown fences. This module
//! is what every backend uses to get a value out of such text and check it:
//!
//! - [`extract_json`] finds the JSON value in model text.
//! - [`validate`] checks a value against a schema and names the first place where
//!   it does not fit, as a JSON pointer ([`SchemaViolation`]).
//! - [`schema_instructions`] and [`repair_instructions`] render the prompt text of
//!   prompt-mode structured output and of the one repair round. The templates are
//!   data, in `src/prompts/structured_output.txt` and `src/prompts/structured_repair.txt`.
//!
//! # The schema subset
//!
//! [`validate`] understands the part of JSON Schema that sagert's prompts use:
//!
//! | keyword | meaning |
//! | --- | --- |
//! | `type` | a type name or an array of them: `null`, `boolean`, `object`, `array`, `number`, `string`, `integer` (a number with no fractional part). `["string", "null"]` is how a value is made nullable. A type name not in this list matches nothing, so that a typo shows at once. |
//! | `nullable: true` | OpenAPI's spelling of the same: `null` is accepted. |
//! | `enum`, `const` | the value equals one of the listed values / the given value (numbers compare by value: `1` equals `1.0`). |
//! | `properties` | each present property is checked against its schema. |
//! | `required` | each listed property is present. |
//! | `additionalProperties` | `false`: no property outside `properties`; a schema: the others are checked against it. |
//! | `items` | a schema: every element is checked; an array of schemas: elements are checked by position. |
//! | `minItems`, `maxItems` | array length bounds. |
//! | `minLength`, `maxLength` | string length bounds, in characters (Unicode scalar values). |
//! | `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` | number bounds (the exclusive ones in their numeric, draft-6 form). |
//! | `anyOf`, `oneOf` | at least one alternative matches (`oneOf` is read as `anyOf`: a model's output that fits two alternatives is still usable). |
//! | `allOf` | every alternative matches. |
//! | `true` / `false` | the boolean schemas: anything / nothing. |
//!
//! Every other keyword (`$ref`, `format`, `pattern`, `description`, ...) is ignored.
//! The checks of one schema object run in this order, and the first failure is
//! reported: `type`, `const`, `enum`, the type-specific bounds, `properties`,
//! `required`, `additionalProperties` / `items`, then `allOf`, `anyOf`, `oneOf`.

use std::fmt;

use serde_json::{Map, Value};

use std::future::Future;

use crate::{BackendError, ChatMessage, ChatRequest, Choice, JsonSchema, SamplingParams, Usage};

const STRUCTURED_OUTPUT_TEMPLATE: &str = include_str!("prompts/structured_output.txt");
const STRUCTURED_REPAIR_TEMPLATE: &str = include_str!("prompts/structured_repair.txt");

/// Longest rendering of a JSON value inside a violation message.
const MAX_VALUE_IN_MESSAGE: usize = 80;

/// The JSON value in a model's `text` if it satisfies `schema`; otherwise what
/// is wrong, worded for the model to fix in a repair round. Every backend that
/// cannot constrain its decoding checks structured answers with this.
pub fn check_structured(text: &str, schema: &Value) -> Result<Value, String> {
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

/// The conversation of a repair round: the original one, the bad answer, and
/// the user message of [`repair_instructions`] for `problem`.
pub fn repair_conversation(messages: &[ChatMessage], bad_answer: &str, problem: &str) -> Vec<ChatMessage> {
    let mut out = Vec::with_capacity(messages.len() + 2);
    out.extend_from_slice(messages);
    out.push(ChatMessage::assistant(bad_answer));
    out.push(ChatMessage::user(repair_instructions(problem)));
    out
}

/// Repair rounds a failing structured choice gets.
pub const REPAIR_ROUNDS: u32 = 1;

/// The structured-output contract every backend keeps: each of `choices` (the
/// answers to `request`) must be JSON satisfying `schema`. A failing choice
/// gets one repair round: `repair` is called with the request of that round
/// ([`repair_conversation`], `n = 1`, the same schema and sampling otherwise)
/// and returns the repaired text and its usage. If that fails too, the result
/// is [`BackendError::Structured`]. Returns the canonical compact JSON of the
/// parsed values, and the usage of the repair rounds.
pub async fn check_or_repair<F, Fut>(
    choices: Vec<Choice>,
    request: &ChatRequest,
    schema: &JsonSchema,
    mut repair: F,
) -> Result<(Vec<Choice>, Usage), BackendError>
where
    F: FnMut(ChatRequest) -> Fut,
    Fut: Future<Output = Result<(String, Usage), BackendError>>,
{
    let mut usage = Usage::default();
    let mut checked = Vec::with_capacity(choices.len());
    for choice in choices {
        let value = match check_structured(&choice.text, &schema.schema) {
            Ok(value) => value,
            Err(problem) => {
                let round = ChatRequest {
                    messages: repair_conversation(&request.messages, &choice.text, &problem),
                    params: SamplingParams { n: 1, ..request.params.clone() },
                    schema: request.schema.clone(),
                };
                let (text, round_usage) = repair(round).await?;
                usage += round_usage;
                check_structured(&text, &schema.schema).map_err(|message| BackendError::Structured {
                    schema: schema.name.clone(),
                    repairs: REPAIR_ROUNDS,
                    message,
                    raw: text.clone(),
                })?
            }
        };
        checked.push(Choice { text: value.to_string(), finish_reason: choice.finish_reason });
    }
    Ok((checked, usage))
}

/// Find the JSON value in model output.
///
/// Tried in order, the first that parses wins:
/// 1. the whole text, trimmed;
/// 2. each Markdown fenced block (```` ```json ```` or a bare ```` ``` ````, also an
///    unterminated one at the end of the text), in order of appearance;
/// 3. the longest balanced `{...}` or `[...]` span that parses (the first of that
///    length). The scan knows JSON strings and their escapes, so braces inside
///    strings do not count, and prose before and after the span is ignored. The
///    longest rather than the first, so that a citation such as `[1]` in the prose
///    before the answer is not taken for it.
///
/// Returns `None` when nothing parses. Pathological text (thousands of unclosed
/// brackets) costs time quadratic in its length; model output is short.
pub fn extract_json(text: &str) -> Option<Value> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return None;
    }
    if let Ok(value) = serde_json::from_str(trimmed) {
        return Some(value);
    }
    for block in fenced_blocks(text) {
        if let Ok(value) = serde_json::from_str(block.trim()) {
            return Some(value);
        }
    }
    best_balanced_value(text)
}

/// The contents of the Markdown fenced blocks of `text`, in order. The info string
/// (`json`, `JSON`, `jsonc`, ...) after the opening fence is skipped.
fn fenced_blocks(text: &str) -> Vec<&str> {
    const FENCE: &str = "```";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(FENCE) {
        let after = &rest[open + FENCE.len()..];
        let tag_len = after.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
        let body = &after[tag_len..];
        match body.find(FENCE) {
            Some(close) => {
                blocks.push(&body[..close]);
                rest = &body[close + FENCE.len()..];
            }
            None => {
                blocks.push(body);
                break;
            }
        }
    }
    blocks
}

/// The longest balanced `{...}` / `[...]` span of `text` that parses as JSON (the
/// first one of that length). Spans inside a parsed span are not looked at again.
fn best_balanced_value(text: &str) -> Option<Value> {
    let bytes = text.as_bytes();
    let mut best: Option<(usize, Value)> = None;
    let mut from = 0;
    while let Some(offset) = bytes[from..].iter().position(|b| matches!(b, b'{' | b'[')) {
        let start = from + offset;
        from = start + 1;
        let Some(end) = balanced_end(bytes, start) else { continue };
        // `start` and `end` are ASCII bytes, so both are char boundaries.
        if let Ok(value) = serde_json::from_str(&text[start..=end]) {
            let len = end + 1 - start;
            if best.as_ref().is_none_or(|(best_len, _)| len > *best_len) {
                best = Some((len, value));
            }
            from = end + 1;
        }
    }
    best.map(|(_, value)| value)
}

/// Where the bracket opened at `start` closes, reading JSON strings and escapes;
/// `None` when brackets mismatch or the text ends first. Working on bytes is safe
/// for UTF-8: the ASCII bytes looked for never occur inside a multi-byte character.
fn balanced_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut closers: Vec<u8> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => closers.push(b'}'),
            b'[' => closers.push(b']'),
            b'}' | b']' => {
                if closers.pop() != Some(b) {
                    return None;
                }
                if closers.is_empty() {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Where and why a value does not satisfy a schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaViolation {
    /// A JSON pointer to the offending value, such as `/queries/2/type`; empty for
    /// the root value.
    pub path: String,
    /// What is wrong, such as `expected string, got number`.
    pub message: String,
}

impl fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() { "(root)" } else { &self.path };
        write!(f, "at {path}: {}", self.message)
    }
}

impl std::error::Error for SchemaViolation {}

/// Check `value` against `schema`, in the subset described in the [module
/// docs](self). Returns the first violation found.
pub fn validate(value: &Value, schema: &Value) -> Result<(), SchemaViolation> {
    let mut path = String::new();
    check(value, schema, &mut path)
}

fn violation(path: &str, message: impl Into<String>) -> SchemaViolation {
    SchemaViolation { path: path.to_string(), message: message.into() }
}

fn check(value: &Value, schema: &Value, path: &mut String) -> Result<(), SchemaViolation> {
    let schema = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return Err(violation(path, "no value is allowed here")),
        Value::Object(schema) => schema,
        // Not a schema at all: nothing to check.
        _ => return Ok(()),
    };
    if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
        return Ok(());
    }
    if let Some(types) = schema.get("type") {
        check_type(value, types, path)?;
    }
    if let Some(expected) = schema.get("const") {
        if !json_eq(value, expected) {
            return Err(violation(path, format!("expected {}, got {}", short(expected), short(value))));
        }
    }
    if let Some(Value::Array(options)) = schema.get("enum") {
        if !options.iter().any(|o| json_eq(value, o)) {
            let list: Vec<String> = options.iter().map(short).collect();
            return Err(violation(
                path,
                format!("expected one of {}, got {}", list.join(", "), short(value)),
            ));
        }
    }
    match value {
        Value::String(s) => check_string(s, schema, path)?,
        Value::Number(n) => check_number(n.as_f64().unwrap_or(f64::NAN), schema, path)?,
        Value::Array(items) => check_array(items, schema, path)?,
        Value::Object(map) => check_object(map, schema, path)?,
        Value::Null | Value::Bool(_) => {}
    }
    if let Some(Value::Array(all)) = schema.get("allOf") {
        for alternative in all {
            check(value, alternative, path)?;
        }
    }
    for keyword in ["anyOf", "oneOf"] {
        if let Some(Value::Array(alternatives)) = schema.get(keyword) {
            check_any(value, alternatives, keyword, path)?;
        }
    }
    Ok(())
}

fn check_type(value: &Value, types: &Value, path: &str) -> Result<(), SchemaViolation> {
    let names: Vec<&str> = match types {
        Value::String(name) => vec![name.as_str()],
        Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()),
    };
    if names.iter().any(|name| has_type(value, name)) {
        return Ok(());
    }
    Err(violation(path, format!("expected {}, got {}", names.join(" or "), type_name(value))))
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => match value {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.is_finite() && f.fract() == 0.0)
            }
            _ => false,
        },
        _ => false,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value, compact and cut to [`MAX_VALUE_IN_MESSAGE`] characters, for messages.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= MAX_VALUE_IN_MESSAGE {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_VALUE_IN_MESSAGE).collect();
    cut.push('…');
    cut
}

/// JSON equality, with numbers compared by value (`1 == 1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn bound(schema: &Map<String, Value>, keyword: &str) -> Option<f64> {
    schema.get(keyword).and_then(Value::as_f64)
}

fn count_bound(schema: &Map<String, Value>, keyword: &str) -> Option<u64> {
    schema.get(keyword).and_then(Value::as_u64)
}

fn check_string(s: &str, schema: &Map<String, Value>, path: &str) -> Result<(), SchemaViolation> {
    let len = s.chars().count() as u64;
    if let Some(min) = count_bound(schema, "minLength") {
        if len < min {
            return Err(violation(
                path,
                format!("string of {len} characters is shorter than minLength {min}"),
            ));
        }
    }
    if let Some(max) = count_bound(schema, "maxLength") {
        if len > max {
            return Err(violation(
                path,
                format!("string of {len} characters is longer than maxLength {max}"),
            ));
        }
    }
    Ok(())
}

/// A number bound: its keyword, whether a number satisfies it, and how a violation reads.
type NumberBound = (&'static str, fn(f64, f64) -> bool, &'static str);

const NUMBER_BOUNDS: [NumberBound; 4] = [
    ("minimum", |n, b| n >= b, "less than minimum"),
    ("maximum", |n, b| n <= b, "greater than maximum"),
    ("exclusiveMinimum", |n, b| n > b, "not greater than exclusiveMinimum"),
    ("exclusiveMaximum", |n, b| n < b, "not less than exclusiveMaximum"),
];

fn check_number(n: f64, schema: &Map<String, Value>, path: &str) -> Result<(), SchemaViolation> {
    for (keyword, ok, what) in NUMBER_BOUNDS {
        if let Some(b) = bound(schema, keyword) {
            if !ok(n, b) {
                return Err(violation(path, format!("{n} is {what} {b}")));
            }
        }
    }
    Ok(())
}

fn check_array(
    items: &[Value],
    schema: &Map<String, Value>,
    path: &mut String,
) -> Result<(), SchemaViolation> {
    let len = items.len() as u64;
    if let Some(min) = count_bound(schema, "minItems") {
        if len < min {
            return Err(violation(path, format!("array of {len} items has fewer than minItems {min}")));
        }
    }
    if let Some(max) = count_bound(schema, "maxItems") {
        if len > max {
            return Err(violation(path, format!("array of {len} items has more than maxItems {max}")));
        }
    }
    match schema.get("items") {
        Some(Value::Array(by_position)) => {
            for (i, (item, item_schema)) in items.iter().zip(by_position).enumerate() {
                check_child(item, item_schema, path, &i.to_string())?;
            }
        }
        Some(item_schema) => {
            for (i, item) in items.iter().enumerate() {
                check_child(item, item_schema, path, &i.to_string())?;
            }
        }
        None => {}
    }
    Ok(())
}

fn check_object(
    map: &Map<String, Value>,
    schema: &Map<String, Value>,
    path: &mut String,
) -> Result<(), SchemaViolation> {
    let properties = schema.get("properties").and_then(Value::as_object);
    if let Some(properties) = properties {
        for (key, property_schema) in properties {
            if let Some(property) = map.get(key) {
                check_child(property, property_schema, path, key)?;
            }
        }
    }
    if let Some(Value::Array(required)) = schema.get("required") {
        for key in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(key) {
                return Err(violation(path, format!("missing required property `{key}`")));
            }
        }
    }
    let Some(additional) = schema.get("additionalProperties") else {
        return Ok(());
    };
    for (key, property) in map {
        if properties.is_some_and(|p| p.contains_key(key)) {
            continue;
        }
        match additional {
            Value::Bool(false) => return Err(violation(path, format!("unexpected property `{key}`"))),
            other => check_child(property, other, path, key)?,
        }
    }
    Ok(())
}

/// Check a child value with `/segment` pushed onto the path (escaped as a JSON
/// pointer segment: `~` as `~0`, `/` as `~1`).
fn check_child(
    value: &Value,
    schema: &Value,
    path: &mut String,
    segment: &str,
) -> Result<(), SchemaViolation> {
    let len = path.len();
    path.push('/');
    for c in segment.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
    let result = check(value, schema, path);
    path.truncate(len);
    result
}

fn check_any(
    value: &Value,
    alternatives: &[Value],
    keyword: &str,
    path: &mut String,
) -> Result<(), SchemaViolation> {
    let mut deepest: Option<SchemaViolation> = None;
    for alternative in alternatives {
        match check(value, alternative, path) {
            Ok(()) => return Ok(()),
            Err(v) => {
                if deepest.as_ref().is_none_or(|d| v.path.len() > d.path.len()) {
                    deepest = Some(v);
                }
            }
        }
    }
    match deepest {
        None => Ok(()), // an empty list of alternatives constrains nothing here
        Some(closest) => Err(violation(
            path,
            format!(
                "matches none of the {} alternatives of {keyword}; closest: {closest}",
                alternatives.len()
            ),
        )),
    }
}

/// Render a template's `{name}` placeholders in one pass, so that substituted text
/// (a schema full of braces) is never read as a placeholder itself. A brace that
/// does not start a known placeholder is kept as it is.
fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + vars.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let placeholder = after.find('}').and_then(|close| {
            vars.iter().find(|(name, _)| *name == &after[..close]).map(|(_, v)| (close, v))
        });
        match placeholder {
            Some((close, value)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.truncate(out.trim_end().len());
    out
}

/// The text added to the system prompt when structured output is asked for in the
/// prompt (no `response_format`): answer with only a JSON value matching the
/// schema, followed by the schema, pretty-printed. From
/// `src/prompts/structured_output.txt`.
pub fn schema_instructions(schema: &JsonSchema) -> String {
    let pretty = format!("{:#}", schema.schema);
    render(STRUCTURED_OUTPUT_TEMPLATE, &[("name", &schema.name), ("schema", &pretty)])
}

/// The user message of the one repair round, given what was wrong with the
/// previous answer (a [`SchemaViolation`]'s text, or why no JSON was found). From
/// `src/prompts/structured_repair.txt`.
pub fn repair_instructions(violation_or_parse_error: &str) -> String {
    render(STRUCTURED_REPAIR_TEMPLATE, &[("error", violation_or_parse_error)])
}

/// What a JSON value is, for error messages: `a string`, `an array`, `null`, ...
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn failing_choices_get_one_repair_round() {
        let schema = JsonSchema {
            name: "v".into(),
            schema: serde_json::json!({"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}),
        };
        let mut request = ChatRequest::new(vec![ChatMessage::system("s"), ChatMessage::user("u")]);
        request.params.n = 2;
        request.params.temperature = Some(0.5);
        let choices = vec![
            Choice { text: "{\"a\": 1}".into(), finish_reason: crate::FinishReason::Stop },
            Choice { text: "oops".into(), finish_reason: crate::FinishReason::Stop },
        ];
        let mut rounds = Vec::new();
        let (checked, usage) = block_on(check_or_repair(choices.clone(), &request, &schema, |round| {
            rounds.push(round);
            async {
                Ok(("```json\n{\"a\": 2}\n```".to_string(), Usage { prompt_tokens: 5, completion_tokens: 3 }))
            }
        }))
        .unwrap();
        assert_eq!(checked.iter().map(|c| c.text.as_str()).collect::<Vec<_>>(), ["{\"a\":1}", "{\"a\":2}"]);
        assert_eq!(usage, Usage { prompt_tokens: 5, completion_tokens: 3 });
        assert_eq!(rounds.len(), 1, "only the failing choice is repaired");
        let round = &rounds[0];
        assert_eq!(round.messages.len(), 4);
        assert_eq!(round.messages[2], ChatMessage::assistant("oops"));
        assert_eq!((round.params.n, round.params.temperature), (1, Some(0.5)));

        let failed = block_on(check_or_repair(choices, &request, &schema, |_| async {
            Ok(("{\"a\": \"x\"}".to_string(), Usage::default()))
        }))
        .unwrap_err();
        assert!(
            matches!(&failed, BackendError::Structured { schema, repairs: 1, raw, .. } if schema == "v" && raw == "{\"a\": \"x\"}"),
            "{failed:?}"
        );
    }

    #[test]
    fn check_structured_reports_parse_and_schema_problems() {
        let schema = serde_json::json!({"type": "object", "required": ["label"], "properties": {"label": {"type": "string"}}});
        assert_eq!(
            check_structured("Sure: {\"label\": \"safe\"}", &schema).unwrap(),
            serde_json::json!({"label": "safe"})
        );
        assert!(check_structured("no json", &schema).unwrap_err().contains("no JSON value"));
        assert!(check_structured(" ", &schema).unwrap_err().contains("empty"));
        let e = check_structured("{\"label\": 3}", &schema).unwrap_err();
        assert_eq!(e, "the JSON does not match the schema at /label: expected string, got number");
    }

    #[test]
    fn repair_conversation_extends_the_conversation() {
        let repair = repair_conversation(&[ChatMessage::user("u")], "bad", "at /x: wrong");
        assert_eq!(repair.len(), 3);
        assert_eq!(repair[1], ChatMessage::assistant("bad"));
        assert!(repair[2].content.contains("at /x: wrong"));
    }
    use serde_json::json;

    #[test]
    fn extracts_whole_text_and_scalars() {
        assert_eq!(extract_json("  {\"a\": 1}\n"), Some(json!({"a": 1})));
        assert_eq!(extract_json("[1, 2]"), Some(json!([1, 2])));
        assert_eq!(extract_json("42"), Some(json!(42)));
        assert_eq!(extract_json("\"hi\""), Some(json!("hi")));
    }

    #[test]
    fn extracts_fenced_blocks() {
        let text = "Here you go:\n```json\n{\"queries\": [\"a\", \"b\"]}\n```\nHope that helps.";
        assert_eq!(extract_json(text), Some(json!({"queries": ["a", "b"]})));
        let bare = "```\n[{\"x\": true}]\n```";
        assert_eq!(extract_json(bare), Some(json!([{"x": true}])));
        let upper_tag = "Sure!\n```JSON\n{\"n\": 2}\n```";
        assert_eq!(extract_json(upper_tag), Some(json!({"n": 2})));
        // A fence that the token limit cut before its close.
        let unterminated = "```json\n{\"n\": 3}\n";
        assert_eq!(extract_json(unterminated), Some(json!({"n": 3})));
        // A first block that is not JSON is skipped.
        let two = "```python\nprint({1: 2})\n```\nand\n```json\n{\"ok\": 1}\n```";
        assert_eq!(extract_json(two), Some(json!({"ok": 1})));
    }

    #[test]
    fn extracts_spans_from_prose() {
        let text = "Sure! The answer is {\"label\": \"safe\", \"score\": 0.9}. Let me know.";
        assert_eq!(extract_json(text), Some(json!({"label": "safe", "score": 0.9})));
        let array = "Topics: [\"a\", \"b\"] as requested";
        assert_eq!(extract_json(array), Some(json!(["a", "b"])));
    }

    #[test]
    fn braces_inside_strings_do_not_count() {
        let text = r#"Result: {"text": "a } brace and a \" quote {", "n": [1, {"m": "]"}]} trailing }"#;
        assert_eq!(
            extract_json(text),
            Some(json!({"text": "a } brace and a \" quote {", "n": [1, {"m": "]"}]}))
        );
        let escaped_backslash = r#"x {"path": "C:\\dir\\"} y"#;
        assert_eq!(extract_json(escaped_backslash), Some(json!({"path": "C:\\dir\\"})));
    }

    #[test]
    fn skips_spans_that_do_not_parse() {
        // A bracketed citation and a non-JSON brace span come before the value.
        let text = "As shown in [1] and {not json}, the result is {\"ok\": true}.";
        assert_eq!(extract_json(text), Some(json!({"ok": true})));
        // Non-ASCII text around and inside.
        let text = "Voilà — {\"mot\": \"été\"} fin";
        assert_eq!(extract_json(text), Some(json!({"mot": "été"})));
    }

    #[test]
    fn invalid_text_gives_none() {
        assert_eq!(extract_json(""), None);
        assert_eq!(extract_json("   "), None);
        assert_eq!(extract_json("no json here"), None);
        assert_eq!(extract_json("{\"a\": 1"), None);
        assert_eq!(extract_json("{'a': 1}"), None);
        assert_eq!(extract_json("[1, 2}"), None);
        assert_eq!(extract_json("```json\n{broken\n```"), None);
    }

    fn err(value: Value, schema: Value) -> SchemaViolation {
        validate(&value, &schema).expect_err("expected a violation")
    }

    #[test]
    fn type_single_array_and_integer() {
        assert!(validate(&json!("x"), &json!({"type": "string"})).is_ok());
        let v = err(json!(3), json!({"type": "string"}));
        assert_eq!(v.to_string(), "at (root): expected string, got number");
        assert!(validate(&json!(null), &json!({"type": ["string", "null"]})).is_ok());
        let v = err(json!(true), json!({"type": ["string", "null"]}));
        assert_eq!(v.message, "expected string or null, got boolean");
        assert!(validate(&json!(3), &json!({"type": "integer"})).is_ok());
        assert!(validate(&json!(3.0), &json!({"type": "integer"})).is_ok());
        assert_eq!(err(json!(3.5), json!({"type": "integer"})).message, "expected integer, got number");
        assert!(validate(&json!(3.5), &json!({"type": "number"})).is_ok());
        for (value, name) in [(json!({}), "object"), (json!([]), "array"), (json!(false), "boolean")] {
            assert!(validate(&value, &json!({"type": name})).is_ok(), "{name}");
            assert!(validate(&value, &json!({"type": "string"})).is_err(), "{name}");
        }
        // A misspelt type name matches nothing.
        assert!(validate(&json!("x"), &json!({"type": "strng"})).is_err());
    }

    #[test]
    fn nullable_keyword() {
        assert!(validate(&json!(null), &json!({"type": "string", "nullable": true})).is_ok());
        assert!(validate(&json!(null), &json!({"type": "string"})).is_err());
    }

    #[test]
    fn properties_required_and_pointer_paths() {
        let schema = json!({
            "type": "object",
            "properties": {"queries": {"type": "array", "items": {
                "type": "object",
                "properties": {"type": {"type": "string"}, "text": {"type": "string"}},
                "required": ["type", "text"]
            }}},
            "required": ["queries"]
        });
        let ok = json!({"queries": [{"type": "a", "text": "t"}]});
        assert!(validate(&ok, &schema).is_ok());
        let bad = json!({"queries": [{"type": "a", "text": "t"}, {"type": "b", "text": "u"}, {"type": 7, "text": "v"}]});
        let v = err(bad, schema.clone());
        assert_eq!(v.path, "/queries/2/type");
        assert_eq!(v.to_string(), "at /queries/2/type: expected string, got number");
        let missing = json!({"queries": [{"type": "a"}]});
        assert_eq!(
            err(missing, schema.clone()).to_string(),
            "at /queries/0: missing required property `text`"
        );
        assert_eq!(err(json!({}), schema).message, "missing required property `queries`");
    }

    #[test]
    fn pointer_segments_are_escaped() {
        let schema = json!({"properties": {"a/b~c": {"type": "string"}}});
        assert_eq!(err(json!({"a/b~c": 1}), schema).path, "/a~1b~0c");
    }

    #[test]
    fn additional_properties_bool_and_schema() {
        let closed = json!({"properties": {"a": {}}, "additionalProperties": false});
        assert!(validate(&json!({"a": 1}), &closed).is_ok());
        assert_eq!(err(json!({"a": 1, "b": 2}), closed).message, "unexpected property `b`");
        let typed = json!({"properties": {"a": {}}, "additionalProperties": {"type": "integer"}});
        assert!(validate(&json!({"a": "x", "b": 2}), &typed).is_ok());
        assert_eq!(err(json!({"a": "x", "b": "y"}), typed).path, "/b");
        // Absent: anything goes.
        assert!(validate(&json!({"z": 1}), &json!({"properties": {"a": {}}})).is_ok());
    }

    #[test]
    fn items_schema_and_positional() {
        let schema = json!({"items": {"type": "string"}});
        assert!(validate(&json!(["a", "b"]), &schema).is_ok());
        assert_eq!(err(json!(["a", 1]), schema).path, "/1");
        let tuple = json!({"items": [{"type": "string"}, {"type": "number"}]});
        assert!(validate(&json!(["a", 1, null]), &tuple).is_ok());
        assert_eq!(err(json!([1, 1]), tuple).path, "/0");
    }

    #[test]
    fn enum_and_const() {
        let schema = json!({"enum": ["safe", "unsafe"]});
        assert!(validate(&json!("safe"), &schema).is_ok());
        assert_eq!(err(json!("maybe"), schema).message, r#"expected one of "safe", "unsafe", got "maybe""#);
        assert!(validate(&json!(1.0), &json!({"const": 1})).is_ok());
        assert!(validate(&json!({"a": [1]}), &json!({"const": {"a": [1.0]}})).is_ok());
        assert_eq!(err(json!(2), json!({"const": 1})).message, "expected 1, got 2");
    }

    #[test]
    fn item_and_length_bounds() {
        let items = json!({"minItems": 2, "maxItems": 3});
        assert!(validate(&json!([1, 2]), &items).is_ok());
        assert!(validate(&json!([1, 2, 3]), &items).is_ok());
        assert!(err(json!([1]), items.clone()).message.contains("minItems 2"));
        assert!(err(json!([1, 2, 3, 4]), items).message.contains("maxItems 3"));
        let length = json!({"minLength": 2, "maxLength": 3});
        assert!(validate(&json!("ab"), &length).is_ok());
        assert!(validate(&json!("été"), &length).is_ok(), "characters, not bytes");
        assert!(err(json!("a"), length.clone()).message.contains("minLength 2"));
        assert!(err(json!("abcd"), length).message.contains("maxLength 3"));
    }

    #[test]
    fn number_bounds() {
        let schema = json!({"minimum": 0, "maximum": 1});
        assert!(validate(&json!(0), &schema).is_ok());
        assert!(validate(&json!(1.0), &schema).is_ok());
        assert!(err(json!(-0.5), schema.clone()).message.contains("less than minimum"));
        assert!(err(json!(2), schema).message.contains("greater than maximum"));
        let exclusive = json!({"exclusiveMinimum": 0, "exclusiveMaximum": 1});
        assert!(validate(&json!(0.5), &exclusive).is_ok());
        assert!(validate(&json!(0), &exclusive).is_err());
        assert!(validate(&json!(1), &exclusive).is_err());
    }

    #[test]
    fn any_of_one_of_all_of() {
        let schema = json!({"anyOf": [{"type": "string"}, {"type": "object", "required": ["a"]}]});
        assert!(validate(&json!("x"), &schema).is_ok());
        assert!(validate(&json!({"a": 1}), &schema).is_ok());
        let v = err(json!(3), schema);
        assert!(v.message.starts_with("matches none of the 2 alternatives of anyOf"), "{v}");
        // oneOf is read as anyOf: a value fitting both alternatives passes.
        let one_of = json!({"oneOf": [{"type": "number"}, {"type": "integer"}]});
        assert!(validate(&json!(3), &one_of).is_ok());
        assert!(validate(&json!("3"), &one_of).is_err());
        let all_of = json!({"allOf": [{"type": "number"}, {"minimum": 2}]});
        assert!(validate(&json!(3), &all_of).is_ok());
        assert!(validate(&json!(1), &all_of).is_err());
    }

    #[test]
    fn boolean_schemas_and_unknown_keywords() {
        assert!(validate(&json!(1), &json!(true)).is_ok());
        assert!(validate(&json!(1), &json!(false)).is_err());
        let schema = json!({"type": "string", "format": "email", "pattern": "^x$", "$ref": "#/x"});
        assert!(validate(&json!("anything"), &schema).is_ok());
    }

    #[test]
    fn schema_instructions_render_the_template() {
        let schema = JsonSchema {
            name: "verdict".into(),
            schema: json!({"type": "object", "properties": {"label": {"enum": ["{name}", "b"]}}}),
        };
        let text = schema_instructions(&schema);
        assert!(text.starts_with("Answer with only a JSON value"), "{text}");
        assert!(text.contains("`verdict`"), "{text}");
        assert!(text.contains(&format!("{:#}", schema.schema)), "{text}");
        assert!(text.contains("\"{name}\""), "substituted text is not rendered again: {text}");
        assert!(!text.contains("{schema}"), "{text}");
        assert!(!text.ends_with('\n'));
    }

    #[test]
    fn repair_instructions_carry_the_error() {
        let text = repair_instructions("at /label: expected string, got number");
        assert!(text.contains("at /label: expected string, got number"), "{text}");
        assert!(text.contains("only the corrected JSON"), "{text}");
        assert!(!text.contains("{error}"));
    }

    #[test]
    fn render_keeps_unknown_braces() {
        assert_eq!(render("a {x} {y} {", &[("x", "1")]), "a 1 {y} {");
    }
}
