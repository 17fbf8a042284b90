//! The `sagert` binary: parse arguments, run, map errors to exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    match sagert::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(sagert::exit::ERROR)
        }
    }
}
