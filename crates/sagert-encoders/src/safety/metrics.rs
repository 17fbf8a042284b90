//! Binary classification metrics: the confusion matrix, accuracy and Cohen's
//! kappa.

use serde::{Deserialize, Serialize};

/// Counts of a binary classifier's answers against the truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// Predicted positive, truly positive.
    pub tp: usize,
    /// Predicted positive, truly negative.
    pub fp: usize,
    /// Predicted negative, truly negative.
    pub tn: usize,
    /// Predicted negative, truly positive.
    #[serde(rename = "fn")]
    pub fn_: usize,
}

impl Confusion {
    /// Counts over `(truth, predicted)` pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (bool, bool)>) -> Self {
        let mut c = Confusion::default();
        for (truth, predicted) in pairs {
            match (truth, predicted) {
                (true, true) => c.tp += 1,
                (false, true) => c.fp += 1,
                (false, false) => c.tn += 1,
                (true, false) => c.fn_ += 1,
            }
        }
        c
    }

    /// The number of pairs.
    pub fn total(&self) -> usize {
        self.tp + self.fp + self.tn + self.fn_
    }

    /// The share of correct answers (0 when empty).
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.total())
    }

    /// Of the predicted positives, the share truly positive (0 when none).
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// Of the true positives, the share predicted positive (0 when none).
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// Cohen's kappa: `(p_o - p_e) / (1 - p_e)`, the agreement beyond what the
    /// two marginals give by chance. When chance agreement is already 1 (the
    /// truth and the answers all one and the same class) it is 0 by
    /// convention, as is an empty matrix.
    pub fn kappa(&self) -> f64 {
        let n = self.total() as f64;
        if n == 0.0 {
            return 0.0;
        }
        let observed = self.accuracy();
        let predicted_pos = (self.tp + self.fp) as f64 / n;
        let truly_pos = (self.tp + self.fn_) as f64 / n;
        let chance = predicted_pos * truly_pos + (1.0 - predicted_pos) * (1.0 - truly_pos);
        if chance >= 1.0 {
            return 0.0;
        }
        (observed - chance) / (1.0 - chance)
    }
}

impl std::fmt::Display for Confusion {
    /// A two-line matrix: rows the truth, columns the prediction.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "             pred no  pred yes")?;
        writeln!(f, "  truly no  {:>8}  {:>8}", self.tn, self.fp)?;
        write!(f, "  truly yes {:>8}  {:>8}", self.fn_, self.tp)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_rates() {
        let pairs =
            [(true, true), (true, true), (true, false), (false, true), (false, false), (false, false)];
        let c = Confusion::from_pairs(pairs);
        assert_eq!(c, Confusion { tp: 2, fp: 1, tn: 2, fn_: 1 });
        assert_eq!(c.total(), 6);
        assert!((c.accuracy() - 4.0 / 6.0).abs() < 1e-12);
        assert!((c.precision() - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.recall() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn kappa_of_known_tables() {
        // Wikipedia's worked example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> 0.4.
        let c = Confusion { tp: 20, fn_: 5, fp: 10, tn: 15 };
        assert!((c.kappa() - 0.4).abs() < 1e-12, "{}", c.kappa());
        // Perfect agreement with both classes present: 1.
        assert!((Confusion { tp: 3, tn: 7, ..Default::default() }.kappa() - 1.0).abs() < 1e-12);
        // Always answering the majority class agrees by chance only: 0.
        assert!(Confusion { tp: 8, fp: 2, ..Default::default() }.kappa().abs() < 1e-12);
        // Systematic disagreement is negative.
        assert!((Confusion { fp: 5, fn_: 5, ..Default::default() }.kappa() + 1.0).abs() < 1e-12);
        // One class everywhere, and empty: 0 by convention.
        assert_eq!(Confusion { tp: 4, ..Default::default() }.kappa(), 0.0);
        assert_eq!(Confusion::default().kappa(), 0.0);
    }
}
