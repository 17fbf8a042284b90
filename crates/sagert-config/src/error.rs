use std::path::PathBuf;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid UTF-8.
    #[error("{path}: not valid UTF-8 at byte {offset}")]
    Utf8 {
        /// The file.
        path: PathBuf,
        /// First bad byte.
        offset: usize,
    },
    /// TOML syntax, an unknown key or a value of the wrong type.
    #[error("{file}:{line}: {key}: {message}")]
    Parse {
        /// The file name.
        file: String,
        /// 1-based line, 0 when unknown.
        line: usize,
        /// The key's dotted path (`roles.judge.temprature`), or `-` for syntax errors.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Values that parse but do not make sense together.
    #[error("{file}: invalid configuration:\n{}", format_problems(.problems))]
    Invalid {
        /// The file name.
        file: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// An environment variable that overrides a value does not parse.
    #[error("environment variable {var}: cannot parse `{value}` as {expected}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
}

/// One problem of an [`ConfigError::Invalid`] configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the key, 0 when unknown.
    pub line: usize,
    /// The key's dotted path.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| {
            if p.line > 0 {
                format!("  line {}: {}: {}", p.line, p.key, p.message)
            } else {
                format!("  {}: {}", p.key, p.message)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
