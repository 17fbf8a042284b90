//! `sagert generate`

use std::process::ExitCode;

use anyhow::bail;
use sagert_engine::estimate::{estimate, render_estimate};
use sagert_engine::Prices;

use crate::cli::GenerateArgs;
use crate::cmd::{load_config, selected_taxonomy};

pub(crate) fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let loaded = load_config(&args.config, &args.overrides.overrides())?;
    let (_, leaves) = selected_taxonomy(&loaded)?;
    if !args.dry_run {
        bail!(
            "the generation pipeline is not part of this version yet; \
             `sagert generate --dry-run` estimates what a configuration would cost"
        );
    }
    let e = estimate(&loaded.config, leaves as u64, &Prices(loaded.config.prices.clone()));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{}", render_estimate(&e));
    }
    Ok(ExitCode::SUCCESS)
}
