//! JSON Lines input, shared by the crate's readers: one JSON object a line,
//! each with its 1-based line number.
//!
//! Blank lines (whitespace only) are skipped but counted. A `\r` before the
//! `\n` and a UTF-8 byte-order mark at the start of the file are ignored.
//! Every line is checked on its own, so an error names the line: a line that
//! is not UTF-8, not JSON, or not a JSON object is an [`EvalError::Syntax`]
//! (`file:line: message`); a file that cannot be read is an [`EvalError::Io`].
//! What a record's fields must be, and what an empty file means, is each
//! reader's business.

use std::path::Path;

use serde_json::{Map, Value};

use crate::{EvalError, Result};
pub(crate) use sagert_backend::json::kind;

/// The objects of the JSON Lines file `file`, each with its line (see the
/// [module docs](self)).
pub(crate) fn objects(file: &Path) -> Result<Vec<(usize, Map<String, Value>)>> {
    let bytes = std::fs::read(file).map_err(EvalError::io(file))?;
    objects_in(file, &bytes)
}

/// The objects of JSON Lines `bytes` (a file's contents, after decompression,
/// say), each with its line; `file` names them in errors.
pub(crate) fn objects_in(file: &Path, bytes: &[u8]) -> Result<Vec<(usize, Map<String, Value>)>> {
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let syntax = |message: String| EvalError::Syntax { file: file.to_path_buf(), line, message };
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let raw = if i == 0 { raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw) } else { raw };
        let text = std::str::from_utf8(raw).map_err(|e| syntax(utf8_message(e)))?;
        if text.trim().is_empty() {
            continue;
        }
        if out.is_empty() && text.trim_start().starts_with('[') {
            return Err(syntax(
                "a JSON array: expected JSON Lines (one object a line); convert the file first".into(),
            ));
        }
        match serde_json::from_str(text) {
            Ok(Value::Object(map)) => out.push((line, map)),
            Ok(other) => return Err(syntax(format!("expected a JSON object, found {}", kind(&other)))),
            Err(e) => return Err(syntax(format!("not JSON: {e}"))),
        }
    }
    Ok(out)
}

/// The message for bytes that are not UTF-8: where the first bad byte is.
pub(crate) fn utf8_message(e: std::str::Utf8Error) -> String {
    format!("not UTF-8: invalid byte at column {}", e.valid_up_to() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(bytes: &[u8]) -> Vec<usize> {
        objects_in(Path::new("x.jsonl"), bytes).unwrap().into_iter().map(|(line, _)| line).collect()
    }

    fn error(bytes: &[u8]) -> String {
        objects_in(Path::new("x.jsonl"), bytes).unwrap_err().to_string()
    }

    #[test]
    fn blank_lines_are_skipped_but_counted() {
        assert_eq!(lines(b"\xEF\xBB\xBF{\"a\": 1}\r\n  \r\n\n{\"b\": 2}"), [1, 4]);
        assert!(lines(b"").is_empty());
    }

    #[test]
    fn bad_lines_name_their_line() {
        assert_eq!(error(b"{}\n\n[1]\n"), "x.jsonl:3: expected a JSON object, found an array");
        assert!(error(b"{}\n{\"a\": \n").starts_with("x.jsonl:2: not JSON: "));
        assert_eq!(error(b"{}\n{\"a\": \"\xff\"}\n"), "x.jsonl:2: not UTF-8: invalid byte at column 8");
        assert!(error(b"\n[{}]\n").starts_with("x.jsonl:2: a JSON array: expected JSON Lines"));
    }
}
