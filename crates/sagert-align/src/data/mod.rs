//! Preference data: read, render, tokenize, truncate, sample and batch.
//!
//! The path from a dataset file to a training batch:
//!
//! 1. [`read_preferences`] reads TRL preference data, standard (`prompt`,
//!    `chosen`, `rejected` strings) or conversational (lists of `{role, content}`
//!    messages), from a JSONL or Parquet file, a dataset directory written by
//!    `sagert generate`/`sagert export`, or a run directory, into
//!    [`PreferencePair`]s. Every pair is conversational from here on.
//! 2. [`limit`] keeps a seeded, category-stratified sample whose smaller sizes
//!    are subsets of its larger ones ([`stratified_order`]).
//! 3. [`Encoder::encode`] renders each pair with the model's own chat template,
//!    tokenizes prompt and completions, ends each completion with exactly one
//!    EOS and applies the [`Truncation`] rule, giving an [`Encoded`] pair.
//! 4. [`collate`] pads a micro-batch into a [`Batch`]: chosen rows, then
//!    rejected rows, with a loss mask over the completion tokens.
//!
//! # Always the chat template
//!
//! TRL applies the chat template only to conversational data and tokenizes
//! standard (string) data as plain text. We always render with the model's
//! template: a standard pair's prompt becomes one `user` message and each
//! response one `assistant` message. The aligned model is used as a chat
//! model: it is served, judged and red-teamed through its chat template, so
//! the text it learns to prefer must be framed the way it will be asked.
//! Training on bare text would shape a distribution the model never sees at
//! inference.
//!
//! Neighbours: [`crate::loss`] turns a [`Batch`]'s logits into sequence
//! log-probabilities; [`crate::refs`] keys cached reference log-probabilities by
//! an [`Encoded`] pair's token ids; [`crate::train`](mod@crate::train) drives all of this.

mod batch;
mod encode;
mod read;
mod sample;

use sagert_backend::ChatMessage;

pub use batch::{collate, Batch};
pub use encode::{Encoder, Truncation};
pub use read::read_preferences;
pub use sample::{limit, stratified_order};

/// One preference pair, conversational: the prompt's messages and the chosen
/// and rejected assistant turn(s) that follow it.
#[derive(Clone, Debug, PartialEq)]
pub struct PreferencePair {
    /// The record's `id` column, or the hex SHA-256 of its prompt, chosen and
    /// rejected messages (so the same pair in standard and conversational form
    /// gets the same id).
    pub id: String,
    /// The category the pair is stratified by; empty when uncategorised.
    pub category: String,
    /// The conversation up to the response: system, user and earlier turns.
    pub prompt: Vec<ChatMessage>,
    /// The preferred response: one or more `assistant` turns.
    pub chosen: Vec<ChatMessage>,
    /// The dispreferred response: one or more `assistant` turns.
    pub rejected: Vec<ChatMessage>,
    /// A precomputed reference log-probability of `chosen`, if the data has one.
    pub ref_chosen_logps: Option<f64>,
    /// A precomputed reference log-probability of `rejected`, if the data has one.
    pub ref_rejected_logps: Option<f64>,
}

/// A tokenized pair, ready for [`collate`]: the prompt's tokens and each
/// completion's, which follow the prompt in a sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    /// The pair's id.
    pub id: String,
    /// The pair's category (empty when uncategorised).
    pub category: String,
    /// The rendered prompt, ending with the template's opening of the
    /// assistant's turn.
    pub prompt: Vec<u32>,
    /// The chosen completion, ending with one EOS unless truncated.
    pub chosen: Vec<u32>,
    /// The rejected completion, ending with one EOS unless truncated.
    pub rejected: Vec<u32>,
    /// The dataset's reference log-probability of `chosen`, if any.
    pub ref_chosen_logps: Option<f64>,
    /// The dataset's reference log-probability of `rejected`, if any.
    pub ref_rejected_logps: Option<f64>,
    /// Whether the [`Truncation`] rule cut the prompt or the completions.
    pub truncated: bool,
}
