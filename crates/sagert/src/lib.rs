//! The commands of the `sagert` binary.
//!
//! `main` parses nothing itself: it calls [`run`], which parses the command line
//! with clap, runs one command and returns its exit code (see [`exit`]). The
//! commands are thin: configuration comes from `sagert-config`, the taxonomy
//! from `sagert-taxonomy`, the run's calls go through `sagert-engine`, and the
//! only place that knows every backend is [`backends`].

pub mod backends;
mod cli;
mod cmd;

use std::process::ExitCode;

use clap::Parser;

pub use cli::Cli;

/// Exit codes.
pub mod exit {
    /// Everything succeeded.
    pub const OK: u8 = 0;
    /// The command ran, but some items failed (the summary says how many).
    pub const SOME_FAILED: u8 = 1;
    /// Bad input, bad configuration, or another error: nothing useful was done.
    pub const ERROR: u8 = 2;
    /// A budget stopped the run cleanly; everything so far is saved.
    pub const BUDGET: u8 = 3;
}

/// Parse the command line and run the command.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    cmd::dispatch(cli)
}
