//! Precedence, resolved in one place: command-line flags over environment
//! variables over the file over built-in defaults.

use std::path::{Path, PathBuf};

use crate::env;
use crate::error::ConfigError;
use crate::model::RunConfig;
use crate::parse::{read_file, LoadedConfig};

/// Values that may be set outside the file. A `None` leaves the value below it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// `run.output_dir`
    pub output_dir: Option<PathBuf>,
    /// `run.seed`
    pub seed: Option<u64>,
    /// `budget.max_requests`
    pub max_requests: Option<u64>,
    /// `budget.max_tokens`
    pub max_tokens: Option<u64>,
    /// `budget.max_cost_usd`
    pub max_cost_usd: Option<f64>,
}

impl Overrides {
    /// Read the override variables of [`crate::env`] through `lookup`
    /// (`|k| std::env::var(k).ok()` in the binary; a map in tests).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Overrides, ConfigError> {
        fn parsed<T: std::str::FromStr>(
            lookup: &impl Fn(&str) -> Option<String>,
            var: &'static str,
            expected: &'static str,
        ) -> Result<Option<T>, ConfigError> {
            match lookup(var) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => {
                    v.trim().parse().map(Some).map_err(|_| ConfigError::Env { var, value: v, expected })
                }
            }
        }
        let max_cost_usd: Option<f64> = parsed(&lookup, env::MAX_COST_USD, "a non-negative number")?;
        if let Some(c) = max_cost_usd {
            if !(c.is_finite() && c >= 0.0) {
                return Err(ConfigError::Env {
                    var: env::MAX_COST_USD,
                    value: c.to_string(),
                    expected: "a non-negative number",
                });
            }
        }
        Ok(Overrides {
            output_dir: lookup(env::OUTPUT_DIR).filter(|v| !v.trim().is_empty()).map(PathBuf::from),
            seed: parsed(&lookup, env::SEED, "an unsigned integer")?,
            max_requests: parsed(&lookup, env::MAX_REQUESTS, "an unsigned integer")?,
            max_tokens: parsed(&lookup, env::MAX_TOKENS, "an unsigned integer")?,
            max_cost_usd,
        })
    }

    /// Apply every value that is set.
    fn apply(&self, config: &mut RunConfig) {
        if let Some(v) = &self.output_dir {
            config.run.output_dir = v.clone();
        }
        if let Some(v) = self.seed {
            config.run.seed = v;
        }
        if let Some(v) = self.max_requests {
            config.budget.max_requests = Some(v);
        }
        if let Some(v) = self.max_tokens {
            config.budget.max_tokens = Some(v);
        }
        if let Some(v) = self.max_cost_usd {
            config.budget.max_cost_usd = Some(v);
        }
    }
}

/// The one place precedence is decided: `cli` over `env` over `file`
/// (which already holds the defaults for everything it leaves out).
pub fn resolve(mut file: RunConfig, env: &Overrides, cli: &Overrides) -> RunConfig {
    env.apply(&mut file);
    cli.apply(&mut file);
    file
}

/// Load a run's configuration: the file if one is given (defaults otherwise),
/// then the environment, then the command line.
pub fn load(
    path: Option<&Path>,
    env_lookup: impl Fn(&str) -> Option<String>,
    cli: &Overrides,
) -> Result<LoadedConfig, ConfigError> {
    let (file_config, source, file) = match path {
        Some(p) => {
            let (c, s) = read_file(p)?;
            (c, s, p.display().to_string())
        }
        None => (RunConfig::default(), String::new(), "<defaults>".to_string()),
    };
    let env = Overrides::from_env(env_lookup)?;
    Ok(LoadedConfig { config: resolve(file_config, &env, cli), file, source })
}
