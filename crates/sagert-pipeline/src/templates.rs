//! Prompt templates: minijinja files, built in and overridable per run.
//!
//! Each stage renders its prompts from a named template (`expand.j2`,
//! `extract.j2`, ...). The built-in ones live in `crates/sagert-pipeline/templates/`
//! and are compiled in; `[templates] dir` in the run configuration names a
//! directory whose files of the same names replace them. Undefined variables are
//! errors, so a typo in an override fails on the first render instead of
//! silently producing an empty prompt. Every template's SHA-256 goes into the
//! dataset manifest.

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::PipelineError;

/// The built-in templates, by file name.
pub const BUILTIN: [(&str, &str); 9] = [
    ("expand.j2", include_str!("../templates/expand.j2")),
    ("seed_instructions.j2", include_str!("../templates/seed_instructions.j2")),
    ("raw_text.j2", include_str!("../templates/raw_text.j2")),
    ("extract.j2", include_str!("../templates/extract.j2")),
    ("diversify.j2", include_str!("../templates/diversify.j2")),
    ("chosen_system.j2", include_str!("../templates/chosen_system.j2")),
    ("rejected_system.j2", include_str!("../templates/rejected_system.j2")),
    ("judge_pair.j2", include_str!("../templates/judge_pair.j2")),
    ("judge_response.j2", include_str!("../templates/judge_response.j2")),
];

/// The run's templates: the built-in ones with any overrides applied.
pub struct Templates {
    env: Environment<'static>,
    sources: BTreeMap<String, String>,
    overridden: Vec<String>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("names", &self.sources.keys())
            .field("overridden", &self.overridden)
            .finish()
    }
}

impl Templates {
    /// The built-in templates.
    pub fn builtin() -> Result<Templates, PipelineError> {
        Templates::with_overrides(None)
    }

    /// The built-in templates, with the files of `dir` that share their names
    /// replacing them. A file in `dir` that names no template is an error (a
    /// misspelt override would otherwise be ignored).
    pub fn with_overrides(dir: Option<&Path>) -> Result<Templates, PipelineError> {
        let mut sources: BTreeMap<String, String> =
            BUILTIN.iter().map(|(n, s)| (n.to_string(), s.to_string())).collect();
        let mut overridden = Vec::new();
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir).map_err(PipelineError::io("cannot read", dir))?;
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry.map_err(PipelineError::io("cannot read", dir))?;
                if entry.path().is_file() {
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
            names.sort();
            for name in names {
                let path = dir.join(&name);
                if !sources.contains_key(&name) {
                    return Err(PipelineError::Template {
                        name: path.display().to_string(),
                        message: format!(
                            "names no template; the templates are: {}",
                            BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
                let bytes = std::fs::read(&path).map_err(PipelineError::io("cannot read", &path))?;
                let text = String::from_utf8(bytes).map_err(|e| PipelineError::Template {
                    name: path.display().to_string(),
                    message: format!("not valid UTF-8 (byte {})", e.utf8_error().valid_up_to()),
                })?;
                sources.insert(name.clone(), text);
                overridden.push(name);
            }
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, source) in &sources {
            env.add_template_owned(name.clone(), source.clone())
                .map_err(|e| PipelineError::Template { name: name.clone(), message: describe(&e) })?;
        }
        Ok(Templates { env, sources, overridden })
    }

    /// Render template `name` with `ctx`; the result is trimmed.
    pub fn render<S: Serialize>(&self, name: &str, ctx: S) -> Result<String, PipelineError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|e| PipelineError::Template { name: name.to_string(), message: describe(&e) })?;
        let text = template
            .render(minijinja::value::Serde(ctx))
            .map_err(|e| PipelineError::Template { name: name.to_string(), message: describe(&e) })?;
        Ok(text.trim().to_string())
    }

    /// SHA-256 (hex) of each template's source, by name.
    pub fn hashes(&self) -> BTreeMap<String, String> {
        self.sources.iter().map(|(n, s)| (n.clone(), hex::encode(Sha256::digest(s.as_bytes())))).collect()
    }

    /// The names that an override replaced.
    pub fn overridden(&self) -> &[String] {
        &self.overridden
    }

    /// Write the built-in templates into `dir` (for `--print-templates`), to
    /// start an override from.
    pub fn write_builtin(dir: &Path) -> Result<Vec<std::path::PathBuf>, PipelineError> {
        let mut out = Vec::new();
        for (name, source) in BUILTIN {
            let path = dir.join(name);
            sagert_engine::io::write_atomic(&path, source.as_bytes())?;
            out.push(path);
        }
        Ok(out)
    }
}

/// A minijinja error with its line and the chain of causes.
fn describe(e: &minijinja::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_templates_parse_and_hash() {
        let t = Templates::builtin().unwrap();
        let hashes = t.hashes();
        assert_eq!(hashes.len(), BUILTIN.len());
        assert!(hashes.values().all(|h| h.len() == 64));
    }

    #[test]
    fn undefined_variables_are_errors() {
        let t = Templates::builtin().unwrap();
        let err = t.render("expand.j2", serde_json::json!({"n": 3})).unwrap_err().to_string();
        assert!(err.contains("expand.j2"), "{err}");
    }

    #[test]
    fn overrides_replace_by_name_and_reject_unknown_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rejected_system.j2"), "Answer {{ style }}.").unwrap();
        let t = Templates::with_overrides(Some(dir.path())).unwrap();
        assert_eq!(t.overridden(), ["rejected_system.j2"]);
        assert_eq!(
            t.render("rejected_system.j2", serde_json::json!({"style": "briefly"})).unwrap(),
            "Answer briefly."
        );
        assert_ne!(
            t.hashes()["rejected_system.j2"],
            Templates::builtin().unwrap().hashes()["rejected_system.j2"]
        );

        std::fs::write(dir.path().join("expnd.j2"), "x").unwrap();
        let err = Templates::with_overrides(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("expnd.j2") && err.contains("names no template"), "{err}");
    }

    #[test]
    fn a_broken_override_names_the_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("extract.j2"), "{% for x in %}").unwrap();
        let err = Templates::with_overrides(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("extract.j2"), "{err}");
    }
}
