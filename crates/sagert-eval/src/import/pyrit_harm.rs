//! PyRIT's human-scored harm data (`pyrit-harm`), into TRL preference records
//! judged by humans.
//!
//! PyRIT (1.1.0) ships, in `pyrit/datasets/scorer_evals/harm/`, one CSV file per
//! harm area (`violence.csv`, `hate_speech_multi_score.csv`, ...), made to
//! measure its harm scorers against people. `sagert models fetch
//! pyrit-scorer-evals` puts them in `~/.cache/sagert/models/pyrit-scorer-evals/harm/`.
//! The input is that directory (every `*.csv` in it, sorted by name) or one of
//! its files.
//!
//! # The files
//!
//! A comment line (`# dataset_version=1.0, harm_definition=violence.yaml, ...`),
//! then a header and one record per scored response: `harm_category`,
//! `objective` (the request a red-teamer gave the model), `assistant_response`
//! (often a quoted multi-line text), one or more human scores and `data_type`.
//! A score column is `human_score` or `human_score_N` (most files have
//! `human_score_1`, the `*_multi_score` files `human_score_1` to `_3`,
//! `representational.csv` a bare `human_score`); each score is a number from 0
//! (harmless) to 1 (most harmful). Other columns are ignored.
//!
//! - Required, else an error naming the file: `harm_category`, `objective`,
//!   `assistant_response` and at least one score column, in every file.
//! - Checked, else an error naming file, line and field: every score is a
//!   number from 0 to 1 (an empty one too is an error); `objective` is not
//!   blank; the responses of one objective in one file have one `harm_category`.
//! - Dropped, counted per response: a `data_type` other than `text` (when the
//!   column is there; `non_text_response`) and a blank response
//!   (`empty_response`).
//!
//! # Pairs
//!
//! A response's **harm** is the mean of its scores. Responses are grouped by
//! file and `objective` (the exact text). An objective whose least and most
//! harmful responses differ by at least [`MIN_HARM_SPREAD`] gives one pair:
//! `chosen` is the least harmful response, `rejected` the most harmful one (on
//! ties, the first in file order), the prompt is the objective, all three
//! strings (standard form) kept byte for byte. An objective with one response,
//! or with a smaller spread, is dropped as `no_harm_spread` (counted per
//! objective), a pair of two identical texts as `identical_responses`. So for
//! this kind the summary's `read` counts responses, `rows` pairs, and
//! `dropped` objectives and responses, each reason what it names.
//!
//! Pairs are written in file order, then in the order their objectives first
//! appear. Each record has, after the common columns, `chosen_harm` and
//! `rejected_harm` (the two means) and `source_file` (the CSV's file name).
//! `source_categories` is `[harm_category]` (`[]` when it is blank). `id`: 16
//! hex digits of the SHA-256 of `pyrit-harm`, the objective and the two
//! responses, so the same pair from two files is written once (`duplicate`).
//!
//! # Categories
//!
//! `harm_category` maps through [`super::taxmap::PYRIT_HARM_ALIASES`] (ASCII
//! case ignored), else by the direct rule; anything else is `unmapped`:
//!
//! | `harm_category` (file) | micro category | why |
//! | --- | --- | --- |
//! | `exploits` | `crime/cyber` | PyRIT's exploits scale rates code and instructions that attack computer systems and networks |
//! | `hate_speech` (three files) | `hate/other` | the targeted group is not labelled; `hate/other` holds hateful content in general |
//! | `information_integrity`, `info_integrity` | `crime/propaganda` | disinformation |
//! | `privacy` | `crime/privacy` | the same harm |
//! | `REPRESENTATIONAL` | `hate/other` | demeaning and stereotyping of groups, with no group labelled |
//! | `self_harm` | `self_harm/other` | no general self-harm micro category exists; `other` keeps the macro right (suicide and eating disorders are not told apart) |
//! | `SEXUAL_CONTENT`, `sexual` | `sex/porn` | PyRIT's sexual scale rates how explicit the content is |
//! | `violence` (two files) | `crime/injury` | content that threatens, glorifies or facilitates physical harm |

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::read::Row;
use super::row::content_id;
use super::taxmap::category_columns;
use super::{Context, ImportKind, Outcome, Record, Turns};
use crate::Result;

/// The least difference between the harm of an objective's most and least
/// harmful responses for them to make a pair. Scores run from 0 to 1 in steps
/// of 0.25, so 0.5 asks for two steps: one rater's borderline call is not a
/// preference.
pub const MIN_HARM_SPREAD: f64 = 0.5;

/// Slack for the rounding of means of three scores: `2.75 / 3 - 1.25 / 3` is
/// 0.49999999999999994.
const SPREAD_TOLERANCE: f64 = 1e-9;

/// The columns every file must have, besides a score column.
pub(crate) const REQUIRED: [&str; 3] = ["harm_category", "objective", "assistant_response"];

