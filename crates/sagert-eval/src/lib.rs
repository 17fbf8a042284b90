//! Safety evaluation for sagert.
//!
//! - [`import`]: public safety datasets (PKU-SafeRLHF, HH-RLHF, TRL files, ALERT,
//!   AdvBench, HarmBench, plain files with a field map) into sagert's formats,
//!   mapped onto the sagert taxonomy where a mapping exists.
//! - [`stats`]: bootstrap confidence intervals; [`agreement`]: a judge's
//!   agreement with human labels (accuracy, Cohen's kappa, confusion matrix).
//! - [`judge`]: judges of harm, refusal and toxicity behind one interface;
//!   [`calibrate`] measures them against human labels.
//! - [`bbq`]: BBQ's accuracy and bias scores; [`mc`]: multiple-choice
//!   log-likelihood scoring in lm-evaluation-harness's style.

pub mod agreement;
pub mod bbq;
pub mod benign;
pub mod calibrate;
mod error;
pub mod evaluate;
pub mod import;
mod jsonl;
pub mod judge;
pub mod mc;
pub mod probe;
pub mod redteam;
pub mod report;
pub mod results;
pub mod results_io;
pub mod sentiment;
pub mod stats;
pub mod study;

pub use error::{EvalError, Result};
