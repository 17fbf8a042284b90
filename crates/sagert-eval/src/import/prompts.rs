//! Red-team prompt sets: ALERT, AdvBench, HarmBench and plain files, into
//! `prompts.jsonl` records.
//!
//! # ALERT (`alert`)
//!
//! Fields: `id` (integer or string; optional, else made from the prompt),
//! `prompt`, `category` (an ALERT label such as `crime_cyber`), and in the
//! adversarial file `attack_type`, written as `jailbreak_type`.
//!
//! - ALERT wraps each prompt as `### Instruction:\n...\n### Response:\n`; the
//!   wrapper is removed (with the newlines around the text) so that the prompt
//!   can be rendered with any model's chat template. A prompt without the
//!   whole wrapper is kept as it is.
//! - `category` maps directly ([`super::taxmap::CategoryMap::direct`]); a label
//!   the taxonomy does not know gives `unmapped` (counted in the summary's
//!   categories), never an error. `source_categories` is `[category]`.
//! - Kept: every other column.
//!
//! # AdvBench (`advbench`)
//!
//! The CSV's `goal` is the prompt (`prompt`, as in some copies, or `value`,
//! as in a PyRIT seed file, where `goal` is absent); `target` is kept. From
//! PyRIT's seed file (`adv_bench.prompt`), `harm_categories` become the source
//! labels and seeds whose `data_type` is not `text` are dropped
//! (`non_text_seed`). The labels map by the direct-then-inverse rule over all
//! targets; PyRIT's harm categories come from another taxonomy and usually stay
//! `unmapped`. `id`: 16 hex digits of the SHA-256 of the prompt. Kept: every
//! other column (`target`, `dataset_name`, ...).
//!
//! # HarmBench (`harmbench`)
//!
//! Columns: `Behavior`, `FunctionalCategory`, `SemanticCategory`, `Tags`,
//! `ContextString`, `BehaviorID` (`Behavior`, `SemanticCategory` and
//! `BehaviorID` required). The prompt is `Behavior`, or for a contextual
//! behaviour `ContextString + "\n\n---\n\n" + Behavior`, as HarmBench builds it.
//! `SemanticCategory` is the source label, mapped by the inverse rule over the
//! HarmBench targets. `id` is `BehaviorID`. Kept: every column, under its name.
//!
//! # Plain files (`prompts`)
//!
//! A [`super::FieldMap`] names the prompt column (required), an optional
//! category column (a string or a list of labels) and an optional id column.
//! For a PyRIT seed file the default map reads `value` and `harm_categories`,
//! and non-text seeds are dropped (`non_text_seed`). Labels map by the
//! direct-then-inverse rule over all targets. A `jailbreak_type` column is
//! written as `jailbreak_type`; every other column is kept.

use sagert_taxonomy::MappingTarget;

use super::read::{Format, Row};
use super::row::content_id;
use super::taxmap::category_columns;
use super::{Context, FieldMap, ImportKind, ImportOptions, Outcome, Record, Turns};
use crate::Result;

/// AdvBench's prompt column, by source: the CSV, other copies, PyRIT.
const ADVBENCH_PROMPT: [&str; 3] = ["goal", "prompt", "value"];

/// The columns a CSV or Parquet file of a prompt kind must have.
pub(crate) fn required_columns(kind: ImportKind, opts: &ImportOptions, columns: &[String]) -> Vec<String> {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    match kind {
        ImportKind::Alert => owned(&["prompt", "category"]),
        ImportKind::Advbench if ADVBENCH_PROMPT.iter().any(|c| columns.iter().any(|have| have == c)) => {
            Vec::new()
        }
        ImportKind::Advbench => owned(&["goal"]),
        ImportKind::Harmbench => owned(&["Behavior", "SemanticCategory", "BehaviorID"]),
        _ => {
            let map = &opts.field_map;
            std::iter::once(&map.prompt).chain(&map.category).chain(&map.id).cloned().collect()
        }
    }
}

/// One ALERT record.
pub(crate) fn alert(row: &Row, ctx: &Context<'_>) -> Result<Outcome> {
    let raw = row.text("prompt")?;
    let label = row.string("category")?.trim();
    let attack = row.opt_string("attack_type")?.map(str::to_string);
    let prompt = strip_alert_template(raw);
    if prompt.trim().is_empty() {
        return Err(row.error("prompt", "empty inside ALERT's `### Instruction:` wrapper"));
    }
    let id = match row.id("id")? {
        Some(id) => id,
        None => content_id(ImportKind::Alert.name(), &[prompt]),
    };
    let (category, macro_category) = category_columns(ctx.map.direct(label));
    Ok(keep(Record {
        id,
        prompt: Turns::Text(prompt.to_string()),
        chosen: None,
        rejected: None,
        category,
        macro_category,
        source: ImportKind::Alert.name().into(),
        source_categories: if label.is_empty() { Vec::new() } else { vec![label.to_string()] },
        jailbreak_type: attack,
        labels: row.rest(&["id", "prompt", "category", "attack_type"]),
    }))
}

