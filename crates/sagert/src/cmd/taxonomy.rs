//! `sagert taxonomy show|validate|stats|map`

use std::path::Path;
use std::process::ExitCode;

use sagert_taxonomy::{render_mapping, render_stats, render_tree, MappingTarget, Taxonomy};

use crate::cli::TaxonomyCommand;

fn load(file: Option<&Path>) -> anyhow::Result<Taxonomy> {
    Ok(match file {
        Some(p) => Taxonomy::from_path(p)?,
        None => Taxonomy::builtin(),
    })
}

pub(crate) fn run(command: TaxonomyCommand) -> anyhow::Result<ExitCode> {
    match command {
        TaxonomyCommand::Show { prefix, file, descriptions, json } => {
            let tax = load(file.as_deref())?;
            let prefix = prefix.unwrap_or_default();
            if json {
                let leaves: Vec<serde_json::Value> = tax
                    .select(&prefix)?
                    .iter()
                    .map(|l| {
                        serde_json::json!({
                            "path": l.path(),
                            "macro": l.macro_cat.id,
                            "micro": l.micro.id,
                            "alert": l.micro.alert_label(&l.macro_cat.id),
                            "leaf": l.leaf.id,
                            "name": l.leaf.name,
                            "description": l.leaf.description,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&leaves)?);
            } else {
                print!("{}", render_tree(&tax, &prefix, descriptions)?);
            }
        }
        TaxonomyCommand::Validate { file } => {
            let tax = Taxonomy::from_path(&file)?;
            let s = tax.stats();
            println!(
                "{}: ok ({} macro, {} micro, {} leaf categories)",
                file.display(),
                s.macros,
                s.micros,
                s.leaves
            );
        }
        TaxonomyCommand::Stats { file, json } => {
            let tax = load(file.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tax.stats())?);
            } else {
                print!("{}", render_stats(&tax));
            }
        }
        TaxonomyCommand::Map { to, file, json } => {
            let tax = load(file.as_deref())?;
            let target: MappingTarget = to.parse()?;
            if json {
                let rows: Vec<serde_json::Value> = tax
                    .mapping(target)
                    .into_iter()
                    .map(|(path, alert, targets)| serde_json::json!({"path": path, "alert": alert, "targets": targets}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", render_mapping(&tax, target));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
