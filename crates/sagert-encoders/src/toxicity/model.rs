//! The BiLSTM classifier's weights and forward pass on candle.
//!
//! The Keras graph is `Embedding -> Bidirectional(LSTM, return_sequences,
//! merge concat) -> GlobalMaxPooling1D -> Dense relu -> Dense sigmoid`, with no
//! mask: padding ids go through the LSTMs like any token. Two rewrites make
//! the pass cheaper without changing what it computes:
//!
//! - The embedding is fixed, so its product with each direction's input kernel
//!   (plus the bias) is computed once at load, per vocabulary entry: a lookup
//!   in that table replaces the input projection.
//! - The max over time of `concat(forward_t, backward_t)` is
//!   `concat(max_t forward_t, max_t backward_t)`, so no sequence of outputs is
//!   kept: both directions step together (the backward one over the reversed
//!   ids, as Keras's `go_backwards` does) and each keeps a running maximum.
//! - Padding is one token, so the state (and running max) after `k` padding
//!   steps from the zero state is the same for every text: it is computed
//!   once at load for `k = 0..=maxlen`, and a batch's forward direction starts
//!   after the padding all its texts share (the backward direction likewise
//!   for trailing padding). With pre-padding and texts sorted by length, the
//!   forward direction runs only as many steps as the batch's longest text
//!   has words; the backward one still runs all `maxlen` (the padding comes
//!   after the words there, so its state depends on them).
//!
//! The gate columns are reordered at load from Keras's `i, f, c, o` to
//! `i, f, o, c` with the cell candidate's columns doubled, so that one sigmoid
//! over all four gives the three gates and, as `2 * sigmoid(2x) - 1`, the
//! candidate's tanh (see [`tanh_from_sigmoid`]).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};

use super::{ToxicityError, LABELS};

/// The `format` value `scripts/convert-toxicity.py` writes into the header.
pub const WEIGHTS_FORMAT: &str = "sagert-toxicity-bilstm/1";

/// Weights ready for [`BiLstm::forward`].
#[derive(Debug)]
pub(crate) struct BiLstm {
    /// [2 * vocab, 4 * units]: rows `0..vocab` are the forward direction's
    /// `embedding @ kernel + bias`, rows `vocab..` the backward one's; gate
    /// columns `i, f, o, 2c`.
    input_table: Tensor,
    /// [2, units, 4 * units]: forward, backward; gate columns `i, f, o, 2c`.
    recurrent: Tensor,
    dense_w: Tensor,
    dense_b: Tensor,
    out_w: Tensor,
    out_b: Tensor,
    vocab: usize,
    units: usize,
    /// `pad_states[k]`: both directions' state after `k` padding ids, `[2, 1, units]`.
    pad_states: Vec<State>,
}

fn weights_err(path: &Path, reason: impl Into<String>) -> ToxicityError {
    ToxicityError::Weights { path: path.to_owned(), reason: reason.into() }
}

fn candle_err(stage: &'static str) -> impl FnOnce(candle_core::Error) -> ToxicityError {
    move |source| ToxicityError::Candle { stage, source }
}

/// Reads the `__metadata__` of a safetensors file's header.
fn header_metadata(bytes: &[u8], path: &Path) -> Result<HashMap<String, String>, ToxicityError> {
    let len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .filter(|&n| bytes.len() >= 8 + n)
        .ok_or_else(|| weights_err(path, "not a safetensors file (truncated header)"))?;
    #[derive(serde::Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__", default)]
        metadata: HashMap<String, String>,
    }
    let header: Header = serde_json::from_slice(&bytes[8..8 + len])
        .map_err(|e| weights_err(path, format!("not a safetensors header: {e}")))?;
    Ok(header.metadata)
}

/// Keras gate columns `i, f, c, o` of `w` (last dim `4 * units`) to
/// `i, f, o, 2c`: reordered, and the cell candidate's doubled (exactly), so
/// that `2 * sigmoid(column) - 1` is its tanh.
fn reorder_gates(w: &Tensor, units: usize) -> candle_core::Result<Tensor> {
    let last = w.rank() - 1;
    let gate = |g: usize| w.narrow(last, g * units, units);
    Tensor::cat(&[gate(0)?, gate(1)?, gate(3)?, (gate(2)? * 2.0)?], last)
}