/// Whether `column` holds a human score: `human_score` or `human_score_N`.
pub(crate) fn is_score_column(column: &str) -> bool {
    column.strip_prefix("human_score").is_some_and(|rest| {
        rest.is_empty()
            || rest.strip_prefix('_').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The required columns `columns` lacks (a missing score column as `human_score_1`).
pub(crate) fn missing_columns(columns: &[String]) -> Vec<String> {
    let mut missing: Vec<String> =
        REQUIRED.iter().filter(|c| !columns.iter().any(|have| have == *c)).map(|c| c.to_string()).collect();
    if !columns.iter().any(|c| is_score_column(c)) {
        missing.push("human_score_1".into());
    }
    missing
}

/// One usable response.
struct Response<'a> {
    text: &'a str,
    harm: f64,
}

/// One objective's responses in one file.
struct Group<'a> {
    objective: &'a str,
    category: &'a str,
    responses: Vec<Response<'a>>,
}

/// Every record read, checked, grouped and paired: the outcomes with the row
/// each belongs to (a pair: its objective's first response). Per-response drops
/// come first, then one outcome per objective, in file and first-appearance order.
pub(crate) fn pairs<'a>(rows: &'a [Row], ctx: &Context<'_>) -> Result<Vec<(&'a Row, Outcome)>> {
    let mut out: Vec<(&'a Row, Outcome)> = Vec::new();
    let mut groups: Vec<(&'a Row, Group<'a>)> = Vec::new();
    let mut index: BTreeMap<(Arc<Path>, &'a str), usize> = BTreeMap::new();
    for row in rows {
        let objective = row.text("objective")?;
        let category = row.string("harm_category")?.trim();
        let text = row.string("assistant_response")?;
        let harm = harm(row)?;
        let data_type = row.opt_string("data_type")?.map(str::trim).filter(|t| !t.is_empty());
        let at = *index.entry((row.file.clone(), objective)).or_insert_with(|| {
            groups.push((row, Group { objective, category, responses: Vec::new() }));
            groups.len() - 1
        });
        let (first, group) = &mut groups[at];
        if group.category != category {
            return Err(row.error(
                "harm_category",
                format!(
                    "`{category}`, but the same objective at line {} has `{}`: an objective has one harm category",
                    first.line, group.category
                ),
            ));
        }
        if data_type.is_some_and(|t| t != "text") {
            out.push((row, Outcome::Drop("non_text_response")));
        } else if text.trim().is_empty() {
            out.push((row, Outcome::Drop("empty_response")));
        } else {
            group.responses.push(Response { text, harm });
        }
    }
    for (first, group) in groups {
        if group.responses.is_empty() {
            continue;
        }
        out.push((first, pair(first, &group, ctx)));
    }
    Ok(out)
}

/// The mean of a record's scores.
fn harm(row: &Row) -> Result<f64> {
    let mut sum = 0.0;
    let mut count = 0;
    for (column, value) in row.fields.iter().filter(|(c, _)| is_score_column(c)) {
        let score = match value {
            Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| (0.0..=1.0).contains(x)),
            Value::Number(n) => n.as_f64().filter(|x| (0.0..=1.0).contains(x)),
            _ => None,
        };
        let found = match value {
            Value::String(s) => format!("`{s}`"),
            other => other.to_string(),
        };
        sum +=
            score.ok_or_else(|| row.error(column, format!("expected a score from 0 to 1, found {found}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(row.error("human_score_1", "missing: no human score column"));
    }
    Ok(sum / count as f64)
}

/// Whether harms `least` and `most` are at least [`MIN_HARM_SPREAD`] apart.
fn spread_enough(least: f64, most: f64) -> bool {
    most - least + SPREAD_TOLERANCE >= MIN_HARM_SPREAD
}

/// One objective's pair, or why it has none.
fn pair(first: &Row, group: &Group<'_>, ctx: &Context<'_>) -> Outcome {
    let [mut least, mut most] = [&group.responses[0]; 2];
    for r in &group.responses[1..] {
        if r.harm < least.harm {
            least = r;
        }
        if r.harm > most.harm {
            most = r;
        }
    }
    if !spread_enough(least.harm, most.harm) {
        return Outcome::Drop("no_harm_spread");
    }
    if least.text == most.text {
        return Outcome::Drop("identical_responses");
    }
    let (category, macro_category) = category_columns(ctx.map.pyrit_harm(group.category));
    let source_file = first
        .file
        .file_name()
        .map_or_else(|| first.file.display().to_string(), |name| name.to_string_lossy().into_owned());
    let mut labels = Map::new();
    labels.insert("chosen_harm".into(), Value::from(least.harm));
    labels.insert("rejected_harm".into(), Value::from(most.harm));
    labels.insert("source_file".into(), Value::String(source_file));
    let name = ImportKind::PyritHarm.name();
    Outcome::Keep(Box::new(Record {
        id: content_id(name, &[group.objective, least.text, most.text]),
        prompt: Turns::Text(group.objective.to_string()),
        chosen: Some(Turns::Text(least.text.to_string())),
        rejected: Some(Turns::Text(most.text.to_string())),
        category,
        macro_category,
        source: name.into(),
        source_categories: if group.category.is_empty() { Vec::new() } else { vec![group.category.into()] },
        jailbreak_type: None,
        labels,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_columns_are_human_score_with_an_optional_number() {
        for yes in ["human_score", "human_score_1", "human_score_12"] {
            assert!(is_score_column(yes), "{yes}");
        }
        for no in ["human_score_", "human_scores", "human_score_a", "human_score_1b", "score"] {
            assert!(!is_score_column(no), "{no}");
        }
        let columns: Vec<String> = ["objective", "human_score"].map(String::from).to_vec();
        assert_eq!(missing_columns(&columns), ["harm_category", "assistant_response"]);
        assert_eq!(missing_columns(&columns[..1]), ["harm_category", "assistant_response", "human_score_1"]);
    }

    #[test]
    fn a_spread_of_exactly_the_threshold_survives_rounding() {
        // Means of three scores: 2.75 / 3 and 1.25 / 3 differ by 0.5 less an ulp.
        let mean = |scores: [f64; 3]| scores.iter().sum::<f64>() / 3.0;
        let (least, most) = (mean([0.25, 0.5, 0.5]), mean([0.75, 1.0, 1.0]));
        assert!(most - least < MIN_HARM_SPREAD);
        assert!(spread_enough(least, most));
        assert!(spread_enough(0.5, 1.0));
        assert!(!spread_enough(1.0 / 3.0, 1.75 / 3.0));
        assert!(!spread_enough(0.0, 0.25));
    }
}
