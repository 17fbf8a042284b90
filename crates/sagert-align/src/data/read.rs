//! Reading TRL preference data from JSONL and Parquet files and the
//! directories sagert writes.
//!
//! A record is a JSON object (a JSONL line, a Parquet row read as JSON) with
//!
//! - `prompt`: a string (standard form: one `user` message) or a list of
//!   `{role, content}` messages (conversational form);
//! - `chosen`, `rejected`: a string (one `assistant` message) or a list of
//!   `assistant` messages;
//! - optionally `ref_chosen_logps` and `ref_rejected_logps` (numbers, both or
//!   neither), `id`, and a category column: the first present of [`CATEGORY_COLUMNS`].
//!
//! Other columns are ignored (TRL allows extra columns; sagert's exports carry
//! provenance). Parquet list columns arrive as JSON arrays of `{role, content}`
//! objects (the exporter writes them as Parquet LISTs, never as JSON-encoded
//! strings), so both files share one record parser; a string is always taken as
//! text, never decoded as JSON.

use std::path::{Path, PathBuf};

use sagert_backend::{ChatMessage, ChatRole};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::PreferencePair;
use crate::error::{AlignError, Result};
use sagert_backend::json::kind;

/// The columns a pair's category is taken from, first present first.
///
/// `category` is what the PKU-SafeRLHF and HH-RLHF importers write (and ALERT
/// carries). sagert's own exports have no `category`; their `taxonomy_path`
/// (`macro/micro/leaf`) names the leaf category and comes before `leaf`,
/// because leaf ids are unique only within their micro category.
pub const CATEGORY_COLUMNS: [&str; 4] = ["category", "taxonomy_path", "leaf_path", "leaf"];

/// The directories a split file is looked for in, below a directory given to
/// [`read_preferences`], in order: a dataset directory's `trl` and `trl-chat`
/// configs, a run directory's `dataset/`, then the directory itself.
const SPLIT_DIRS: [&str; 5] = ["trl", "trl-chat", "dataset/trl", "dataset/trl-chat", ""];

/// The file formats read, by extension; JSONL wins where both exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Jsonl,
    Parquet,
}

impl Format {
    const ALL: [Format; 2] = [Format::Jsonl, Format::Parquet];

    fn extension(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
        }
    }

    fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?;
        Format::ALL.into_iter().find(|f| f.extension().eq_ignore_ascii_case(ext))
    }
}

/// Read the preference pairs of `path`.
///
/// `path` is a `.jsonl` or `.parquet` file (`split` is then ignored), or a
/// directory holding `split`: a dataset directory (`trl/{split}.jsonl`,
/// `trl-chat/{split}.jsonl`, or `.parquet`), a run directory (the same below
/// `dataset/`), or a directory with `{split}.jsonl` or `{split}.parquet`. JSONL
/// is preferred where both exist.
///
/// Errors: [`AlignError::Dataset`] when nothing is found (naming every path
/// looked for), the format is unknown or the file holds no records;
/// [`AlignError::Data`] for a bad record, with its 1-based line (JSONL, blank
/// lines counted) or row (Parquet) and the field.
pub fn read_preferences(path: &Path, split: &str) -> Result<Vec<PreferencePair>> {
    let (file, format) = locate(path, split)?;
    let pairs = match format {
        Format::Jsonl => read_jsonl(&file)?,
        Format::Parquet => read_parquet(&file)?,
    };
    if pairs.is_empty() {
        return Err(AlignError::Dataset { file, message: "no records".into() });
    }
    Ok(pairs)
}

