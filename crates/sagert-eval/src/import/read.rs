//! Reading an importer's input: files in any of the supported formats into
//! rows (JSON objects with their file and line).
//!
//! Formats, by extension (ASCII case ignored):
//!
//! | extension | read as | `line` of a row |
//! | --- | --- | --- |
//! | `.jsonl`, `.json` | JSON Lines, one object a line; blank lines skipped | the 1-based line |
//! | `.jsonl.gz`, `.json.gz` | the same, gzip-compressed | the line after decompression |
//! | `.parquet` | rows through `sagert_pipeline::export::read_parquet_rows` | the 1-based row |
//! | `.csv` | RFC 4180 CSV with a header row; every value a string | the line the record starts on (header = 1, after any comment lines) |
//! | `.yaml`, `.yml`, `.prompt` | a PyRIT seed file (below) | the line of the seed's `- ` |
//!
//! A CSV file may start with comment lines beginning with `#` (PyRIT's
//! `# dataset_version=1.0, harm_definition=...`); they are skipped but counted
//! in line numbers. A `#` further down is data (a Markdown heading inside a
//! quoted multi-line response, say).
//!
//! A PyRIT seed file is a YAML mapping with a `seeds` list (older PyRIT: `prompts`)
//! of mappings with a `value`. Each seed becomes one row with its own keys;
//! `harm_categories` and `data_type` fall back to the file's top-level ones, and
//! `harm_categories` is always a list (PyRIT allows one string). The file's
//! `dataset_name` is added to every row as `dataset_name` when the seed has none.
//!
//! A directory is searched for the split's files: `SPLIT.EXT`, then
//! `data/SPLIT.EXT`, then `*/SPLIT.EXT` and `data/*/SPLIT.EXT` (all of them,
//! sorted: PKU-SafeRLHF keeps one file per generating model), then Hugging Face's
//! Parquet shards `SPLIT-*.parquet` and `data/SPLIT-*.parquet`. The first of
//! these patterns that matches anything gives the files, read in order.
//! For `pyrit-harm` (PyRIT's harm files) a directory gives every `*.csv` file
//! in it instead, sorted by name, and the files' columns may differ.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::jsonl::{self, kind, utf8_message};
use crate::{EvalError, Result};

/// The formats an input file can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Jsonl,
    JsonlGz,
    Parquet,
    Csv,
    Yaml,
}

/// Extensions tried in a directory, in order of preference.
const DIR_EXTENSIONS: [&str; 6] = ["jsonl", "jsonl.gz", "json", "json.gz", "parquet", "csv"];

impl Format {
    pub(crate) fn of(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let format = if name.ends_with(".jsonl.gz") || name.ends_with(".json.gz") {
            Format::JsonlGz
        } else if name.ends_with(".jsonl") || name.ends_with(".json") {
            Format::Jsonl
        } else if name.ends_with(".parquet") {
            Format::Parquet
        } else if name.ends_with(".csv") {
            Format::Csv
        } else if name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".prompt") {
            Format::Yaml
        } else {
            return None;
        };
        Some(format)
    }
}

/// Which files of a directory input are read (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout<'a> {
    /// The files of this split.
    Split(&'a str),
    /// Every `*.csv` file directly in the directory, sorted by name.
    AllCsv,
}

/// One input record: a JSON object with the place it came from.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// The file it was read from.
    pub file: Arc<Path>,
    /// Its 1-based line (row for Parquet); see the module docs.
    pub line: usize,
    /// Its fields.
    pub fields: Map<String, Value>,
}

/// One file read, for the manifest.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct InputFile {
    /// The path.
    pub path: PathBuf,
    /// The hex SHA-256 of its bytes (compressed bytes for `.gz`).
    pub sha256: String,
    /// Records read from it.
    pub records: usize,
    /// Its columns (CSV and Parquet), as [`Input::columns`] has the first file's.
    #[serde(skip)]
    pub columns: Option<Vec<String>>,
}

