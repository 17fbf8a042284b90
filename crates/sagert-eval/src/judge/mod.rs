//! Judges: what decides whether a response is harmful, a refusal or toxic.
//!
//! Every judge answers one [`Question`] about (prompt, response) [`Sample`]s
//! behind one interface, [`Judge`], so that a metric can name any of them:
//!
//! | name | question | what it is |
//! |---|---|---|
//! | `refusal-keywords` | refusal | refusal phrases in the opening of the response ([`keywords`]) |
//! | `classifier-refusal` | refusal | the offline classifier's refusal head (`sagert-encoders`) |
//! | `classifier-harm` | harmful | the offline classifier's harm head |
//! | `toxicity` | toxic | the offline toxicity scorer: toxic when any label's probability reaches 0.5 |
//! | `llm-llama-guard` | harmful | an LLM through any backend, Llama-Guard-style prompt over the MLCommons hazards |
//! | `llm-harmbench` | harmful | an LLM through any backend, HarmBench's classifier prompt |
//!
//! A judge gives each sample a [`Judgement`] (a verdict and a score in
//! `[0, 1]`) or, when that one sample cannot be judged (an LLM's answer that
//! is no verdict), the reason as a string: one item's failure never stops a
//! run. An `Err` of the whole call means the judge itself failed.
//!
//! [`crate::calibrate`] measures a judge against human labels; reports show
//! that agreement beside every rate the judge produced.

pub mod encoders;
pub mod keywords;
pub mod llm;

use std::fmt;
use std::str::FromStr;

use sagert_backend::BoxFuture;
use serde::{Deserialize, Serialize};

pub use encoders::{ClassifierJudge, ToxicityJudge};
pub use keywords::RefusalKeywords;
pub use llm::{LlmJudge, LlmTemplate};

use crate::Result;

/// What a judge decides about a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Question {
    /// The response is harmful: it complies with a harmful request or contains harmful content.
    Harmful,
    /// The response declines the request.
    Refusal,
    /// The response is toxic (insulting, obscene, threatening, hateful).
    Toxic,
}

impl Question {
    /// The lower-case name used in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Question::Harmful => "harmful",
            Question::Refusal => "refusal",
            Question::Toxic => "toxic",
        }
    }
}

impl fmt::Display for Question {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One response to judge, with the prompt it answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// The request.
    pub prompt: String,
    /// The model's response.
    pub response: String,
}

impl Sample {
    /// A sample of `prompt` and `response`.
    pub fn new(prompt: impl Into<String>, response: impl Into<String>) -> Self {
        Sample { prompt: prompt.into(), response: response.into() }
    }
}

/// A judge's decision on one sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The answer to the judge's question (`true`: harmful, a refusal, toxic).
    pub positive: bool,
    /// The judge's score in `[0, 1]`: a probability, or 0/1 for judges that
    /// only give a verdict.
    pub score: f64,
}

/// Each sample's judgement in input order, or the reason it could not be judged.
pub type Judgements = Vec<std::result::Result<Judgement, String>>;

/// Something that answers a [`Question`] about responses.
///
/// Implementations are shared between tasks, so they take `&self`.
pub trait Judge: Send + Sync {
    /// The judge's name as reports and calibration files show it (a
    /// [`JudgeKind`] name, with the model for LLM judges).
    fn name(&self) -> String;

    /// The question the judge answers.
    fn question(&self) -> Question;

    /// Judge `samples`; the result has one entry per sample, in order.
    fn judge<'a>(&'a self, samples: &'a [Sample]) -> BoxFuture<'a, Result<Judgements>>;
}

/// The kinds of judge, by the name a metric or the command line gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JudgeKind {
    /// [`RefusalKeywords`].
    #[serde(rename = "refusal-keywords")]
    RefusalKeywords,
    /// [`ClassifierJudge`] with its refusal head.
    #[serde(rename = "classifier-refusal")]
    ClassifierRefusal,
    /// [`ClassifierJudge`] with its harm head.
    #[serde(rename = "classifier-harm")]
    ClassifierHarm,
    /// [`ToxicityJudge`].
    #[serde(rename = "toxicity")]
    Toxicity,
    /// [`LlmJudge`] with [`LlmTemplate::LlamaGuard`].
    #[serde(rename = "llm-llama-guard")]
    LlmLlamaGuard,
    /// [`LlmJudge`] with [`LlmTemplate::HarmBench`].
    #[serde(rename = "llm-harmbench")]
    LlmHarmBench,
}

impl JudgeKind {
    /// Every kind, in the order help and reports list them.
    pub const ALL: [JudgeKind; 6] = [
        JudgeKind::RefusalKeywords,
        JudgeKind::ClassifierRefusal,
        JudgeKind::ClassifierHarm,
        JudgeKind::Toxicity,
        JudgeKind::LlmLlamaGuard,
        JudgeKind::LlmHarmBench,
    ];

    /// The kind's name.
    pub fn name(self) -> &'static str {
        match self {
            JudgeKind::RefusalKeywords => "refusal-keywords",
            JudgeKind::ClassifierRefusal => "classifier-refusal",
            JudgeKind::ClassifierHarm => "classifier-harm",
            JudgeKind::Toxicity => "toxicity",
            JudgeKind::LlmLlamaGuard => "llm-llama-guard",
            JudgeKind::LlmHarmBench => "llm-harmbench",
        }
    }

    /// The question judges of this kind answer.
    pub fn question(self) -> Question {
        match self {
            JudgeKind::RefusalKeywords | JudgeKind::ClassifierRefusal => Question::Refusal,
            JudgeKind::ClassifierHarm | JudgeKind::LlmLlamaGuard | JudgeKind::LlmHarmBench => {
                Question::Harmful
            }
            JudgeKind::Toxicity => Question::Toxic,
        }
    }

    /// Whether the kind needs a chat model (an LLM judge).
    pub fn needs_llm(self) -> bool {
        matches!(self, JudgeKind::LlmLlamaGuard | JudgeKind::LlmHarmBench)
    }
}

impl fmt::Display for JudgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for JudgeKind {
    type Err = crate::EvalError;

    fn from_str(s: &str) -> Result<Self> {
        JudgeKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = JudgeKind::ALL.iter().map(|k| k.name()).collect();
            crate::EvalError::Invalid(format!("unknown judge `{s}`; expected one of {}", names.join(", ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_by_name_and_serde() {
        for kind in JudgeKind::ALL {
            assert_eq!(kind.name().parse::<JudgeKind>().unwrap(), kind);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
        }
        let err = "llm-guard".parse::<JudgeKind>().unwrap_err().to_string();
        assert!(err.contains("unknown judge `llm-guard`") && err.contains("llm-llama-guard"), "{err}");
    }

    #[test]
    fn questions_of_kinds() {
        assert_eq!(JudgeKind::RefusalKeywords.question(), Question::Refusal);
        assert_eq!(JudgeKind::ClassifierHarm.question(), Question::Harmful);
        assert_eq!(JudgeKind::Toxicity.question(), Question::Toxic);
        assert!(JudgeKind::LlmHarmBench.needs_llm() && !JudgeKind::ClassifierRefusal.needs_llm());
    }
}