/// The file to read for `path` and `split`.
fn locate(path: &Path, split: &str) -> Result<(PathBuf, Format)> {
    let dataset_error = |message: String| AlignError::Dataset { file: path.to_path_buf(), message };
    if path.is_file() {
        return match Format::of(path) {
            Some(format) => Ok((path.to_path_buf(), format)),
            None => Err(dataset_error(
                "unknown format: expected a .jsonl or .parquet file, or a dataset directory".into(),
            )),
        };
    }
    if !path.is_dir() {
        return Err(dataset_error("no such file or directory".into()));
    }
    if split.is_empty() || split.contains(['/', '\\']) || split == "." || split == ".." {
        return Err(dataset_error(format!("`{split}` is not a split name")));
    }
    let mut looked = Vec::new();
    for dir in SPLIT_DIRS {
        for format in Format::ALL {
            let name = format!("{split}.{}", format.extension());
            let relative = if dir.is_empty() { PathBuf::from(name) } else { Path::new(dir).join(name) };
            let file = path.join(&relative);
            if file.is_file() {
                return Ok((file, format));
            }
            looked.push(relative.display().to_string());
        }
    }
    Err(dataset_error(format!("no `{split}` split: looked for {}", looked.join(", "))))
}

/// Read a JSONL file: one record per line; blank lines are skipped but counted.
fn read_jsonl(file: &Path) -> Result<Vec<PreferencePair>> {
    let bytes = std::fs::read(file).map_err(AlignError::io(file))?;
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        // A UTF-8 byte-order mark some editors write at the start of a file.
        let raw = if i == 0 { raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw) } else { raw };
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let bad = |field: &str, message: String| AlignError::data(file, line, field, message);
        let text = std::str::from_utf8(raw)
            .map_err(|e| bad("-", format!("not UTF-8 (invalid byte at column {})", e.valid_up_to() + 1)))?;
        let row = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(row)) => row,
            Ok(other) => return Err(bad("-", format!("expected a JSON object, found {}", kind(&other)))),
            Err(e) => return Err(bad("-", format!("not JSON: {e}"))),
        };
        out.push(parse_record(&row, &bad)?);
    }
    Ok(out)
}

/// Read a Parquet file through the exporter's reader; errors name the 1-based row.
fn read_parquet(file: &Path) -> Result<Vec<PreferencePair>> {
    let rows = sagert_pipeline::export::read_parquet_rows(file).map_err(|e| {
        let message = match e {
            sagert_pipeline::PipelineError::Parquet { message, .. } => format!("parquet: {message}"),
            other => other.to_string(),
        };
        AlignError::Dataset { file: file.to_path_buf(), message }
    })?;
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let row: Map<String, Value> = row.into_iter().collect();
        let bad = |field: &str, message: String| AlignError::data(file, i + 1, field, message);
        out.push(parse_record(&row, &bad)?);
    }
    Ok(out)
}

/// One record into a pair; `bad(field, message)` makes the error for its place.
fn parse_record(
    row: &Map<String, Value>,
    bad: &dyn Fn(&str, String) -> AlignError,
) -> Result<PreferencePair> {
    let prompt = messages(row, "prompt", ChatRole::User, bad)?;
    let chosen = messages(row, "chosen", ChatRole::Assistant, bad)?;
    let rejected = messages(row, "rejected", ChatRole::Assistant, bad)?;
    for (field, turns) in [("chosen", &chosen), ("rejected", &rejected)] {
        if let Some((i, m)) = turns.iter().enumerate().find(|(_, m)| m.role != ChatRole::Assistant) {
            return Err(bad(
                &format!("{field}[{i}].role"),
                format!(
                    "expected `assistant`, found `{}`: a response holds only assistant turns",
                    role_name(m.role)
                ),
            ));
        }
    }

    let ref_chosen_logps = number(row, "ref_chosen_logps", bad)?;
    let ref_rejected_logps = number(row, "ref_rejected_logps", bad)?;
    match (ref_chosen_logps, ref_rejected_logps) {
        (Some(_), None) => {
            return Err(bad("ref_rejected_logps", "missing, but `ref_chosen_logps` is given".into()))
        }
        (None, Some(_)) => {
            return Err(bad("ref_chosen_logps", "missing, but `ref_rejected_logps` is given".into()))
        }
        _ => {}
    }

    let mut category = String::new();
    if let Some(&column) = CATEGORY_COLUMNS.iter().find(|c| !row.get(**c).unwrap_or(&Value::Null).is_null()) {
        match &row[column] {
            Value::String(s) => category = s.clone(),
            other => return Err(bad(column, format!("expected a string, found {}", kind(other)))),
        }
    }

    let id = match row.get("id") {
        None | Some(Value::Null) => content_id(&prompt, &chosen, &rejected),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(bad("id", "empty".into())),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        Some(other) => return Err(bad("id", format!("expected a string, found {}", kind(other)))),
    };
    Ok(PreferencePair { id, category, prompt, chosen, rejected, ref_chosen_logps, ref_rejected_logps })
}

