//! Judge calibration: how well a judge agrees with human labels.
//!
//! [`calibrate`] runs a [`Judge`] over held-out, human-labelled samples and
//! measures its agreement ([`Agreement`]: accuracy, Cohen's kappa, the
//! confusion matrix, precision and recall of the positive class). The result,
//! a [`Calibration`], is stored beside the judge's other calibrations
//! ([`store`], [`load`]: one JSON file per judge name in a calibration folder,
//! `~/.cache/sagert/judges` by default), and reports show it next to every
//! rate the judge produced.
//!
//! Labels come from a JSONL file of `{"prompt", "response", "label"}` records
//! (`label`: a boolean, 0/1, or a human score in `[0, 1]`, positive from 0.5),
//! read by [`read_labels`], or from any other source as [`Labelled`] samples
//! (the command line also offers the held-out part of PyRIT's human-labelled
//! scorer data, the part the offline classifier was not trained on).
//!
//! Samples the judge could not judge are counted in
//! [`Calibration::unjudged`] and left out of the agreement.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::agreement::Agreement;
use crate::jsonl::{self, kind};
use crate::judge::{Judge, Question, Sample};
use crate::{EvalError, Result};

/// A sample with its human label.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Labelled {
    /// The prompt and response.
    pub sample: Sample,
    /// The human's answer to the judge's question.
    pub label: bool,
    /// Where it came from (`file:line`).
    pub origin: String,
}

/// A judge's measured agreement with human labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The judge's name.
    pub judge: String,
    /// The question it answers.
    pub question: Question,
    /// What the labels were (a file path, or a named set).
    pub labels: String,
    /// SHA-256 of the labelled samples (texts and labels, in order).
    pub labels_sha256: String,
    /// Samples the judge could not judge (left out of `agreement`).
    pub unjudged: usize,
    /// The agreement on the judged samples.
    pub agreement: Agreement,
    /// The sagert version that measured it.
    pub sagert_version: String,
}

/// Read labelled samples from a JSONL file: `prompt`, `response` (strings) and
/// `label` (boolean, 0/1, or a score in `[0, 1]`; positive from 0.5). Errors
/// name the file, line and field.
pub fn read_labels(path: &Path) -> Result<Vec<Labelled>> {
    let mut out = Vec::new();
    for (line, map) in jsonl::objects(path)? {
        let record = |field: &str, message: String| EvalError::Record {
            file: path.to_path_buf(),
            line,
            field: field.to_string(),
            message,
        };
        let string = |field: &str| match map.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(record(field, format!("expected a string, found {}", kind(other)))),
            None => Err(record(field, "missing".into())),
        };
        let prompt = string("prompt")?;
        let response = string("response")?;
        let label = match map.get("label") {
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if (0.0..=1.0).contains(&x) => x >= 0.5,
                _ => return Err(record("label", format!("{n} is not in [0, 1]"))),
            },
            Some(other) => {
                return Err(record("label", format!("expected a boolean or a number, found {}", kind(other))))
            }
            None => return Err(record("label", "missing".into())),
        };
        out.push(Labelled {
            sample: Sample { prompt, response },
            label,
            origin: format!("{}:{line}", path.display()),
        });
    }
    if out.is_empty() {
        return Err(EvalError::File { file: path.to_path_buf(), message: "no labelled samples".into() });
    }
    Ok(out)
}

/// The SHA-256 of labelled samples: texts and labels, in order, unambiguously framed.
pub fn labels_digest(labelled: &[Labelled]) -> String {
    let mut h = Sha256::new();
    for l in labelled {
        for text in [&l.sample.prompt, &l.sample.response] {
            h.update((text.len() as u64).to_le_bytes());
            h.update(text.as_bytes());
        }
        h.update([u8::from(l.label)]);
    }
    hex::encode(h.finalize())
}

/// Measure `judge` on `labelled` samples described as `labels`.
pub async fn calibrate(judge: &dyn Judge, labelled: &[Labelled], labels: &str) -> Result<Calibration> {
    if labelled.is_empty() {
        return Err(EvalError::Metric {
            metric: "calibration".into(),
            message: "no labelled samples".into(),
        });
    }
    let samples: Vec<Sample> = labelled.iter().map(|l| l.sample.clone()).collect();
    let judged = judge.judge(&samples).await?;
    if judged.len() != labelled.len() {
        return Err(EvalError::Judge {
            judge: judge.name(),
            message: format!("{} verdicts for {} samples", judged.len(), labelled.len()),
        });
    }
    let mut pairs = Vec::with_capacity(labelled.len());
    let mut unjudged = 0;
    for (l, j) in labelled.iter().zip(&judged) {
        match j {
            Ok(j) => pairs.push((l.label, j.positive)),
            Err(_) => unjudged += 1,
        }
    }
    let agreement = Agreement::binary(&pairs)?;
    Ok(Calibration {
        judge: judge.name(),
        question: judge.question(),
        labels: labels.to_string(),
        labels_sha256: labels_digest(labelled),
        unjudged,
        agreement,
        sagert_version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// The calibration file of judge `name` in folder `dir`: the name with every
/// character outside `[A-Za-z0-9._-]` as `_`, plus `.json`.
pub fn path_for(dir: &Path, name: &str) -> PathBuf {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    dir.join(format!("{safe}.json"))
}

/// Store `calibration` in `dir` (atomically), replacing the judge's earlier one.
pub fn store(dir: &Path, calibration: &Calibration) -> Result<PathBuf> {
    let path = path_for(dir, &calibration.judge);
    let mut json = serde_json::to_vec_pretty(calibration).expect("a calibration serialises");
    json.push(b'\n');
    sagert_engine::io::write_atomic(&path, &json)?;
    Ok(path)
}

/// The stored calibration of judge `name` in `dir`, if there is one.
pub fn load(dir: &Path, name: &str) -> Result<Option<Calibration>> {
    let path = path_for(dir, name);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let c: Calibration = serde_json::from_slice(&bytes).map_err(|e| EvalError::File {
                file: path.clone(),
                message: format!("not a calibration: {e}"),
            })?;
            // Names that differ only in characters the file name replaces share
            // a file: it belongs to one of them only.
            Ok((c.judge == name).then_some(c))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EvalError::Io { path, source: e }),
    }
}
