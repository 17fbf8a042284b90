//! Multiple-choice scoring by log-likelihood, in lm-evaluation-harness's style
//! (its `output_type: multiple_choice`), and perplexities.
//!
//! For each item the model scores every choice's continuation,
//! `TARGET_DELIMITER + choice` after the prompt (`" A"` .. `" D"` for MMLU),
//! as the sum of its tokens' log-probabilities. Then, per item:
//!
//! - `acc`: 1 when the argmax of the log-likelihoods is the gold index;
//! - `acc_norm`: 1 when the argmax of log-likelihood / choice length is, the
//!   length being lm-eval's `len(choice)`: the choice text's characters
//!   (Unicode scalar values), without the delimiter ([`ChoiceScore::new`]).
//!
//! Ties go to the first index, as `np.argmax`. [`score`] averages both over
//! items, with bootstrap intervals ([`crate::stats`]), overall (all items
//! pooled, as lm-eval's size-weighted MMLU group) and per subject.
//!
//! Task files ([`read_mc`]): JSONL, one item a line,
//! `{"id": .., "query" or "question": .., "choices": [..], "gold": int, "subject": ..}`
//! with `id` and `subject` optional; the query is the whole prompt, as given.
//! MMLU ([`read_mmlu`]): the Hub's `cais/mmlu` rows as JSONL (`question`,
//! `subject`, `choices` (4), `answer` (0-3)), turned into lm-eval's zero-shot
//! `mmlu` prompt ([`mmlu_prompt`]) with the letter choices `A`-`D`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::jsonl;
use crate::stats::{per_group, Bootstrap, Estimate};
use crate::{EvalError, Result};

/// What joins the prompt and a choice in the scored continuation.
pub const TARGET_DELIMITER: &str = " ";

/// lm-eval's MMLU answer choices.
pub const MMLU_CHOICES: [&str; 4] = ["A", "B", "C", "D"];

/// One multiple-choice item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McItem {
    /// Item id (for MMLU, `{subject}/{index within the subject in the file}`).
    pub id: String,
    /// Subject or sub-task, for per-subject scores.
    pub subject: Option<String>,
    /// The text the continuations are scored after.
    pub prompt: String,
    /// The choices, without [`TARGET_DELIMITER`].
    pub choices: Vec<String>,
    /// Index of the right choice.
    pub gold: usize,
}

impl McItem {
    /// The scored continuation of choice `i`: [`TARGET_DELIMITER`] + the choice.
    pub fn continuation(&self, i: usize) -> Option<String> {
        self.choices.get(i).map(|c| format!("{TARGET_DELIMITER}{c}"))
    }
}

/// The model's score of one choice.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChoiceScore {
    /// Sum of the continuation tokens' log-probabilities (natural log).
    pub logprob: f64,
    /// The length `acc_norm` divides by.
    pub len: usize,
}

impl ChoiceScore {
    /// A score whose length is lm-eval's: the characters of `choice` (without
    /// the delimiter).
    pub fn new(logprob: f64, choice: &str) -> Self {
        ChoiceScore { logprob, len: choice.chars().count() }
    }
}

/// One item's predictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct McOutcome {
    /// Argmax of the log-likelihoods.
    pub pred: usize,
    /// Argmax of the length-normalised log-likelihoods.
    pub pred_norm: usize,
    /// `pred == gold`.
    pub acc: bool,
    /// `pred_norm == gold`.
    pub acc_norm: bool,
}

/// `acc` and `acc_norm` of one subject.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct McScores {
    /// Mean `acc` with its bootstrap interval.
    pub acc: Estimate,
    /// Mean `acc_norm` with its bootstrap interval.
    pub acc_norm: Estimate,
}

/// Scores over a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McResult {
    /// Mean `acc` over all items.
    pub acc: Estimate,
    /// Mean `acc_norm` over all items.
    pub acc_norm: Estimate,
    /// Per subject, for the items that have one.
    pub per_subject: BTreeMap<String, McScores>,
}

