//! The judge of the generation pipeline: it ranks candidate responses for
//! rejection sampling and gives each pair its verdicts.
//!
//! Two kinds, chosen by `[stages.validate] judge`:
//!
//! - **classifier** (default, offline, no model calls): the safety classifier of
//!   `sagert-encoders` (logistic refusal and harm heads over MiniLM embeddings).
//!   - a query is *harmful* when the harm head's probability reaches
//!     `query_harm_threshold`;
//!   - it is *in its category* when its leaf is among the `category_top_k`
//!     taxonomy leaves nearest to it by embedding cosine (leaf text: the
//!     category names and the leaf description);
//!   - *chosen is safe* when its harm probability is below `harm_threshold`;
//!   - *chosen over-refuses* when it is a refusal (refusal head, reading the
//!     query too) shorter than `min_helpful_words`: it declines and offers
//!     nothing;
//!   - *rejected is unsafe* when its harm probability reaches `harm_threshold`,
//!     or when the pair is ordered the right way: its harm probability exceeds
//!     the chosen one's by at least `harm_margin` and it refuses no more than
//!     the chosen one. Complying with a harmful query is the unsafe behaviour
//!     the pair teaches against, and the refusal head's absolute level is a
//!     poor guide on short generated answers (measured: a plainly compliant
//!     answer to a benign question scored 0.59 refusal), so the rule compares
//!     the two responses of the pair instead.
//! - **llm**: the `judge` role with the `judge_pair.j2` and `judge_response.j2`
//!   templates and JSON-schema verdicts; scores are 0 or 1.

use std::sync::Arc;

use sagert_config::{JudgeKind, ValidateStage};
use sagert_encoders::safety::SafetyClassifier;
use sagert_engine::RoleClient;

use crate::record::Verdicts;
use crate::stages::{self, LeafInfo};
use crate::templates::Templates;
use crate::PipelineError;

/// Why a judge step did not give an answer.
#[derive(Debug)]
pub enum JudgeError {
    /// This item's judgement failed (a malformed verdict, a failed call); the
    /// item fails with this reason and the run goes on.
    Item(String),
    /// The run cannot go on (the store failed, the budget is spent).
    Fatal(PipelineError),
}

/// A candidate response's scores, in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CandidateScore {
    /// Probability (or verdict) that the response is harmful.
    pub harm: f64,
    /// Probability (or verdict) that the response is a refusal.
    pub refusal: f64,
}

/// The run's judge. See the [module docs](self).
pub struct Judge {
    kind: JudgeKind,
    settings: ValidateStage,
    classifier: Arc<SafetyClassifier>,
    llm: Option<Arc<RoleClient>>,
    templates: Arc<Templates>,
    /// Every taxonomy leaf's path and embedding, for the category check.
    leaves: Vec<(String, Vec<f32>)>,
}

impl Judge {
    /// A judge over the whole taxonomy's `leaves` (the category check ranks
    /// a query's leaf among all of them). `llm` is the judge role's client,
    /// needed when `settings.judge` is `llm`.
    pub fn new(
        settings: ValidateStage,
        classifier: Arc<SafetyClassifier>,
        llm: Option<Arc<RoleClient>>,
        templates: Arc<Templates>,
        leaves: &[LeafInfo],
    ) -> Result<Judge, PipelineError> {
        if settings.judge == JudgeKind::Llm && llm.is_none() {
            return Err(PipelineError::Invalid(
                "stages.validate.judge is `llm`, but there is no judge role".into(),
            ));
        }
        let leaves = if settings.judge == JudgeKind::Classifier {
            let texts: Vec<String> = leaves.iter().map(LeafInfo::embed_text).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let vectors = classifier
                .embedder()
                .embed(&refs)
                .map_err(|e| PipelineError::Encoder { what: "embedder", message: e.to_string() })?;
            leaves.iter().map(|l| l.path.clone()).zip(vectors).collect()
        } else {
            Vec::new()
        };
        Ok(Judge { kind: settings.judge, settings, classifier, llm, templates, leaves })
    }

    /// The judge's name, as the dataset's `judge` column gives it.
    pub fn name(&self) -> String {
        match (&self.kind, &self.llm) {
            (JudgeKind::Llm, Some(c)) => c.model_id().to_string(),
            _ => format!("classifier:{}", sagert_encoders::safety::EMBEDDER),
        }
    }

    /// The classifier (its embedder serves dedup too).
    pub fn classifier(&self) -> &Arc<SafetyClassifier> {
        &self.classifier
    }

    /// Scores of each candidate response to `query`.
    pub async fn score(
        &self,
        query: &str,
        candidates: &[String],
        item: &str,
    ) -> Result<Vec<CandidateScore>, JudgeError> {
        match self.kind {
            JudgeKind::Classifier => {
                let classifier = self.classifier.clone();
                let query = query.to_string();
                let candidates = candidates.to_vec();
                let scores = tokio::task::spawn_blocking(move || {
                    let texts: Vec<&str> = candidates.iter().map(String::as_str).collect();
                    let prompts = vec![query.as_str(); texts.len()];
                    classifier.classify(&texts, Some(&prompts))
                })
                .await
                .map_err(|e| JudgeError::Fatal(PipelineError::Invalid(format!("classifier task: {e}"))))?
                .map_err(|e| {
                    JudgeError::Fatal(PipelineError::Encoder { what: "classifier", message: e.to_string() })
                })?;
                Ok(scores
                    .into_iter()
                    .map(|s| CandidateScore { harm: f64::from(s.harmful), refusal: f64::from(s.refusal) })
                    .collect())
            }
            JudgeKind::Llm => {
                let client = self.llm.as_ref().expect("checked in Judge::new");
                let mut out = Vec::with_capacity(candidates.len());
                for (i, c) in candidates.iter().enumerate() {
                    let request = stages::judge_response_request(&self.templates, query, c)
                        .map_err(JudgeError::Fatal)?;
                    let response = call(client, &request, &format!("{item}/judge{i}")).await?;
                    let v = stages::parse_response_verdict(&response).map_err(JudgeError::Item)?;
                    out.push(CandidateScore {
                        harm: f64::from(u8::from(v.harmful)),
                        refusal: f64::from(u8::from(v.refusal)),
                    });
                }
                Ok(out)
            }
        }
    }

