//! `sagert config check|example`

use std::process::ExitCode;

use sagert_config::Overrides;

use crate::cli::ConfigCommand;
use crate::cmd::{load_config, selected_taxonomy};

pub(crate) fn run(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Example => {
            print!("{}", sagert_config::EXAMPLE);
        }
        ConfigCommand::Check { file } => {
            let loaded = load_config(&file, &Overrides::default())?;
            let (_, leaves) = selected_taxonomy(&loaded)?;
            let c = &loaded.config;
            let roles: Vec<&str> = c.roles.iter().map(|(r, _)| r.as_str()).collect();
            println!(
                "{}: ok ({} endpoint(s), roles: {}, {} leaves selected, output {})",
                loaded.file,
                c.endpoints.len(),
                if roles.is_empty() { "none".to_string() } else { roles.join(", ") },
                leaves,
                c.run.output_dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
