//! Small encoders on candle, for the offline parts of sagert:
//!
//! - [`embed`]: the all-MiniLM-L6-v2 sentence embedder (BERT, mean pooling,
//!   L2 normalisation), for semantic dedup, diversity metrics and the offline
//!   safety classifier.
//! - [`toxicity`]: the Jigsaw toxicity scorer, a BiLSTM ported from Keras.
//! - [`safety`]: the offline safety classifier, refusal and harm heads over
//!   the MiniLM embeddings, trained on PyRIT's human-labelled data.
//!
//! All run on the CPU by default with an explicit thread count (candle's pool
//! spins: more threads than cores slows it down many times over).

pub mod embed;
pub mod safety;
pub mod toxicity;
