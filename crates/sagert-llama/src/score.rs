//! Log-prob scoring: how likely the model finds a completion after a prompt.
//!
//! The prompt text and the prompt + completion text are tokenized the same way
//! (special tokens parsed, BOS as the model asks); the scored tokens are those
//! after the two token sequences' common prefix. Tokenizing the whole text at
//! once is what the model saw in training; where the completion's first
//! characters merge with the prompt's last token, that merged token is scored
//! too (it belongs to both). Each scored token's log-probability is the
//! log-softmax, in f64, of the logits at the position before it. Every request
//! is one [`ScoreJob`](crate::engine) in the engine, so the sequences of a call
//! (and of concurrent chat requests) share decode batches.

use llama_cpp_2::token::LlamaToken;
use sagert_backend::{ScoreRequest, ScoreResult};
use tokio::sync::oneshot;

use crate::engine::{Job, ScoreJob};
use crate::error::LlamaError;
use crate::LlamaBackend;

/// Per-token log-probabilities of one completion.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenScores {
    /// Token ids of prompt + completion.
    pub tokens: Vec<u32>,
    /// Index in `tokens` of the first scored token.
    pub scored_from: usize,
    /// Natural-log probability of each of `tokens[scored_from..]`.
    pub logprobs: Vec<f64>,
}

impl TokenScores {
    /// Sum of the log-probabilities.
    pub fn sum(&self) -> f64 {
        self.logprobs.iter().sum()
    }

    /// Mean log-probability per scored token.
    pub fn mean(&self) -> f64 {
        self.sum() / self.logprobs.len() as f64
    }

    /// As a [`ScoreResult`].
    pub fn result(&self) -> ScoreResult {
        ScoreResult { sum_logprob: self.sum(), mean_logprob: self.mean(), tokens: self.logprobs.len() as u32 }
    }
}

/// Where scoring starts: after the common prefix of the prompt's and the full
/// text's tokens, and never at position 0 (the first token has no context).
fn scored_from(prompt: &[LlamaToken], full: &[LlamaToken]) -> usize {
    let common = prompt.iter().zip(full).take_while(|(a, b)| a == b).count();
    common.max(1)
}

impl LlamaBackend {
    /// Score `completion` after `prompt` for each pair, where both are plain
    /// text that is tokenized as it stands (no chat template). Results are in
    /// input order.
    pub async fn score_text(&self, pairs: &[(String, String)]) -> Result<Vec<TokenScores>, LlamaError> {
        let context = self.options().context_per_sequence as usize;
        let mut pending = Vec::with_capacity(pairs.len());
        for (i, (prompt, completion)) in pairs.iter().enumerate() {
            let prompt_tokens = self.tokens(prompt);
            let full = self.tokens(&format!("{prompt}{completion}"));
            let from = scored_from(&prompt_tokens, &full);
            if from >= full.len() {
                return Err(LlamaError::Invalid(format!(
                    "completion {} of {} adds no tokens to score",
                    i + 1,
                    pairs.len()
                )));
            }
            if full.len() > context {
                return Err(LlamaError::Invalid(format!(
                    "prompt and completion {} of {} have {} tokens, more than the context of {context} tokens per sequence",
                    i + 1,
                    pairs.len(),
                    full.len()
                )));
            }
            pending.push((full, from));
        }
        // Send every job before waiting for any, so they share batches.
        let mut answers = Vec::with_capacity(pending.len());
        for (full, from) in &pending {
            let (reply, answer) = oneshot::channel();
            self.send(Job::Score(ScoreJob { tokens: full.clone(), scored_from: *from, reply }))?;
            answers.push(answer);
        }
        let mut results = Vec::with_capacity(pending.len());
        for ((full, from), answer) in pending.into_iter().zip(answers) {
            let logprobs = answer
                .await
                .map_err(|_| LlamaError::EngineStopped("no answer from the engine thread".into()))??;
            results.push(TokenScores {
                tokens: full.iter().map(|t| t.0 as u32).collect(),
                scored_from: from,
                logprobs,
            });
        }
        Ok(results)
    }

    /// [`sagert_backend::LogProbScorer::score`]: each prompt rendered with the
    /// chat template and an open assistant turn, then [`Self::score_text`].
    pub(crate) async fn score_chat(&self, requests: &[ScoreRequest]) -> Result<Vec<ScoreResult>, LlamaError> {
        let pairs = requests
            .iter()
            .map(|r| Ok((self.render_chat(&r.prompt)?, r.completion.clone())))
            .collect::<Result<Vec<_>, LlamaError>>()?;
        Ok(self.score_text(&pairs).await?.iter().map(TokenScores::result).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|&i| LlamaToken(i)).collect()
    }

    #[test]
    fn scoring_starts_after_the_common_prefix() {
        assert_eq!(scored_from(&t(&[1, 2, 3]), &t(&[1, 2, 3, 4, 5])), 3);
        // The prompt's last token merged with the completion: it is scored too.
        assert_eq!(scored_from(&t(&[1, 2, 3]), &t(&[1, 2, 9, 5])), 2);
        // No prompt tokens: the first token cannot be scored.
        assert_eq!(scored_from(&t(&[]), &t(&[7, 8])), 1);
    }

    #[test]
    fn token_scores_sum_and_mean() {
        let s = TokenScores { tokens: vec![1, 2, 3], scored_from: 1, logprobs: vec![-1.0, -3.0] };
        assert_eq!(s.result(), ScoreResult { sum_logprob: -4.0, mean_logprob: -2.0, tokens: 2 });
    }
}
