//! The rules a taxonomy file must follow, checked on the raw, span-carrying structs so
//! that every problem names its line. All problems are collected, not just the first.
//!
//! Rules: ids present, made of `[a-z0-9_+]` and unique (macros in the file, micros in
//! their macro, leaves in their micro, ALERT labels in the file); names and
//! descriptions present, non-empty and on one line (the top-level `description` and
//! `version` are optional); no macro without micros and no micro without leaves;
//! mapping values that exist in their target and are not repeated.

use std::collections::HashMap;

use toml::Spanned;

use crate::error::edit_distance;
use crate::parse::{Lines, RawTaxonomy, Text};
use crate::{MappingTarget, Problem};

/// Every problem in `raw`, ordered by line.
pub(crate) fn check(raw: &RawTaxonomy, lines: &Lines) -> Vec<Problem> {
    let mut checker = Checker { lines, problems: Vec::new() };
    checker.check(raw);
    let mut problems = checker.problems;
    problems.sort_by_key(|p| p.line);
    problems
}

struct Checker<'a> {
    lines: &'a Lines,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn report(&mut self, line: usize, id: &str, message: impl Into<String>) {
        self.problems.push(Problem { line, id: id.to_string(), message: message.into() });
    }

    fn line_of<T>(&self, value: &Spanned<T>) -> usize {
        self.lines.line(value.span().start)
    }

    fn check(&mut self, raw: &RawTaxonomy) {
        const TOP: &str = "taxonomy";
        match &raw.name {
            Some(name) => self.single_line_text("name", name, TOP),
            None => self.report(1, TOP, "missing `name`"),
        }
        for (field, value) in [("version", &raw.version), ("description", &raw.description)] {
            if let Some(value) = value {
                self.single_line_text(field, value, TOP);
            }
        }
        if raw.macros.is_empty() {
            self.report(1, TOP, "no macro categories (add `[[macro]]` tables)");
        }

        let mut macro_ids: HashMap<String, usize> = HashMap::new();
        let mut alert_labels: HashMap<String, (String, usize)> = HashMap::new();
        for (index, spanned_macro) in raw.macros.iter().enumerate() {
            let table_line = self.line_of(spanned_macro);
            let m = spanned_macro.get_ref();
            let fallback = format!("macro #{}", index + 1);
            let (macro_id, path) = self.node_id(&m.id, table_line, "macro", &fallback, "", &mut macro_ids);
            self.name_and_description(&m.name, &m.description, table_line, &path);
            if m.micros.is_empty() {
                self.report(table_line, &path, "macro category has no micro categories");
            }

            let mut micro_ids: HashMap<String, usize> = HashMap::new();
            for (index, spanned_micro) in m.micros.iter().enumerate() {
                let table_line = self.line_of(spanned_micro);
                let u = spanned_micro.get_ref();
                let fallback = format!("{path}/micro #{}", index + 1);
                let (micro_id, micro_path) =
                    self.node_id(&u.id, table_line, "micro", &fallback, &path, &mut micro_ids);
                self.name_and_description(&u.name, &u.description, table_line, &micro_path);
                if let (Some(macro_id), Some(micro_id)) = (&macro_id, &micro_id) {
                    let label = format!("{macro_id}_{micro_id}");
                    match alert_labels.get(&label) {
                        Some((other, line)) => {
                            let message =
                                format!("ALERT label `{label}` is also the label of `{other}` (line {line})");
                            self.report(table_line, &micro_path, message);
                        }
                        None => {
                            alert_labels.insert(label, (micro_path.clone(), table_line));
                        }
                    }
                }
                for (target, values) in [
                    (MappingTarget::Pku, &u.pku),
                    (MappingTarget::Harmbench, &u.harmbench),
                    (MappingTarget::Mlcommons, &u.mlcommons),
                ] {
                    self.mapping(target, values, &micro_path);
                }
                if u.leaves.is_empty() {
                    self.report(table_line, &micro_path, "micro category has no leaf categories");
                }

                let mut leaf_ids: HashMap<String, usize> = HashMap::new();
                for (index, spanned_leaf) in u.leaves.iter().enumerate() {
                    let table_line = self.line_of(spanned_leaf);
                    let l = spanned_leaf.get_ref();
                    let fallback = format!("{micro_path}/leaf #{}", index + 1);
                    let (_, leaf_path) =
                        self.node_id(&l.id, table_line, "leaf", &fallback, &micro_path, &mut leaf_ids);
                    self.name_and_description(&l.name, &l.description, table_line, &leaf_path);
                }
            }
        }
    }

    /// Checks a node's id; returns the id (when usable) and the path to name it by.
    fn node_id(
        &mut self,
        id: &Text,
        table_line: usize,
        kind: &str,
        fallback: &str,
        parent: &str,
        seen: &mut HashMap<String, usize>,
    ) -> (Option<String>, String) {
        let Some(spanned) = id else {
            self.report(table_line, fallback, format!("{kind} category has no `id`"));
            return (None, fallback.to_string());
        };
        let line = self.line_of(spanned);
        let value = spanned.get_ref().as_str();
        let path = if parent.is_empty() { value.to_string() } else { format!("{parent}/{value}") };
        if value.is_empty() {
            self.report(line, fallback, "`id` is empty");
            return (None, fallback.to_string());
        }
        if let Some(bad) = value.chars().find(|c| !is_id_char(*c)) {
            let message = format!(
                "invalid character {bad:?} in id `{value}` (use lowercase letters, digits, `_` and `+`)"
            );
            self.report(line, &path, message);
        }
        match seen.get(value) {
            Some(first) => {
                let scope =
                    if parent.is_empty() { "the taxonomy".to_string() } else { format!("`{parent}`") };
                let message =
                    format!("duplicate {kind} id `{value}` in {scope} (first defined on line {first})");
                self.report(line, &path, message);
            }
            None => {
                seen.insert(value.to_string(), line);
            }
        }
        (Some(value.to_string()), path)
    }

    fn name_and_description(&mut self, name: &Text, description: &Text, table_line: usize, path: &str) {
        for (field, value) in [("name", name), ("description", description)] {
            match value {
                Some(value) => self.single_line_text(field, value, path),
                None => self.report(table_line, path, format!("missing `{field}`")),
            }
        }
    }

    fn single_line_text(&mut self, field: &str, value: &Spanned<String>, path: &str) {
        let line = self.line_of(value);
        let text = value.get_ref().trim();
        if text.is_empty() {
            self.report(line, path, format!("`{field}` is empty"));
        } else if text.contains('\n') {
            self.report(line, path, format!("`{field}` must be a single line"));
        }
    }

    fn mapping(&mut self, target: MappingTarget, values: &[Spanned<String>], path: &str) {
        let key = target.key();
        let mut seen: Vec<&str> = Vec::new();
        for spanned in values {
            let line = self.line_of(spanned);
            let value = spanned.get_ref().as_str();
            if !target.is_valid(value) {
                let mut message = format!("unknown {key} category `{value}`");
                if let Some(close) = closest(target, value) {
                    message.push_str(&format!(" (did you mean `{close}`?)"));
                }
                self.report(line, path, message);
            } else if seen.contains(&value) {
                self.report(line, path, format!("`{value}` is listed twice in `{key}`"));
            }
            seen.push(value);
        }
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '+'
}

/// The target category closest to a misspelt `value`, if any is close.
fn closest(target: MappingTarget, value: &str) -> Option<&'static str> {
    let wanted = value.to_lowercase();
    target
        .categories()
        .into_iter()
        .map(|category| (edit_distance(&wanted, &category.to_lowercase()), category))
        .filter(|(distance, _)| *distance <= 3)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, category)| category)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_characters() {
        assert!("lgbtq+".chars().all(is_id_char));
        assert!("self_harm2".chars().all(is_id_char));
        assert!(!"Crime".chars().all(is_id_char));
        assert!(!"a-b".chars().all(is_id_char));
        assert!(!"a/b".chars().all(is_id_char));
    }

    #[test]
    fn closest_category_ignores_case_and_small_typos() {
        assert_eq!(closest(MappingTarget::Pku, "cyber crime"), Some("Cybercrime"));
        assert_eq!(closest(MappingTarget::Mlcommons, "s10"), Some("S10"));
        assert_eq!(closest(MappingTarget::Harmbench, "something else entirely"), None);
    }
}