/// Field `field` as messages: a string becomes one message of `role`.
fn messages(
    row: &Map<String, Value>,
    field: &str,
    role: ChatRole,
    bad: &dyn Fn(&str, String) -> AlignError,
) -> Result<Vec<ChatMessage>> {
    match row.get(field) {
        None | Some(Value::Null) => {
            let hint = if field == "prompt" && row.contains_key("chosen") {
                " (implicit-prompt data, where `chosen` and `rejected` hold the whole \
                 conversation, is not supported: split the shared prompt off first)"
            } else {
                ""
            };
            Err(bad(field, format!("missing{hint}")))
        }
        Some(Value::String(s)) if s.trim().is_empty() => Err(bad(field, "empty".into())),
        Some(Value::String(s)) => Ok(vec![ChatMessage { role, content: s.clone() }]),
        Some(Value::Array(items)) if items.is_empty() => Err(bad(field, "empty list of messages".into())),
        Some(Value::Array(items)) => {
            items.iter().enumerate().map(|(i, item)| message(item, &format!("{field}[{i}]"), bad)).collect()
        }
        Some(other) => Err(bad(
            field,
            format!("expected a string or a list of {{role, content}} messages, found {}", kind(other)),
        )),
    }
}

/// One `{role, content}` message at `at` (`prompt[1]`).
fn message(item: &Value, at: &str, bad: &dyn Fn(&str, String) -> AlignError) -> Result<ChatMessage> {
    let Value::Object(m) = item else {
        return Err(bad(at, format!("expected a {{role, content}} object, found {}", kind(item))));
    };
    let role = match m.get("role") {
        Some(Value::String(r)) => match r.as_str() {
            "system" => ChatRole::System,
            "user" => ChatRole::User,
            "assistant" => ChatRole::Assistant,
            other => {
                return Err(bad(
                    &format!("{at}.role"),
                    format!("unknown role `{other}` (expected system, user or assistant)"),
                ))
            }
        },
        None | Some(Value::Null) => return Err(bad(&format!("{at}.role"), "missing".into())),
        Some(other) => {
            return Err(bad(&format!("{at}.role"), format!("expected a string, found {}", kind(other))))
        }
    };
    let content = match m.get("content") {
        Some(Value::String(c)) if c.trim().is_empty() => {
            return Err(bad(&format!("{at}.content"), "empty".into()))
        }
        Some(Value::String(c)) => c.clone(),
        None | Some(Value::Null) => return Err(bad(&format!("{at}.content"), "missing".into())),
        Some(other) => {
            return Err(bad(&format!("{at}.content"), format!("expected a string, found {}", kind(other))))
        }
    };
    Ok(ChatMessage { role, content })
}

/// An optional finite number.
fn number(
    row: &Map<String, Value>,
    field: &str,
    bad: &dyn Fn(&str, String) -> AlignError,
) -> Result<Option<f64>> {
    match row.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(bad(field, format!("{n} is not a finite number"))),
        },
        Some(other) => Err(bad(field, format!("expected a number, found {}", kind(other)))),
    }
}

/// The hex SHA-256 of the JSON of `[prompt, chosen, rejected]` (as messages).
fn content_id(prompt: &[ChatMessage], chosen: &[ChatMessage], rejected: &[ChatMessage]) -> String {
    let json = serde_json::to_vec(&(prompt, chosen, rejected)).expect("messages serialise");
    hex::encode(Sha256::digest(&json))
}

fn role_name(role: ChatRole) -> &'static str {
    match role {
        ChatRole::System => "system",
        ChatRole::User => "user",
        ChatRole::Assistant => "assistant",
    }
}