/// First index of the maximum, as `np.argmax`; `values` is non-empty and NaN-free.
fn argmax(values: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if i == 0 || v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// One item's `acc` and `acc_norm` predictions.
///
/// # Errors
/// [`EvalError::Metric`] when `scores` does not have one entry per choice, a
/// log-probability is NaN or positive infinity, or a length is 0.
pub fn outcome(item: &McItem, scores: &[ChoiceScore]) -> Result<McOutcome> {
    let metric_err = |message: String| EvalError::Metric { metric: "multiple choice".into(), message };
    if scores.len() != item.choices.len() || scores.is_empty() {
        return Err(metric_err(format!(
            "item {}: {} scores for {} choices",
            item.id,
            scores.len(),
            item.choices.len()
        )));
    }
    if let Some(s) = scores.iter().find(|s| s.logprob.is_nan() || s.logprob == f64::INFINITY || s.len == 0) {
        return Err(metric_err(format!("item {}: bad choice score {s:?}", item.id)));
    }
    let pred = argmax(scores.iter().map(|s| s.logprob));
    let pred_norm = argmax(scores.iter().map(|s| s.logprob / s.len as f64));
    Ok(McOutcome { pred, pred_norm, acc: pred == item.gold, acc_norm: pred_norm == item.gold })
}

/// `acc` and `acc_norm` over `items`, `scores[i]` holding item `i`'s choice
/// scores, with [`Bootstrap`] intervals: `acc` and `acc_norm` share one seed,
/// hence the same resamples.
///
/// # Errors
/// [`EvalError::Metric`] when there are no items, `scores` and `items` differ
/// in length, or an item's scores are bad (see [`outcome`]).
pub fn score(items: &[McItem], scores: &[Vec<ChoiceScore>], options: &Bootstrap) -> Result<McResult> {
    if items.len() != scores.len() {
        return Err(EvalError::Metric {
            metric: "multiple choice".into(),
            message: format!("{} items but {} score lists", items.len(), scores.len()),
        });
    }
    let outcomes: Vec<McOutcome> =
        items.iter().zip(scores).map(|(i, s)| outcome(i, s)).collect::<Result<_>>()?;
    let as_f64 = |b: bool| if b { 1.0 } else { 0.0 };
    let acc: Vec<f64> = outcomes.iter().map(|o| as_f64(o.acc)).collect();
    let acc_norm: Vec<f64> = outcomes.iter().map(|o| as_f64(o.acc_norm)).collect();
    let by_subject = |values: &[f64]| -> Result<BTreeMap<String, Estimate>> {
        let samples: Vec<(String, f64)> =
            items.iter().zip(values).filter_map(|(item, &v)| item.subject.clone().map(|s| (s, v))).collect();
        if samples.is_empty() {
            return Ok(BTreeMap::new());
        }
        Ok(per_group(&samples, options)?.groups)
    };
    let subject_acc = by_subject(&acc)?;
    let mut subject_acc_norm = by_subject(&acc_norm)?;
    let per_subject = subject_acc
        .into_iter()
        .filter_map(|(subject, acc)| {
            let acc_norm = subject_acc_norm.remove(&subject)?;
            Some((subject, McScores { acc, acc_norm }))
        })
        .collect();
    Ok(McResult { acc: options.mean_ci(&acc)?, acc_norm: options.mean_ci(&acc_norm)?, per_subject })
}

/// Token perplexity, `exp(total_nll / n_tokens)`, from the summed negative
/// log-likelihood (natural log) of `n_tokens` tokens.
///
/// # Errors
/// [`EvalError::Metric`] when `n_tokens` is 0 or `total_nll` is NaN.
pub fn perplexity(total_nll: f64, n_tokens: usize) -> Result<f64> {
    per_unit("perplexity", total_nll, n_tokens).map(f64::exp)
}

/// lm-eval's `word_perplexity`: `exp(total_nll / n_words)` over documents, with
/// `n_words` summed over them ([`count_words`] of each), not averaged per document.
///
/// # Errors
/// As [`perplexity`].
pub fn word_perplexity(total_nll: f64, n_words: usize) -> Result<f64> {
    per_unit("word_perplexity", total_nll, n_words).map(f64::exp)
}

/// lm-eval's `byte_perplexity`: `exp(total_nll / n_bytes)`, `n_bytes` the UTF-8 length.
///
/// # Errors
/// As [`perplexity`].
pub fn byte_perplexity(total_nll: f64, n_bytes: usize) -> Result<f64> {
    per_unit("byte_perplexity", total_nll, n_bytes).map(f64::exp)
}

/// lm-eval's `bits_per_byte`: `total_nll / n_bytes / ln 2`.
///
/// # Errors
/// As [`perplexity`].
pub fn bits_per_byte(total_nll: f64, n_bytes: usize) -> Result<f64> {
    per_unit("bits_per_byte", total_nll, n_bytes).map(|x| x / std::f64::consts::LN_2)
}

fn per_unit(metric: &str, total_nll: f64, n: usize) -> Result<f64> {
    if n == 0 || total_nll.is_nan() {
        return Err(EvalError::Metric {
            metric: metric.into(),
            message: format!("negative log-likelihood {total_nll} over {n} units"),
        });
    }
    Ok(total_nll / n as f64)
}

/// lm-eval's word count, `len(re.split(r"\s+", text))`: one more than the runs
/// of whitespace, so leading or trailing whitespace counts an empty word and
/// `""` counts 1. Whitespace is Python's (`str.isspace`): Unicode White_Space
/// plus the separators U+001C-U+001F.
pub fn count_words(text: &str) -> usize {
    let is_space = |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
    let mut words = 1;
    let mut in_space = false;
    for c in text.chars() {
        let space = is_space(c);
        if space && !in_space {
            words += 1;
        }
        in_space = space;
    }
    words
}

/// lm-eval's zero-shot MMLU prompt (`mmlu` task, `_default_template_yaml` and
/// its per-subject description):
///
/// ```text
/// The following are multiple choice questions (with answers) about {subject}.
///
/// {question, stripped}
/// A. {choices[0]}
/// B. {choices[1]}
/// C. {choices[2]}
/// D. {choices[3]}
/// Answer:
/// ```
///
/// `subject` has its underscores read as spaces. It is reproduced here, not a
/// template file, because it is lm-eval's and must not drift.
pub fn mmlu_prompt(subject: &str, question: &str, choices: &[String]) -> String {
    let mut prompt = format!(
        "The following are multiple choice questions (with answers) about {}.\n\n{}\n",
        subject.replace('_', " "),
        question.trim()
    );
    for (letter, choice) in MMLU_CHOICES.iter().zip(choices) {
        prompt.push_str(&format!("{letter}. {choice}\n"));
    }
    prompt.push_str("Answer:");
    prompt
}

/// Reads a multiple-choice task file (format in the module docs). A missing
/// `id` is the line number. Blank lines are skipped.
///
/// # Errors
/// [`EvalError::Io`], [`EvalError::Syntax`] for a line that is not a JSON
/// object, [`EvalError::Record`] for a missing or bad field (fewer than 2
/// choices, `gold` out of range, both `query` and `question`), and
/// [`EvalError::File`] for a file without items.
pub fn read_mc(path: impl AsRef<Path>) -> Result<Vec<McItem>> {
    read_jsonl(path.as_ref(), |obj, at| {
        let prompt = match (obj.get("query"), obj.get("question")) {
            (Some(_), Some(_)) => return Err(at.record("query", "both `query` and `question` given")),
            (Some(_), None) => at.string(obj, "query")?,
            _ => at.string(obj, "question")?,
        };
        let id = match obj.get("id") {
            None | Some(Value::Null) => at.line.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => return Err(at.record("id", format!("expected a string, found {other}"))),
        };
        let subject = match obj.get("subject") {
            None | Some(Value::Null) => None,
            Some(_) => Some(at.string(obj, "subject")?),
        };
        let choices = at.choices(obj, "choices", 2..=usize::MAX)?;
        let gold = at.index(obj, "gold", choices.len())?;
        Ok(McItem { id, subject, prompt, choices, gold })
    })
}

/// Reads MMLU rows (`question`, `subject`, `choices`, `answer`) as JSONL into
/// items with lm-eval's prompt ([`mmlu_prompt`]) and the choices `A`-`D`;
/// `answer` may be an index 0-3 or a letter.
///
/// # Errors
/// As [`read_mc`]; `choices` must have exactly 4 entries.
pub fn read_mmlu(path: impl AsRef<Path>) -> Result<Vec<McItem>> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    read_jsonl(path.as_ref(), |obj, at| {
        let question = at.string(obj, "question")?;
        let subject = at.string(obj, "subject")?;
        let choices = at.choices(obj, "choices", 4..=4)?;
        let gold = match obj.get("answer") {
            Some(Value::String(letter)) => MMLU_CHOICES
                .iter()
                .position(|l| l == letter)
                .ok_or_else(|| at.record("answer", format!("expected A-D or 0-3, found `{letter}`")))?,
            _ => at.index(obj, "answer", 4)?,
        };
        let index = seen.entry(subject.clone()).or_default();
        let id = format!("{subject}/{index}");
        *index += 1;
        Ok(McItem {
            id,
            prompt: mmlu_prompt(&subject, &question, &choices),
            subject: Some(subject),
            choices: MMLU_CHOICES.iter().map(|c| c.to_string()).collect(),
            gold,
        })
    })
}

