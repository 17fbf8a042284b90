//! The base model as a transformers directory: used as is, or dequantised once
//! from a GGUF file into a cache keyed by the file's contents.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{AlignError, Result};

/// The transformers directory of the model at `path`: `path` itself when it is
/// one, else (a `.gguf` file) its f32 conversion under `cache_dir`, made on
/// first use. `on_convert` is called before a conversion starts.
pub fn prepare(path: &Path, cache_dir: &Path, on_convert: impl FnOnce(&Path)) -> Result<PathBuf> {
    if sagert_convert::is_hf_model_dir(path) {
        return Ok(path.to_path_buf());
    }
    if !path.is_file() {
        return Err(AlignError::Model {
            path: path.into(),
            message: "not a .gguf file or a transformers directory (with config.json)".into(),
        });
    }
    let key = file_key(path)?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let out = cache_dir.join(format!("{stem}-{}-f32", &key[..16]));
    if sagert_convert::is_hf_model_dir(&out) {
        return Ok(out);
    }
    on_convert(&out);
    fs::create_dir_all(cache_dir).map_err(AlignError::io(cache_dir))?;
    let tmp = cache_dir.join(format!(".{stem}-{}.tmp-{}", &key[..16], std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(AlignError::io(&tmp))?;
    }
    sagert_convert::gguf_to_hf(path, &tmp, sagert_convert::HfDtype::F32, &Default::default())?;
    match fs::rename(&tmp, &out) {
        Ok(()) => Ok(out),
        // Another process converted it first.
        Err(_) if sagert_convert::is_hf_model_dir(&out) => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(out)
        }
        Err(e) => Err(AlignError::Io { path: out, source: e }),
    }
}

/// SHA-256 of a file's bytes, hex.
fn file_key(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(AlignError::io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(AlignError::io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}