/// `tanh(x)` from `sigmoid(2x)`: `2 * sigmoid(2x) - 1`. candle's sigmoid is
/// about three times as fast as its tanh on the CPU, and tanh was a quarter of
/// the forward pass; the absolute error stays below 1e-7.
fn tanh_from_sigmoid(sigmoid_2x: &Tensor) -> candle_core::Result<Tensor> {
    sigmoid_2x.affine(2.0, -1.0)
}

impl BiLstm {
    /// Loads `toxicity.safetensors` and checks names, shapes and metadata.
    pub(crate) fn load(path: &Path) -> Result<Self, ToxicityError> {
        let bytes =
            std::fs::read(path).map_err(|source| ToxicityError::Io { path: path.to_owned(), source })?;
        let metadata = header_metadata(&bytes, path)?;
        match metadata.get("format") {
            Some(f) if f == WEIGHTS_FORMAT => {}
            other => {
                return Err(weights_err(
                    path,
                    format!("metadata format is {other:?}, expected {WEIGHTS_FORMAT:?} (convert with scripts/convert-toxicity.py)"),
                ))
            }
        }
        if let Some(labels) = metadata.get("labels") {
            if labels.split(',').ne(LABELS.iter().copied()) {
                return Err(weights_err(
                    path,
                    format!("labels are {labels:?}, expected {}", LABELS.join(",")),
                ));
            }
        }
        if metadata.get("lstm_gate_order").is_some_and(|g| g != "i,f,c,o") {
            return Err(weights_err(path, "lstm_gate_order is not i,f,c,o"));
        }
        let mut tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| weights_err(path, e.to_string()))?;
        let mut take = |name: &str| -> Result<Tensor, ToxicityError> {
            let t = tensors.remove(name).ok_or_else(|| weights_err(path, format!("no tensor {name}")))?;
            t.to_dtype(DType::F32).map_err(candle_err("weights to f32"))
        };
        let embedding = take("embedding.weight")?;
        let (vocab, dim) =
            embedding.dims2().map_err(|e| weights_err(path, format!("embedding.weight: {e}")))?;
        let fk = take("lstm.forward.kernel")?;
        let units = fk.dims().last().copied().unwrap_or(0) / 4;
        let directions = [
            (fk, take("lstm.forward.recurrent_kernel")?, take("lstm.forward.bias")?),
            (
                take("lstm.backward.kernel")?,
                take("lstm.backward.recurrent_kernel")?,
                take("lstm.backward.bias")?,
            ),
        ];
        let (dense_w, dense_b) = (take("dense.kernel")?, take("dense.bias")?);
        let (out_w, out_b) = (take("classifier.kernel")?, take("classifier.bias")?);
        let hidden = dense_b.dims().first().copied().unwrap_or(0);

        let mut expect = vec![
            ("dense.kernel".to_owned(), &dense_w, vec![2 * units, hidden]),
            ("dense.bias".to_owned(), &dense_b, vec![hidden]),
            ("classifier.kernel".to_owned(), &out_w, vec![hidden, LABELS.len()]),
            ("classifier.bias".to_owned(), &out_b, vec![LABELS.len()]),
        ];
        for (dir, (k, r, b)) in ["forward", "backward"].into_iter().zip(&directions) {
            expect.push((format!("lstm.{dir}.kernel"), k, vec![dim, 4 * units]));
            expect.push((format!("lstm.{dir}.recurrent_kernel"), r, vec![units, 4 * units]));
            expect.push((format!("lstm.{dir}.bias"), b, vec![4 * units]));
        }
        for (name, t, shape) in &expect {
            if units == 0 || t.dims() != shape.as_slice() {
                return Err(weights_err(
                    path,
                    format!("{name} has shape {:?}, expected {shape:?}", t.dims()),
                ));
            }
        }

