//! Typed access to a record's fields, with errors that name the file, line and field.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::read::Row;
use crate::jsonl::kind;
use crate::{EvalError, Result};

/// Output columns an input column may not overwrite: an input column of that
/// name is kept as `input_<name>` instead.
pub(crate) const RESERVED: [&str; 9] = [
    "id",
    "prompt",
    "chosen",
    "rejected",
    "category",
    "macro_category",
    "source",
    "source_categories",
    "jailbreak_type",
];

impl Row {
    /// The error for `field` of this record.
    pub(crate) fn error(&self, field: &str, message: impl Into<String>) -> EvalError {
        EvalError::Record {
            file: self.file.to_path_buf(),
            line: self.line,
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The field's value; `None` when absent or null.
    pub(crate) fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field).filter(|v| !v.is_null())
    }

    /// A required string (may be empty).
    pub(crate) fn string(&self, field: &str) -> Result<&str> {
        match self.get(field) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(self.error(field, format!("expected a string, found {}", kind(other)))),
            None => Err(self.error(field, "missing")),
        }
    }

    /// A required string with something besides whitespace in it.
    pub(crate) fn text(&self, field: &str) -> Result<&str> {
        let s = self.string(field)?;
        if s.trim().is_empty() {
            return Err(self.error(field, "empty"));
        }
        Ok(s)
    }

    /// An optional string: `None` when absent or null.
    pub(crate) fn opt_string(&self, field: &str) -> Result<Option<&str>> {
        match self.get(field) {
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.error(field, format!("expected a string, found {}", kind(other)))),
            None => Ok(None),
        }
    }

    /// A required boolean.
    pub(crate) fn boolean(&self, field: &str) -> Result<bool> {
        match self.get(field) {
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.error(field, format!("expected a boolean, found {}", kind(other)))),
            None => Err(self.error(field, "missing")),
        }
    }

    /// A required integer in `lo..=hi`.
    pub(crate) fn integer(&self, field: &str, lo: i64, hi: i64) -> Result<i64> {
        match self.get(field) {
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) if (lo..=hi).contains(&i) => Ok(i),
                _ => Err(self.error(field, format!("expected an integer from {lo} to {hi}, found {n}"))),
            },
            Some(other) => Err(self.error(field, format!("expected an integer, found {}", kind(other)))),
            None => Err(self.error(field, "missing")),
        }
    }

    /// An optional integer in `lo..=hi`, kept as its JSON value.
    pub(crate) fn opt_integer(&self, field: &str, lo: i64, hi: i64) -> Result<Option<Value>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => self.integer(field, lo, hi).map(|_| Some(v.clone())),
        }
    }

    /// An id: a non-empty string or an integer, as a string; `None` when absent or null.
    pub(crate) fn id(&self, field: &str) -> Result<Option<String>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Err(self.error(field, "empty")),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
            Some(other) => {
                Err(self.error(field, format!("expected a string or an integer, found {}", kind(other))))
            }
        }
    }

    /// Labels: a string (one label; empty means none) or a list of strings;
    /// absent or null means none. Blank entries are skipped, duplicates dropped,
    /// order kept.
    pub(crate) fn labels(&self, field: &str) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        let mut push = |s: &str| {
            let s = s.trim();
            if !s.is_empty() && !out.iter().any(|o| o == s) {
                out.push(s.to_string());
            }
        };
        match self.get(field) {
            None => {}
            Some(Value::String(s)) => push(s),
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => push(s),
                        other => {
                            return Err(self.error(
                                &format!("{field}[{i}]"),
                                format!("expected a string, found {}", kind(other)),
                            ))
                        }
                    }
                }
            }
            Some(other) => {
                return Err(self
                    .error(field, format!("expected a string or a list of strings, found {}", kind(other))))
            }
        }
        Ok(out)
    }

    /// Every field except `used`, with reserved names prefixed by `input_`.
    pub(crate) fn rest(&self, used: &[&str]) -> Map<String, Value> {
        self.fields
            .iter()
            .filter(|(k, _)| !used.contains(&k.as_str()))
            .map(|(k, v)| {
                let key = if RESERVED.contains(&k.as_str()) { format!("input_{k}") } else { k.clone() };
                (key, v.clone())
            })
            .collect()
    }

    /// The named fields that are present (null included), cloned.
    pub(crate) fn keep(&self, names: &[&str]) -> Map<String, Value> {
        names.iter().filter_map(|n| self.fields.get(*n).map(|v| (n.to_string(), v.clone()))).collect()
    }
}

/// An id made from content: the first 16 hex digits of the SHA-256 of the
/// parts joined by U+001F (the unit separator), after the source's name.
pub(crate) fn content_id(source: &str, parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(source.as_bytes());
    for part in parts {
        hasher.update([0x1f]);
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ids_are_short_and_separate_parts() {
        let a = content_id("hh-rlhf", &["ab", "c"]);
        assert_eq!(a.len(), 16);
        assert_ne!(a, content_id("hh-rlhf", &["a", "bc"]));
        assert_ne!(a, content_id("trl", &["ab", "c"]));
        assert_eq!(a, content_id("hh-rlhf", &["ab", "c"]));
    }
}
