//! Preference alignment on candle: `sagert align`'s library.
//!
//! The layers, bottom up (as candle layers its own training code):
//!
//! - [`model`] and [`lora`]: a llama-family causal LM built only from
//!   differentiable ops (candle-transformers' llama uses fused kernels without a
//!   backward pass, which silently cut the graph), with LoRA adapters on the
//!   attention and MLP projections over a frozen base, or every weight trained;
//! - [`loss`]: per-sequence log-probabilities and the preference objectives (DPO
//!   with its sigmoid, IPO and hinge variants, SimPO, ORPO), matching TRL;
//! - [`optim`]: AdamW with checkpointable state, warmup schedules, gradient
//!   clipping and accumulation;
//! - [`data`]: TRL preference data (and sagert's dataset directories) rendered
//!   with the model's own chat template, tokenized, truncated, masked,
//!   sampled (stratified, nested) and batched;
//! - [`train`](mod@train): the loop, with [`refs`] (reference log-probabilities cached in
//!   the run store), [`checkpoint`] (atomic, resumable), [`report`] (metrics,
//!   SVG curves, manifest) and [`export`] (PEFT adapter, merged transformers
//!   directory, GGUF);
//! - [`sweep`]: runs and (dataset × size) grids; [`config`]: `align.toml`;
//!   [`base`]: the base model as a transformers directory.

pub mod base;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod export;
pub mod lora;
pub mod loss;
pub mod model;
pub mod optim;
pub mod plot;
pub mod refs;
pub mod report;
pub mod sweep;
pub mod train;

pub use config::AlignConfig;
pub use error::{AlignError, Result};
pub use sweep::{jobs, Plan};
pub use train::{train, Progress, TrainJob, TrainSummary};
