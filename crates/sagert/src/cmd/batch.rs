//! `sagert batch`: a JSONL file of prompts through one role.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use sagert_backend::{JsonSchema, ModelRole};
use sagert_engine::batch::{read_batch_input, run_batch, write_batch_output, BatchOptions};
use sagert_engine::io::read_text;
use sagert_store::Store;

use crate::backends::{ledger, role_client, role_concurrency};
use crate::cli::BatchArgs;
use crate::cmd::{block_on, load_config};
use crate::exit;

pub(crate) fn run(args: BatchArgs) -> anyhow::Result<ExitCode> {
    let loaded = load_config(&args.config, &args.overrides.overrides())?;
    let config = &loaded.config;
    let role: ModelRole = args.role.parse()?;
    let inputs = read_batch_input(&args.input)?;
    let schema = match &args.schema {
        Some(path) => {
            let text = read_text(path)?;
            let schema: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a JSON schema", path.display()))?;
            let name =
                path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "output".into());
            Some(JsonSchema { name, schema })
        }
        None => None,
    };
    let run_dir = config.run.output_dir.clone();
    let output = args.output.clone().unwrap_or_else(|| run_dir.join("batch.jsonl"));

    let store = Arc::new(Store::open(&run_dir)?);
    let ledger = ledger(config, &store)?;
    let client = role_client(config, role, store.clone(), ledger.clone())?;
    let options = BatchOptions {
        concurrency: args.concurrency.unwrap_or_else(|| role_concurrency(config, role)),
        schema,
        progress: !args.json,
    };
    let summary = block_on(run_batch(client, store.clone(), &inputs, &options))??;
    write_batch_output(&store, &inputs, &output)?;

    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        let spent = ledger.spent();
        eprintln!(
            "batch: {} of {} done ({} from earlier sessions, {} cache hits), {} failed, {} not run; \
             {} requests, {} tokens, ${:.4} spent in this run directory",
            summary.done,
            summary.total,
            summary.resumed,
            summary.cache_hits,
            summary.failed,
            summary.not_run,
            spent.requests,
            spent.tokens,
            spent.cost_usd
        );
        if let Some(reason) = &summary.stopped_by_budget {
            eprintln!(
                "batch: stopped by the budget: {reason}; run the same command with a larger budget to go on"
            );
        }
        eprintln!("batch: wrote {}", output.display());
    }
    Ok(ExitCode::from(if summary.stopped_by_budget.is_some() {
        exit::BUDGET
    } else if summary.failed > 0 {
        exit::SOME_FAILED
    } else {
        exit::OK
    }))
}