/// Everything read from an input.
#[derive(Debug)]
pub(crate) struct Input {
    /// The files, in reading order.
    pub files: Vec<InputFile>,
    /// The format of the (first) file.
    pub format: Format,
    /// The columns of a CSV or Parquet file (header / schema order); `None` for
    /// JSON and YAML, whose rows may differ in their keys.
    pub columns: Option<Vec<String>>,
    /// The records, in file and line order.
    pub rows: Vec<Row>,
}

/// Read every record of `input` (a file, or a directory read as `layout` says).
pub(crate) fn read_input(input: &Path, layout: Layout<'_>) -> Result<Input> {
    let files = if input.is_dir() {
        match layout {
            Layout::Split(split) => locate(input, split)?,
            Layout::AllCsv => all_csv(input)?,
        }
    } else if input.is_file() {
        vec![input.to_path_buf()]
    } else {
        return Err(file_error(input, "no such file or directory"));
    };
    let mut out: Option<Input> = None;
    for path in files {
        let format = Format::of(&path).ok_or_else(|| {
            file_error(
                &path,
                "unknown format: expected .jsonl, .jsonl.gz, .json, .parquet, .csv, or a PyRIT \
                 seed file (.yaml, .yml, .prompt)",
            )
        })?;
        let bytes = std::fs::read(&path).map_err(EvalError::io(&path))?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let file: Arc<Path> = Arc::from(path.as_path());
        let (columns, rows) = match format {
            Format::Jsonl => (None, read_jsonl(&file, &bytes)?),
            Format::JsonlGz => (None, read_jsonl(&file, &gunzip(&file, &bytes)?)?),
            Format::Parquet => read_parquet(&file)?,
            Format::Csv => read_csv(&file, &bytes)?,
            Format::Yaml => (None, read_yaml(&file, &bytes)?),
        };
        if rows.is_empty() {
            return Err(file_error(&path, "no records"));
        }
        let info = InputFile { path: path.clone(), sha256, records: rows.len(), columns: columns.clone() };
        match &mut out {
            None => out = Some(Input { files: vec![info], format, columns, rows }),
            Some(all) => {
                let same_columns = layout == Layout::AllCsv || all.columns.is_none() || columns.is_none();
                if !same_columns && all.columns != columns {
                    return Err(file_error(&path, "its columns differ from the first file's"));
                }
                all.files.push(info);
                all.rows.extend(rows);
            }
        }
    }
    out.ok_or_else(|| file_error(input, "no input files"))
}

pub(crate) fn file_error(file: &Path, message: impl Into<String>) -> EvalError {
    EvalError::File { file: file.to_path_buf(), message: message.into() }
}

fn syntax_error(file: &Path, line: usize, message: impl Into<String>) -> EvalError {
    EvalError::Syntax { file: file.to_path_buf(), line, message: message.into() }
}

/// The files of `split` below `dir` (see the module docs).
fn locate(dir: &Path, split: &str) -> Result<Vec<PathBuf>> {
    if split.is_empty() || split.contains(['/', '\\']) || split == "." || split == ".." {
        return Err(file_error(dir, format!("`{split}` is not a split name")));
    }
    let exact = |base: &Path| -> Option<PathBuf> {
        DIR_EXTENSIONS.iter().map(|ext| base.join(format!("{split}.{ext}"))).find(|p| p.is_file())
    };
    let subdirs = |base: &Path| -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(base)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        dirs
    };
    let shards = |base: &Path| -> Vec<PathBuf> {
        let prefix = format!("{split}-");
        let mut files: Vec<PathBuf> = std::fs::read_dir(base)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with(&prefix) && n.to_ascii_lowercase().ends_with(".parquet")
                    })
            })
            .collect();
        files.sort();
        files
    };
    let data = dir.join("data");
    for base in [dir, data.as_path()] {
        if let Some(file) = exact(base) {
            return Ok(vec![file]);
        }
    }
    for base in [dir, data.as_path()] {
        let found: Vec<PathBuf> = subdirs(base).iter().filter_map(|d| exact(d)).collect();
        if !found.is_empty() {
            return Ok(found);
        }
    }
    for base in [dir, data.as_path()] {
        let found = shards(base);
        if !found.is_empty() {
            return Ok(found);
        }
    }
    Err(file_error(
        dir,
        format!(
            "no `{split}` split: looked for {split}.{{{}}} in it, in data/ and in their \
             subdirectories, and for {split}-*.parquet shards",
            DIR_EXTENSIONS.join(",")
        ),
    ))
}

