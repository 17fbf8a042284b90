//! File helpers: reading text with clear errors, writing atomically.

use std::io::Write;
use std::path::Path;

use crate::error::EngineError;

/// Read a UTF-8 text file; a non-UTF-8 file is an error naming the line.
pub fn read_text(path: &Path) -> Result<String, EngineError> {
    let bytes = std::fs::read(path).map_err(|source| EngineError::Io {
        op: "cannot read",
        path: path.into(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
        EngineError::Input {
            file: path.display().to_string(),
            line,
            field: "-".into(),
            message: format!("not valid UTF-8 (byte {offset})"),
        }
    })
}

/// Write `bytes` to `path` atomically: a temporary file in the same directory,
/// flushed to disk, then renamed over `path`. A crash leaves either the old file
/// or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    let io = |source| EngineError::Io { op: "cannot write", path: path.into(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/out.jsonl");
        write_atomic(&p, b"one\n").unwrap();
        write_atomic(&p, b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn non_utf8_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.jsonl");
        std::fs::write(&p, b"{\"prompt\":\"a\"}\n{\"prompt\":\"\xff\"}\n").unwrap();
        let err = read_text(&p).unwrap_err().to_string();
        assert!(err.ends_with("in.jsonl:2: -: not valid UTF-8 (byte 26)"), "{err}");
    }
}
