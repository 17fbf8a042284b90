//! For tests that need a fetched model: find it in the cache, or say why the
//! test skips. Under `CI=true` a missing model is a failure instead, because CI
//! fetches every model (`scripts/fetch-models`) before it runs the tests.

use std::path::PathBuf;

use crate::{known, ModelCache};

/// The cached path of `file` of known model `model` (`SAGERT_CACHE_DIR` or
/// `~/.cache/sagert`), whether or not it is there.
pub fn cached_path(model: &str, file: &str) -> PathBuf {
    let cache_dir = std::env::var_os("SAGERT_CACHE_DIR").map(PathBuf::from);
    ModelCache::default_root(cache_dir).join(model).join(file)
}

/// The path of known model `model`'s main file (its GGUF, its weights), or
/// `None` after printing why `test` skips. Panics under `CI=true` when the
/// file is missing, and for a name sagert does not know.
pub fn model_or_skip(test: &str, model: &str) -> Option<PathBuf> {
    let known = known(model).unwrap_or_else(|| panic!("{test}: `{model}` is not a known model"));
    file_or_skip(test, model, known.main_file())
}

/// Like [`model_or_skip`], for any `file` of the model's cache folder.
pub fn file_or_skip(test: &str, model: &str, file: &str) -> Option<PathBuf> {
    let path = cached_path(model, file);
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {} missing and CI=true; CI must run scripts/fetch-models", path.display());
    }
    eprintln!("skipped {test}: {} missing; run scripts/fetch-models", path.display());
    None
}