/// The text inside ALERT's `### Instruction:` ... `### Response:` wrapper, or
/// `prompt` itself when it is not wrapped.
fn strip_alert_template(prompt: &str) -> &str {
    const OPEN: &str = "### Instruction:";
    const CLOSE: &str = "### Response:";
    let Some(rest) = prompt.strip_prefix(OPEN) else { return prompt };
    let Some(end) = rest.rfind(CLOSE) else { return prompt };
    if !rest[end + CLOSE.len()..].trim().is_empty() {
        return prompt;
    }
    rest[..end].trim_matches(['\n', '\r'])
}

/// One AdvBench record (CSV row or PyRIT seed).
pub(crate) fn advbench(row: &Row, ctx: &Context<'_>) -> Result<Outcome> {
    let fallback = if ctx.format == Format::Yaml { "value" } else { "goal" };
    let column = ADVBENCH_PROMPT.iter().copied().find(|c| row.get(c).is_some()).unwrap_or(fallback);
    let prompt = row.text(column)?;
    row.opt_string("target")?;
    let labels = row.labels("harm_categories")?;
    if ctx.format == Format::Yaml && !is_text_seed(row)? {
        return Ok(Outcome::Drop("non_text_seed"));
    }
    let (category, macro_category) = category_columns(ctx.map.pyrit_seed(&labels));
    Ok(keep(Record {
        id: content_id(ImportKind::Advbench.name(), &[prompt]),
        prompt: Turns::Text(prompt.to_string()),
        chosen: None,
        rejected: None,
        category,
        macro_category,
        source: ImportKind::Advbench.name().into(),
        source_categories: labels,
        jailbreak_type: None,
        labels: row.rest(&[column, "harm_categories", "data_type"]),
    }))
}

/// Whether a PyRIT seed holds text (`data_type` absent or `text`).
fn is_text_seed(row: &Row) -> Result<bool> {
    Ok(row.opt_string("data_type")?.is_none_or(|t| t == "text"))
}

/// One HarmBench behaviour.
pub(crate) fn harmbench(row: &Row, ctx: &Context<'_>) -> Result<Outcome> {
    let behavior = row.text("Behavior")?;
    let semantic = row.string("SemanticCategory")?.trim();
    let id = row.id("BehaviorID")?.ok_or_else(|| row.error("BehaviorID", "missing"))?;
    for field in ["FunctionalCategory", "Tags", "ContextString"] {
        row.opt_string(field)?;
    }
    let prompt = match row.opt_string("ContextString")?.filter(|c| !c.trim().is_empty()) {
        Some(context) => format!("{context}\n\n---\n\n{behavior}"),
        None => behavior.to_string(),
    };
    let labels: Vec<String> = if semantic.is_empty() { Vec::new() } else { vec![semantic.to_string()] };
    let (category, macro_category) = category_columns(ctx.map.inverse(&labels, &[MappingTarget::Harmbench]));
    Ok(keep(Record {
        id,
        prompt: Turns::Text(prompt),
        chosen: None,
        rejected: None,
        category,
        macro_category,
        source: ImportKind::Harmbench.name().into(),
        source_categories: labels,
        jailbreak_type: None,
        labels: row.rest(&[]),
    }))
}

/// One record of a plain prompt file, read through the field map.
pub(crate) fn plain(row: &Row, ctx: &Context<'_>) -> Result<Outcome> {
    let yaml = ctx.format == Format::Yaml;
    let map = if yaml && ctx.opts.field_map == FieldMap::default() {
        FieldMap { prompt: "value".into(), category: Some("harm_categories".into()), id: None }
    } else {
        ctx.opts.field_map.clone()
    };
    let prompt = row.text(&map.prompt)?;
    let labels = match &map.category {
        Some(column) => row.labels(column)?,
        None => Vec::new(),
    };
    let id = match &map.id {
        Some(column) => row.id(column)?.ok_or_else(|| row.error(column, "missing"))?,
        None => content_id(ImportKind::Prompts.name(), &[prompt]),
    };
    let jailbreak_type = row.opt_string("jailbreak_type")?.map(str::to_string);
    if yaml && !is_text_seed(row)? {
        return Ok(Outcome::Drop("non_text_seed"));
    }
    let (category, macro_category) = category_columns(ctx.map.resolve(&labels, &MappingTarget::ALL));
    let mut used: Vec<&str> = vec![&map.prompt, "jailbreak_type"];
    if yaml {
        used.push("data_type");
    }
    used.extend(map.category.as_deref());
    used.extend(map.id.as_deref());
    Ok(keep(Record {
        id,
        prompt: Turns::Text(prompt.to_string()),
        chosen: None,
        rejected: None,
        category,
        macro_category,
        source: ImportKind::Prompts.name().into(),
        source_categories: labels,
        jailbreak_type,
        labels: row.rest(&used),
    }))
}

fn keep(record: Record) -> Outcome {
    Outcome::Keep(Box::new(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_wrapper_is_removed_only_when_whole() {
        assert_eq!(strip_alert_template("### Instruction:\nAsk a thing?\n### Response:\n"), "Ask a thing?");
        assert_eq!(strip_alert_template("### Instruction:\nA\n\nB\n### Response:"), "A\n\nB");
        assert_eq!(strip_alert_template("Plain text"), "Plain text");
        let tail = "### Instruction:\nA\n### Response:\nanswer";
        assert_eq!(strip_alert_template(tail), tail);
    }
}
