//! Collation: encoded pairs into one padded batch of token ids and a loss mask.

use candle_core::{Device, Tensor};

use super::Encoded;
use crate::error::Result;

/// A micro-batch of `b` pairs as `2b` right-padded sequences.
#[derive(Debug)]
pub struct Batch {
    /// `(2b, T)` u32: row `i < b` is pair `i`'s prompt and chosen completion,
    /// row `b + i` its prompt and rejected completion; right-padded with the pad
    /// id to `T`, the longest row.
    pub input_ids: Tensor,
    /// `(2b, T)` f32: 1.0 on completion tokens (the EOS included), 0.0 on prompt
    /// and padding. Position `j` marks token `j` itself (see
    /// [`crate::loss::sequence_logps`] for the shift).
    pub loss_mask: Tensor,
    /// The pairs' ids, in row order.
    pub ids: Vec<String>,
    /// Real (non-padding) tokens in the batch.
    pub tokens: usize,
}

/// Pad `items` into a [`Batch`] on `device`. An empty `items` gives `(0, 0)`
/// tensors.
pub fn collate(items: &[&Encoded], pad_id: u32, device: &Device) -> Result<Batch> {
    let b = items.len();
    let width =
        items.iter().map(|e| e.prompt.len() + e.chosen.len().max(e.rejected.len())).max().unwrap_or(0);
    let mut ids = vec![pad_id; 2 * b * width];
    let mut mask = vec![0f32; 2 * b * width];
    let mut tokens = 0;
    for (i, e) in items.iter().enumerate() {
        for (row, completion) in [(i, &e.chosen), (b + i, &e.rejected)] {
            let start = row * width;
            let p = e.prompt.len();
            ids[start..start + p].copy_from_slice(&e.prompt);
            ids[start + p..start + p + completion.len()].copy_from_slice(completion);
            mask[start + p..start + p + completion.len()].fill(1.0);
            tokens += p + completion.len();
        }
    }
    Ok(Batch {
        input_ids: Tensor::from_vec(ids, (2 * b, width), device)?,
        loss_mask: Tensor::from_vec(mask, (2 * b, width), device)?,
        ids: items.iter().map(|e| e.id.clone()).collect(),
        tokens,
    })
}
