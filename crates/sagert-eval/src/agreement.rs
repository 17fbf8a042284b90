//! A judge's agreement with human labels: confusion matrix, accuracy, Cohen's
//! kappa, and precision, recall and F1 of one positive class.
//!
//! Conventions follow scikit-learn so that numbers can be checked against it
//! (`scripts/golden-eval-metrics.py`): rows of the confusion matrix are the
//! human (reference) labels, columns the judge's; labels are sorted unless
//! given. Undefined values:
//!
//! - kappa when chance agreement is 1 (both raters used one and the same label
//!   only) is 0/0: scikit-learn returns NaN, this module `None`, so that the
//!   value survives a JSON round trip and a report can print "n/a";
//! - precision without positive predictions, recall without positive
//!   references, and F1 with neither are 0.0, scikit-learn's default
//!   (`zero_division="warn"` returns 0.0 with a warning): a judge that never
//!   says "positive" has no precision to boast of.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{EvalError, Result};

/// Label of `false` in a binary matrix ([`ConfusionMatrix::from_bools`]).
pub const NEGATIVE: &str = "negative";
/// Label of `true` in a binary matrix, its positive class.
pub const POSITIVE: &str = "positive";

/// Counts of (human, judge) label pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    labels: Vec<String>,
    /// `counts[i][j]`: pairs with human label `labels[i]` and judge label `labels[j]`.
    counts: Vec<Vec<usize>>,
}

impl ConfusionMatrix {
    /// The matrix of `(human, judge)` pairs over the sorted union of the labels
    /// that occur (as scikit-learn's `confusion_matrix` without `labels`).
    pub fn from_pairs<I, H, J>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (H, J)>,
        H: AsRef<str>,
        J: AsRef<str>,
    {
        let pairs: Vec<(H, J)> = pairs.into_iter().collect();
        let mut index: BTreeMap<&str, usize> =
            pairs.iter().flat_map(|(h, j)| [(h.as_ref(), 0), (j.as_ref(), 0)]).collect();
        for (i, slot) in index.values_mut().enumerate() {
            *slot = i;
        }
        let mut counts = vec![vec![0; index.len()]; index.len()];
        for (h, j) in &pairs {
            counts[index[h.as_ref()]][index[j.as_ref()]] += 1;
        }
        ConfusionMatrix { labels: index.into_keys().map(str::to_string).collect(), counts }
    }

    /// The matrix of `(human, judge)` pairs over `labels`, in that order: a label
    /// that never occurs still has its row and column.
    ///
    /// # Errors
    /// [`EvalError::Invalid`] when `labels` is empty or repeats a label, and
    /// [`EvalError::Metric`] when a pair uses a label not in `labels`.
    pub fn with_labels<I, H, J>(labels: &[impl AsRef<str>], pairs: I) -> Result<Self>
    where
        I: IntoIterator<Item = (H, J)>,
        H: AsRef<str>,
        J: AsRef<str>,
    {
        let labels = checked_labels(labels)?;
        let mut matrix = ConfusionMatrix { counts: vec![vec![0; labels.len()]; labels.len()], labels };
        for (n, (h, j)) in pairs.into_iter().enumerate() {
            let index = |label: &str, who: &str| {
                matrix.index(label).ok_or_else(|| EvalError::Metric {
                    metric: "confusion matrix".into(),
                    message: format!("pair {n}: {who} label `{label}` is not one of {:?}", matrix.labels),
                })
            };
            let (i, k) = (index(h.as_ref(), "human")?, index(j.as_ref(), "judge")?);
            matrix.counts[i][k] += 1;
        }
        Ok(matrix)
    }

    /// A binary matrix from `(human, judge)` booleans, labels
    /// [`NEGATIVE`] (`false`) and [`POSITIVE`] (`true`) in that order.
    pub fn from_bools(pairs: impl IntoIterator<Item = (bool, bool)>) -> Self {
        let mut counts = vec![vec![0; 2]; 2];
        for (h, j) in pairs {
            counts[usize::from(h)][usize::from(j)] += 1;
        }
        ConfusionMatrix { labels: vec![NEGATIVE.into(), POSITIVE.into()], counts }
    }

    /// A matrix from its counts, rows human and columns judge, in `labels` order.
    ///
    /// # Errors
    /// [`EvalError::Invalid`] when `labels` is empty or repeats a label, or
    /// `counts` is not square of side `labels.len()`.
    pub fn from_counts(labels: &[impl AsRef<str>], counts: Vec<Vec<usize>>) -> Result<Self> {
        let labels = checked_labels(labels)?;
        if counts.len() != labels.len() || counts.iter().any(|row| row.len() != labels.len()) {
            return Err(EvalError::Invalid(format!(
                "confusion matrix: counts are not {0}x{0} for {0} labels",
                labels.len()
            )));
        }
        Ok(ConfusionMatrix { labels, counts })
    }

    /// The labels, in row and column order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The counts: `counts()[i][j]` pairs with human label `i`, judge label `j`.
    pub fn counts(&self) -> &[Vec<usize>] {
        &self.counts
    }

    /// Number of pairs.
    pub fn n(&self) -> usize {
        self.counts.iter().flatten().sum()
    }

