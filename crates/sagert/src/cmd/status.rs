//! `sagert status RUN_DIR`

use std::process::ExitCode;

use sagert_engine::status::{render_status, run_status};
use sagert_store::Store;

use crate::cli::StatusArgs;

pub(crate) fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open_existing(&args.run_dir)?;
    let status = run_status(&store)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render_status(&status));
    }
    Ok(ExitCode::SUCCESS)
}