/// Every `*.csv` file directly in `dir` (ASCII case ignored), sorted by name.
fn all_csv(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(EvalError::io(dir))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(EvalError::io(dir))?.path();
        if path.is_file() && Format::of(&path) == Some(Format::Csv) {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        let hint = if dir.join("harm").is_dir() { " (PyRIT's harm files are in its `harm/`)" } else { "" };
        return Err(file_error(dir, format!("no `*.csv` files in it{hint}")));
    }
    Ok(files)
}

fn gunzip(file: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| file_error(file, format!("not valid gzip: {e}")))?;
    Ok(out)
}

/// A file saved as UTF-16 is unreadable as a whole, not line by line.
fn check_not_utf16(file: &Path, bytes: &[u8]) -> Result<()> {
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return Err(file_error(
            file,
            "not UTF-8: the file is UTF-16 (it starts with a UTF-16 byte-order mark)",
        ));
    }
    Ok(())
}

fn read_jsonl(file: &Arc<Path>, bytes: &[u8]) -> Result<Vec<Row>> {
    check_not_utf16(file, bytes)?;
    let objects = jsonl::objects_in(file, bytes)?;
    Ok(objects.into_iter().map(|(line, fields)| Row { file: file.clone(), line, fields }).collect())
}

type Table = (Option<Vec<String>>, Vec<Row>);

fn read_parquet(file: &Arc<Path>) -> Result<Table> {
    let rows = sagert_pipeline::export::read_parquet_rows(file).map_err(|e| {
        let message = match e {
            sagert_pipeline::PipelineError::Parquet { message, .. } => format!("parquet: {message}"),
            other => other.to_string(),
        };
        file_error(file, message)
    })?;
    let columns = rows.first().map(|r| r.iter().map(|(name, _)| name.clone()).collect());
    let rows = rows
        .into_iter()
        .enumerate()
        .map(|(i, fields)| Row { file: file.clone(), line: i + 1, fields: fields.into_iter().collect() })
        .collect();
    Ok((columns, rows))
}

fn read_csv(file: &Arc<Path>, bytes: &[u8]) -> Result<Table> {
    check_not_utf16(file, bytes)?;
    let mut bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    // Leading comment lines, skipped but counted: `skipped` is added to every line.
    let mut skipped = 0;
    while bytes.starts_with(b"#") {
        skipped += 1;
        bytes = bytes.iter().position(|&b| b == b'\n').map_or(&[][..], |end| &bytes[end + 1..]);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(file_error(file, "empty: expected a header row and records"));
    }
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(bytes);
    let csv_error = |e: csv::Error| -> EvalError {
        let line = e.position().map_or(1, |p| p.line() as usize) + skipped;
        let message = match e.kind() {
            csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                format!("CSV: {len} fields, but the header has {expected_len}")
            }
            _ => format!("CSV: {e}"),
        };
        syntax_error(file, line, message)
    };
    let header = reader.byte_headers().map_err(csv_error)?.clone();
    let mut columns = Vec::with_capacity(header.len());
    for field in header.iter() {
        let name =
            std::str::from_utf8(field).map_err(|e| syntax_error(file, 1 + skipped, utf8_message(e)))?;
        let name = name.trim().to_string();
        if columns.contains(&name) {
            return Err(file_error(file, format!("column `{name}` appears twice in the header")));
        }
        columns.push(name);
    }
    let mut rows = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(e)),
        }
        let line = record.position().map_or(0, |p| p.line() as usize) + skipped;
        let mut fields = Map::new();
        for (name, value) in columns.iter().zip(record.iter()) {
            let value = std::str::from_utf8(value)
                .map_err(|e| syntax_error(file, line, format!("column `{name}`: {}", utf8_message(e))))?;
            fields.insert(name.clone(), Value::String(value.to_string()));
        }
        rows.push(Row { file: file.clone(), line, fields });
    }
    Ok((Some(columns), rows))
}