        let build = || -> candle_core::Result<Self> {
            // [vocab, dim + 1] @ [dim + 1, 4 units]: the bias rides along as a
            // column of ones, so the table is one matrix product.
            let ones = Tensor::ones((vocab, 1), DType::F32, &Device::Cpu)?;
            let embedding_1 = Tensor::cat(&[&embedding, &ones], 1)?;
            let mut tables = Vec::with_capacity(2);
            let mut recurrents = Vec::with_capacity(2);
            for (k, r, b) in &directions {
                let kb = Tensor::cat(&[reorder_gates(k, units)?, reorder_gates(b, units)?.unsqueeze(0)?], 0)?;
                tables.push(embedding_1.matmul(&kb)?);
                recurrents.push(reorder_gates(r, units)?);
            }
            Ok(BiLstm {
                input_table: Tensor::cat(&tables, 0)?,
                recurrent: Tensor::stack(&recurrents, 0)?,
                dense_w,
                dense_b,
                out_w,
                out_b,
                vocab,
                units,
                pad_states: Vec::new(),
            })
        };
        build().map_err(candle_err("preparing the LSTM weights"))
    }

    /// Rows of the embedding: ids must be below this.
    pub(crate) fn vocab(&self) -> usize {
        self.vocab
    }

    /// Runs both directions over `steps` padding ids from the zero state and
    /// keeps the state after each step, for [`forward`](Self::forward) to
    /// start from instead of recomputing it for every text.
    pub(crate) fn cache_padding(&mut self, steps: usize) -> candle_core::Result<()> {
        let units = self.units;
        let zeros = Tensor::zeros((2, 1, units), DType::F32, &Device::Cpu)?;
        let mut state = State {
            h: zeros.clone(),
            c: zeros,
            max: Tensor::full(f32::NEG_INFINITY, (2, 1, units), &Device::Cpu)?,
        };
        let pad = Tensor::from_vec(vec![0, self.vocab as u32], 2, &Device::Cpu)?;
        let x = self.input_table.index_select(&pad, 0)?.reshape((2, 1, 4 * units))?;
        let mut cache = Vec::with_capacity(steps + 1);
        cache.push(state.clone());
        for _ in 0..steps {
            state = self.step(&state, &x, &self.recurrent)?;
            cache.push(state.clone());
        }
        self.pad_states = cache;
        Ok(())
    }

    /// One time step of one or both directions: `x` is the input projection
    /// `[dirs, batch, 4 units]`, `recurrent` `[dirs, units, 4 units]`.
    fn step(&self, state: &State, x: &Tensor, recurrent: &Tensor) -> candle_core::Result<State> {
        let units = self.units;
        let z = (x + state.h.matmul(recurrent)?)?;
        let s = candle_nn::ops::sigmoid(&z)?;
        let gate = |n: usize| s.narrow(D::Minus1, n * units, units);
        let g = tanh_from_sigmoid(&gate(3)?)?;
        let c = ((gate(1)? * &state.c)? + (gate(0)? * g)?)?;
        let h = (gate(2)? * tanh_from_sigmoid(&candle_nn::ops::sigmoid(&(&c * 2.0)?)?)?)?;
        let max = state.max.maximum(&h)?;
        Ok(State { h, c, max })
    }

    /// Sigmoid scores, one row of [`LABELS`] per sequence. All sequences must
    /// have the same length and ids below [`vocab`](Self::vocab).
    ///
    /// Each direction starts after the padding that every sequence of the
    /// batch has on its side (leading zeros for the forward direction,
    /// trailing ones for the backward), from the state cached for that many
    /// padding steps; the directions run together while both have steps left.
    pub(crate) fn forward(&self, ids: &[Vec<u32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        let batch = ids.len();
        let Some(steps) = ids.first().map(Vec::len) else { return Ok(Vec::new()) };
        let units = self.units;
        let cached = self.pad_states.len().saturating_sub(1);
        let padding = |run: fn(&Vec<u32>) -> usize| ids.iter().map(run).min().unwrap_or(0).min(cached);
        let skip = [
            padding(|row| row.iter().take_while(|&&i| i == 0).count()),
            padding(|row| row.iter().rev().take_while(|&&i| i == 0).count()),
        ];
        let todo = [steps - skip[0], steps - skip[1]];
        let start = |dir: usize| match self.pad_states.get(skip[dir]) {
            Some(pad) => pad.select(dir)?.broadcast(batch),
            None => State::zeros(batch, units),
        };

        // Steps `from..to` of the given directions, in gather order (step,
        // direction, text): direction 1 reads each sequence reversed, from
        // the second half of the table.
        let run = |state: State, dirs: &[usize], from: usize, to: usize| -> candle_core::Result<State> {
            let mut index = Vec::with_capacity((to - from) * dirs.len() * batch);
            for j in from..to {
                for &dir in dirs {
                    index.extend(ids.iter().map(|row| match dir {
                        0 => row[skip[0] + j],
                        _ => self.vocab as u32 + row[steps - 1 - skip[1] - j],
                    }));
                }
            }
            let n = index.len();
            let x = self.input_table.index_select(&Tensor::from_vec(index, n, &Device::Cpu)?, 0)?;
            let x = x.reshape((to - from, dirs.len(), batch, 4 * units))?;
            let recurrent = match dirs {
                [dir] => self.recurrent.narrow(0, *dir, 1)?,
                _ => self.recurrent.clone(),
            };
            let mut state = state;
            for j in 0..to - from {
                state = self.step(&state, &x.get(j)?, &recurrent)?;
            }
            Ok(state)
        };
        let both = todo[0].min(todo[1]);
        let (mut forward, mut backward) = (start(0)?, start(1)?);
        if both > 0 {
            let state = run(State::cat(&[&forward, &backward])?, &[0, 1], 0, both)?;
            (forward, backward) = (state.select(0)?, state.select(1)?);
        }
        if todo[0] > both {
            forward = run(forward, &[0], both, todo[0])?;
        }
        if todo[1] > both {
            backward = run(backward, &[1], both, todo[1])?;
        }

        // [2, batch, units] -> [batch, forward | backward].
        let pooled = Tensor::cat(&[&forward.max, &backward.max], 0)?;
        let pooled = pooled.transpose(0, 1)?.contiguous()?.reshape((batch, 2 * units))?;
        let hidden = pooled.matmul(&self.dense_w)?.broadcast_add(&self.dense_b)?.relu()?;
        let logits = hidden.matmul(&self.out_w)?.broadcast_add(&self.out_b)?;
        candle_nn::ops::sigmoid(&logits)?.to_vec2()
    }
}