    /// Whether a chosen candidate over-refuses (classifier rule).
    pub fn over_refuses(&self, text: &str, score: &CandidateScore) -> bool {
        score.refusal >= 0.5 && text.split_whitespace().count() < self.settings.min_helpful_words as usize
    }

    /// The index of the best chosen candidate: safe before unsafe, engaging
    /// before over-refusing, then the least harmful; ties keep the first.
    pub fn best_chosen(&self, candidates: &[String], scores: &[CandidateScore]) -> usize {
        let key = |i: usize| {
            let s = &scores[i];
            let unsafe_ = s.harm >= self.settings.harm_threshold;
            (unsafe_, self.over_refuses(&candidates[i], s), s.harm)
        };
        (0..scores.len())
            .min_by(|&a, &b| key(a).partial_cmp(&key(b)).unwrap_or(std::cmp::Ordering::Equal))
            .unwrap_or(0)
    }

    /// The index of the best rejected candidate: the most harmful, then the
    /// least refusing; ties keep the first.
    pub fn best_rejected(&self, scores: &[CandidateScore]) -> usize {
        let key = |i: usize| scores[i].harm - 0.5 * scores[i].refusal;
        (0..scores.len()).fold(0, |best, i| if key(i) > key(best) { i } else { best })
    }

    /// The verdicts on a pair, given its responses' scores.
    pub async fn verdicts(
        &self,
        leaf: &LeafInfo,
        query: &str,
        chosen: (&str, CandidateScore),
        rejected: (&str, CandidateScore),
        item: &str,
    ) -> Result<Verdicts, JudgeError> {
        match self.kind {
            JudgeKind::Classifier => {
                let classifier = self.classifier.clone();
                let q = query.to_string();
                let (query_score, query_vec) = tokio::task::spawn_blocking(move || {
                    let vec = classifier.embedder().embed(&[q.as_str()])?.remove(0);
                    let score = classifier.heads().score(&vec, None);
                    Ok::<_, sagert_encoders::safety::SafetyError>((score, vec))
                })
                .await
                .map_err(|e| JudgeError::Fatal(PipelineError::Invalid(format!("classifier task: {e}"))))?
                .map_err(|e| {
                    JudgeError::Fatal(PipelineError::Encoder { what: "classifier", message: e.to_string() })
                })?;
                let s = &self.settings;
                Ok(Verdicts {
                    query_harmful: f64::from(query_score.harmful) >= s.query_harm_threshold,
                    query_in_category: self.leaf_rank(&leaf.path, &query_vec) < s.category_top_k as usize,
                    chosen_safe: chosen.1.harm < s.harm_threshold,
                    chosen_not_over_refusal: !self.over_refuses(chosen.0, &chosen.1),
                    rejected_unsafe: rejected.1.harm >= s.harm_threshold
                        || (rejected.1.harm - chosen.1.harm >= s.harm_margin
                            && rejected.1.refusal <= chosen.1.refusal),
                    query_harm_score: f64::from(query_score.harmful),
                    chosen_harm_score: chosen.1.harm,
                    chosen_refusal_score: chosen.1.refusal,
                    rejected_harm_score: rejected.1.harm,
                })
            }
            JudgeKind::Llm => {
                let client = self.llm.as_ref().expect("checked in Judge::new");
                let request = stages::judge_pair_request(&self.templates, leaf, query, chosen.0, rejected.0)
                    .map_err(JudgeError::Fatal)?;
                let response = call(client, &request, &format!("{item}/judge")).await?;
                let v = stages::parse_pair_verdict(&response).map_err(JudgeError::Item)?;
                Ok(Verdicts {
                    query_harmful: v.query_harmful,
                    query_in_category: v.query_in_category,
                    chosen_safe: v.chosen_safe,
                    chosen_not_over_refusal: !v.chosen_over_refusal,
                    rejected_unsafe: v.rejected_unsafe,
                    query_harm_score: f64::from(u8::from(v.query_harmful)),
                    chosen_harm_score: f64::from(u8::from(!v.chosen_safe)),
                    chosen_refusal_score: chosen.1.refusal,
                    rejected_harm_score: f64::from(u8::from(v.rejected_unsafe)),
                })
            }
        }
    }

    /// Where `path` ranks among all leaves by cosine to `query` (0 = nearest).
    fn leaf_rank(&self, path: &str, query: &[f32]) -> usize {
        let Some(own) = self.leaves.iter().find(|(p, _)| p == path) else { return usize::MAX };
        let own_cos = sagert_encoders::embed::cosine(query, &own.1);
        self.leaves
            .iter()
            .filter(|(p, v)| p != path && sagert_encoders::embed::cosine(query, v) > own_cos)
            .count()
    }
}

/// A judge call through the role client: budget stops are fatal, other
/// failures fail the item.
async fn call(
    client: &RoleClient,
    request: &sagert_backend::ChatRequest,
    item: &str,
) -> Result<sagert_backend::ChatResponse, JudgeError> {
    match client.chat(request, Some(item)).await {
        Ok(outcome) => Ok(outcome.response),
        Err(e) => Err(crate::run::classify_call_error(e).map_or_else(JudgeError::Fatal, JudgeError::Item)),
    }
}
