//! `sagert status RUN_DIR`

use std::process::ExitCode;

use anyhow::Context;
use sagert_engine::status::{render_status, run_status};
use sagert_pipeline::report::{RunReport, REPORT_META_KEY};
use sagert_store::Store;

use crate::cli::StatusArgs;

pub(crate) fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open_existing(&args.run_dir)?;
    let status = run_status(&store)?;
    // The last `sagert generate` report, when the run directory has one.
    let report: Option<RunReport> = store
        .meta(REPORT_META_KEY)?
        .map(|json| serde_json::from_str(&json))
        .transpose()
        .with_context(|| format!("{}: unreadable generation report", args.run_dir.display()))?;
    if args.json {
        let mut value = serde_json::to_value(&status)?;
        if let (Some(r), Some(map)) = (&report, value.as_object_mut()) {
            map.insert("generate".into(), serde_json::to_value(r)?);
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", render_status(&status));
        if let Some(r) = &report {
            print!("\n{}", r.to_markdown());
        }
    }
    Ok(ExitCode::SUCCESS)
}