fn read_jsonl(
    path: &Path,
    mut parse: impl FnMut(&Map<String, Value>, &At) -> Result<McItem>,
) -> Result<Vec<McItem>> {
    let mut items = Vec::new();
    for (line, obj) in jsonl::objects(path)? {
        items.push(parse(&obj, &At { file: path, line })?);
    }
    if items.is_empty() {
        return Err(EvalError::File { file: path.to_path_buf(), message: "no items".into() });
    }
    Ok(items)
}

/// A position in a file, for errors.
struct At<'a> {
    file: &'a Path,
    line: usize,
}

impl At<'_> {
    fn record(&self, field: &str, message: impl Into<String>) -> EvalError {
        EvalError::Record {
            file: PathBuf::from(self.file),
            line: self.line,
            field: field.into(),
            message: message.into(),
        }
    }

    fn string(&self, obj: &Map<String, Value>, field: &str) -> Result<String> {
        match obj.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            None => Err(self.record(field, "missing")),
            Some(other) => Err(self.record(field, format!("expected a string, found {other}"))),
        }
    }

    fn choices(
        &self,
        obj: &Map<String, Value>,
        field: &str,
        count: std::ops::RangeInclusive<usize>,
    ) -> Result<Vec<String>> {
        let list = match obj.get(field) {
            Some(Value::Array(list)) => list,
            None => return Err(self.record(field, "missing")),
            Some(other) => return Err(self.record(field, format!("expected a list, found {other}"))),
        };
        if !count.contains(&list.len()) {
            let expected = match (count.start(), count.end()) {
                (lo, &usize::MAX) => format!("at least {lo}"),
                (lo, hi) if lo == hi => lo.to_string(),
                (lo, hi) => format!("{lo} to {hi}"),
            };
            return Err(self.record(field, format!("{} choices, expected {expected}", list.len())));
        }
        list.iter()
            .map(|c| c.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.record(field, "expected a list of strings"))
    }

    fn index(&self, obj: &Map<String, Value>, field: &str, n: usize) -> Result<usize> {
        match obj.get(field) {
            None => Err(self.record(field, "missing")),
            Some(v) => match v.as_u64() {
                Some(i) if (i as usize) < n => Ok(i as usize),
                _ => Err(self.record(field, format!("expected an index below {n}, found {v}"))),
            },
        }
    }
}