    /// Position of `label` in [`labels`](Self::labels).
    pub fn index(&self, label: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == label)
    }

    fn trace(&self) -> usize {
        (0..self.labels.len()).map(|i| self.counts[i][i]).sum()
    }

    /// Share of pairs where judge and human agree; `None` without pairs.
    pub fn accuracy(&self) -> Option<f64> {
        let n = self.n();
        (n > 0).then(|| self.trace() as f64 / n as f64)
    }

    /// Cohen's kappa, `(p_o - p_e) / (1 - p_e)`: observed agreement `p_o` against
    /// the agreement `p_e` expected from the two raters' label frequencies.
    ///
    /// `None` when `p_e == 1` (both raters used one and the same label only, or
    /// there are no pairs): kappa is 0/0 there, and scikit-learn returns NaN.
    /// Computed as `(n·trace − Σ rowᵢ·colᵢ) / (n² − Σ rowᵢ·colᵢ)` in integers, so
    /// the one rounding is the final division.
    pub fn kappa(&self) -> Option<f64> {
        let k = self.labels.len();
        let n = self.n() as u128;
        let chance: u128 = (0..k)
            .map(|i| {
                let row: usize = self.counts[i].iter().sum();
                let col: usize = self.counts.iter().map(|r| r[i]).sum();
                row as u128 * col as u128
            })
            .sum();
        let denominator = n * n - chance;
        if denominator == 0 {
            return None;
        }
        let numerator = (n * self.trace() as u128) as i128 - chance as i128;
        Some(numerator as f64 / denominator as f64)
    }

    /// True positives, false positives and false negatives of class `positive`
    /// (one against the rest).
    ///
    /// # Errors
    /// [`EvalError::Metric`] when `positive` is not one of the labels.
    pub fn one_vs_rest(&self, positive: &str) -> Result<(usize, usize, usize)> {
        let p = self.index(positive).ok_or_else(|| EvalError::Metric {
            metric: "agreement".into(),
            message: format!("positive label `{positive}` is not one of {:?}", self.labels),
        })?;
        let tp = self.counts[p][p];
        let fp = self.counts.iter().map(|row| row[p]).sum::<usize>() - tp;
        let fn_ = self.counts[p].iter().sum::<usize>() - tp;
        Ok((tp, fp, fn_))
    }

    /// Every metric of [`Agreement`]; precision, recall and F1 are those of
    /// `positive` (all 0 without a positive class).
    ///
    /// # Errors
    /// [`EvalError::Metric`] when there are no pairs or `positive` is not a label.
    pub fn agreement(&self, positive: Option<&str>) -> Result<Agreement> {
        let accuracy = self.accuracy().ok_or_else(|| EvalError::Metric {
            metric: "agreement".into(),
            message: "no (human, judge) pairs".into(),
        })?;
        // scikit-learn's zero_division default: 0.0 for 0/0.
        let ratio = |num: usize, den: usize| if den > 0 { num as f64 / den as f64 } else { 0.0 };
        let (precision, recall, f1) = match positive {
            Some(label) => {
                let (tp, fp, fn_) = self.one_vs_rest(label)?;
                (ratio(tp, tp + fp), ratio(tp, tp + fn_), ratio(2 * tp, 2 * tp + fp + fn_))
            }
            None => (0.0, 0.0, 0.0),
        };
        Ok(Agreement {
            n: self.n(),
            labels: self.labels.clone(),
            confusion: self.counts.clone(),
            accuracy,
            kappa: self.kappa(),
            positive: positive.map(str::to_string),
            precision,
            recall,
            f1,
        })
    }
}

fn checked_labels(labels: &[impl AsRef<str>]) -> Result<Vec<String>> {
    let labels: Vec<String> = labels.iter().map(|l| l.as_ref().to_string()).collect();
    if labels.is_empty() {
        return Err(EvalError::Invalid("confusion matrix: no labels".into()));
    }
    let mut seen = BTreeSet::new();
    if let Some(dup) = labels.iter().find(|l| !seen.insert(l.as_str())) {
        return Err(EvalError::Invalid(format!("confusion matrix: label `{dup}` given twice")));
    }
    Ok(labels)
}

/// A judge's agreement with human labels, stored with the judge and shown in
/// reports. For undefined values see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// Number of (human, judge) pairs.
    pub n: usize,
    /// Labels, in the confusion matrix's row and column order.
    pub labels: Vec<String>,
    /// `confusion[i][j]`: pairs with human label `labels[i]`, judge label `labels[j]`.
    pub confusion: Vec<Vec<usize>>,
    /// Share of pairs on which judge and human agree.
    pub accuracy: f64,
    /// Cohen's kappa; `None` when chance agreement is 1 (see [`ConfusionMatrix::kappa`]).
    pub kappa: Option<f64>,
    /// The class precision, recall and F1 are about, if any.
    pub positive: Option<String>,
    /// `tp / (tp + fp)`: of the judge's positives, the share humans call
    /// positive (0 without judge positives).
    pub precision: f64,
    /// `tp / (tp + fn)`: of the humans' positives, the share the judge finds
    /// (0 without human positives).
    pub recall: f64,
    /// `2tp / (2tp + fp + fn)`, the harmonic mean of precision and recall (0
    /// when both are).
    pub f1: f64,
}

impl Agreement {
    /// The agreement of binary `(human, judge)` answers, positive class `true`
    /// ([`ConfusionMatrix::from_bools`]).
    ///
    /// # Errors
    /// [`EvalError::Metric`] when `pairs` is empty.
    pub fn binary(pairs: &[(bool, bool)]) -> Result<Agreement> {
        ConfusionMatrix::from_bools(pairs.iter().copied()).agreement(Some(POSITIVE))
    }
}

/// [`ConfusionMatrix::from_pairs`] then [`ConfusionMatrix::agreement`].
///
/// # Errors
/// As [`ConfusionMatrix::agreement`].
pub fn agreement<I, H, J>(pairs: I, positive: Option<&str>) -> Result<Agreement>
where
    I: IntoIterator<Item = (H, J)>,
    H: AsRef<str>,
    J: AsRef<str>,
{
    ConfusionMatrix::from_pairs(pairs).agreement(positive)
}