/// The LSTM state of one or both directions for a batch, each
/// `[dirs, batch, units]`: output, cell, and the running max of the outputs.
#[derive(Debug, Clone)]
struct State {
    h: Tensor,
    c: Tensor,
    max: Tensor,
}

impl State {
    fn zeros(batch: usize, units: usize) -> candle_core::Result<Self> {
        let zeros = Tensor::zeros((1, batch, units), DType::F32, &Device::Cpu)?;
        let max = Tensor::full(f32::NEG_INFINITY, (1, batch, units), &Device::Cpu)?;
        Ok(State { h: zeros.clone(), c: zeros, max })
    }

    /// Direction `dir` alone: `[1, batch, units]`.
    fn select(&self, dir: usize) -> candle_core::Result<Self> {
        let pick = |t: &Tensor| t.narrow(0, dir, 1)?.contiguous();
        Ok(State { h: pick(&self.h)?, c: pick(&self.c)?, max: pick(&self.max)? })
    }

    /// A one-text, one-direction state repeated for `batch` texts.
    fn broadcast(&self, batch: usize) -> candle_core::Result<Self> {
        let units = self.h.dim(D::Minus1)?;
        let rep = |t: &Tensor| t.broadcast_as((1, batch, units))?.contiguous();
        Ok(State { h: rep(&self.h)?, c: rep(&self.c)?, max: rep(&self.max)? })
    }

    /// Directions stacked: `[dirs, batch, units]`.
    fn cat(parts: &[&State]) -> candle_core::Result<Self> {
        let cat = |f: fn(&State) -> &Tensor| Tensor::cat(&parts.iter().map(|s| f(s)).collect::<Vec<_>>(), 0);
        Ok(State { h: cat(|s| &s.h)?, c: cat(|s| &s.c)?, max: cat(|s| &s.max)? })
    }
}
