//! The SAGE generation pipeline (`sagert generate`).
//!
//! A harm taxonomy becomes a validated, deduplicated and balanced preference
//! dataset and a red-team prompt set, through the stages of the SAGE process:
//! expand → seed instructions → raw text → query extraction → diversification
//! → responses → validation → dedup → balance → export. Model calls go through
//! `sagert-engine`'s cached, metered `RoleClient`s; work-item state lives in the
//! run's `sagert-store`, so a killed run resumes where it stopped.

pub mod assemble;
pub mod catalog;
pub mod dedup;
mod error;
pub mod export;
pub mod generate;
pub mod judge;
pub mod metrics;
pub mod progress;
pub mod record;
pub mod report;
pub mod run;
pub mod stages;
pub mod templates;

pub use error::PipelineError;
