//! Runs model calls for a sagert run.
//!
//! - [`RoleClient`]: the cached, metered client of one role. Every call is
//!   keyed by content hash in the run's store (`sagert-store`), so a repeated
//!   call is free and a killed run loses nothing that was paid for.
//! - [`Ledger`]: hard budgets (requests, tokens, cost) and cost accounting from
//!   the configured prices, for every backend alike.
//! - [`batch`]: a resumable batch of prompts through one role (`sagert batch`).
//! - [`estimate`]: what a generation configuration implies, before any call
//!   (`sagert generate --dry-run`).
//! - [`status`]: the run report of `sagert status`.
//!
//! The engine knows backends only through `sagert-backend`'s traits: it does
//! not know HTTP, and it does not build backends (the `sagert` binary does).

pub mod batch;
mod client;
mod error;
pub mod estimate;
pub mod io;
mod ledger;
pub mod status;

pub use client::{CallOutcome, RoleClient};
pub use error::EngineError;
pub use ledger::{Ledger, Prices, Reservation, Spent, DEFAULT_MAX_TOKENS};