fn read_yaml(file: &Arc<Path>, bytes: &[u8]) -> Result<Vec<Row>> {
    check_not_utf16(file, bytes)?;
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        syntax_error(file, line, "not UTF-8")
    })?;
    if text.trim().is_empty() {
        return Err(file_error(file, "empty"));
    }
    let doc: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
        let line = e.location().map_or(1, |l| l.line());
        syntax_error(file, line, format!("YAML: {e}"))
    })?;
    let doc = serde_json::to_value(&doc).map_err(|e| file_error(file, format!("YAML: {e}")))?;
    let Value::Object(mut top) = doc else {
        return Err(file_error(
            file,
            format!("expected a PyRIT seed file (a mapping), found {}", kind(&doc)),
        ));
    };
    let key = ["seeds", "prompts"].into_iter().find(|k| top.contains_key(*k)).ok_or_else(|| {
        file_error(file, "not a PyRIT seed file: no `seeds` list (nor an older `prompts` list)")
    })?;
    let Some(Value::Array(seeds)) = top.remove(key) else {
        return Err(file_error(file, format!("`{key}` is not a list")));
    };
    let lines = seed_lines(text, key, seeds.len());
    let mut rows = Vec::with_capacity(seeds.len());
    for (i, seed) in seeds.into_iter().enumerate() {
        let line = lines[i];
        let Value::Object(mut fields) = seed else {
            return Err(EvalError::Record {
                file: file.to_path_buf(),
                line,
                field: format!("{key}[{i}]"),
                message: format!("expected a mapping with a `value`, found {}", kind(&seed)),
            });
        };
        for inherited in ["harm_categories", "data_type", "dataset_name"] {
            if fields.get(inherited).is_none_or(Value::is_null) {
                if let Some(v) = top.get(inherited).filter(|v| !v.is_null()) {
                    fields.insert(inherited.to_string(), v.clone());
                }
            }
        }
        if let Some(Value::String(one)) = fields.get("harm_categories") {
            let one = Value::Array(vec![Value::String(one.clone())]);
            fields.insert("harm_categories".into(), one);
        }
        rows.push(Row { file: file.clone(), line, fields });
    }
    Ok(rows)
}

/// The line of each seed's `- ` below `key:`, where the file uses a block list
/// with one item per seed; otherwise the line of `key:` for every seed.
fn seed_lines(text: &str, key: &str, count: usize) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines.iter().position(|l| l.trim_end() == format!("{key}:")) else {
        return vec![1; count];
    };
    let mut indent: Option<usize> = None;
    let mut found = Vec::new();
    for (i, l) in lines.iter().enumerate().skip(start + 1) {
        let trimmed = l.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let at = l.len() - trimmed.len();
        if at == 0 && !trimmed.starts_with("- ") && trimmed != "-" {
            break;
        }
        if trimmed.starts_with("- ") || trimmed == "-" {
            let indent = *indent.get_or_insert(at);
            if at == indent {
                found.push(i + 1);
            }
        }
    }
    if found.len() == count {
        found
    } else {
        vec![start + 1; count]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_extension() {
        assert_eq!(Format::of(Path::new("a/train.jsonl.gz")), Some(Format::JsonlGz));
        assert_eq!(Format::of(Path::new("a/TRAIN.JSONL")), Some(Format::Jsonl));
        assert_eq!(Format::of(Path::new("adv_bench.prompt")), Some(Format::Yaml));
        assert_eq!(Format::of(Path::new("x.parquet")), Some(Format::Parquet));
        assert_eq!(Format::of(Path::new("x.txt")), None);
    }

    #[test]
    fn seed_lines_follow_the_block_list() {
        let text =
            "dataset_name: x\nseeds:\n  - value: a\n    harm_categories:\n    - b\n  - value: c\nother: 1\n";
        assert_eq!(seed_lines(text, "seeds", 2), vec![3, 6]);
        let flush = "seeds:\n- value: a\n  harm_categories:\n  - b\n- value: c\n";
        assert_eq!(seed_lines(flush, "seeds", 2), vec![2, 5]);
        assert_eq!(seed_lines("seeds: [{value: a}]\n", "seeds", 1), vec![1]);
    }
}
