//! `sagert import`: public safety datasets into sagert's formats.

use std::process::ExitCode;

use sagert_eval::import::{self, ImportKind, ImportOptions};
use sagert_taxonomy::Taxonomy;

use crate::cli::ImportArgs;

/// `sagert import KIND PATH --out DIR`
pub(crate) fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let kind: ImportKind = args.kind.parse()?;
    let taxonomy = match &args.taxonomy {
        Some(p) => Taxonomy::from_path(p)?,
        None => Taxonomy::builtin(),
    };
    let mut opts = ImportOptions::new(taxonomy);
    opts.split = args.split.clone();
    opts.only_one_safe = args.only_one_safe;
    opts.subset = args.subset.clone();
    opts.limit = args.limit;
    if let Some(fields) = &args.fields {
        opts.field_map = fields.parse()?;
    }
    let summary = import::import(kind, &args.path, &args.out, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{}", summary.render());
    }
    Ok(ExitCode::SUCCESS)
}
