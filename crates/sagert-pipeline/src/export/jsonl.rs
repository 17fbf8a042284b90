//! JSON Lines: writing an export table, reading `trl` pairs back.
//!
//! One compact JSON object per line, `\n`-terminated, keys in column order. The
//! writer emits the keys itself rather than going through `serde_json::Map`,
//! whose order depends on whether some crate in the build enabled
//! `preserve_order`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use sagert_engine::EngineError;
use serde_json::Value;

use super::table::{Cell, Table, VERDICT_COLUMNS};
use crate::record::PairRecord;
use crate::PipelineError;
use sagert_backend::json::kind;

/// Write `table` to `path` as JSON Lines and flush it to disk.
pub(crate) fn write(path: &Path, table: &Table<'_>) -> Result<(), PipelineError> {
    let file = File::create(path).map_err(PipelineError::io("cannot create", path))?;
    let mut w = BufWriter::new(file);
    for row in table.rows() {
        write_row(&mut w, table, &row).map_err(PipelineError::io("cannot write", path))?;
    }
    let file = w.into_inner().map_err(|e| e.into_error()).map_err(PipelineError::io("cannot write", path))?;
    file.sync_all().map_err(PipelineError::io("cannot sync", path))
}

fn write_row(w: &mut impl Write, table: &Table<'_>, row: &[Cell<'_>]) -> std::io::Result<()> {
    w.write_all(b"{")?;
    for (i, (column, cell)) in table.columns.iter().zip(row).enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        serde_json::to_writer(&mut *w, column.name)?;
        w.write_all(b":")?;
        write_cell(w, cell)?;
    }
    w.write_all(b"}\n")
}

fn write_cell(w: &mut impl Write, cell: &Cell<'_>) -> std::io::Result<()> {
    match *cell {
        Cell::Str(s) => serde_json::to_writer(&mut *w, s)?,
        Cell::Bool(b) => w.write_all(if b { b"true" } else { b"false" })?,
        Cell::UInt(n) => write!(w, "{n}")?,
        // Finite (checked by `Table::check`): serde_json writes the shortest
        // text that reads back as the same f64, always with a `.` or exponent.
        Cell::Float(x) => serde_json::to_writer(&mut *w, &x)?,
        Cell::Message { role, content } => {
            w.write_all(b"[{\"role\":")?;
            serde_json::to_writer(&mut *w, role)?;
            w.write_all(b",\"content\":")?;
            serde_json::to_writer(&mut *w, content)?;
            w.write_all(b"}]")?;
        }
    }
    Ok(())
}

/// Read the pairs of a `trl` JSONL file (as [`write_dataset_dir`](super::write_dataset_dir)
/// writes it) back into records, folding the `verdict_*` and score columns back
/// into [`Verdicts`](crate::record::Verdicts).
///
/// Blank lines are skipped and columns a record does not have are ignored (TRL
/// allows extra columns). Anything else wrong is an [`EngineError::Input`] naming
/// the file, the line and the column.
pub fn read_pairs_jsonl(path: &Path) -> Result<Vec<PairRecord>, PipelineError> {
    let text = sagert_engine::io::read_text(path)?;
    let file = path.display().to_string();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |field: &str, message: String| {
            PipelineError::Engine(EngineError::Input {
                file: file.clone(),
                line: i + 1,
                field: field.into(),
                message,
            })
        };
        let mut row = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(row)) => row,
            Ok(other) => return Err(bad("-", format!("expected a JSON object, found {}", kind(&other)))),
            Err(e) => return Err(bad("-", format!("not JSON: {e}"))),
        };
        let mut verdicts = serde_json::Map::new();
        for (column, field) in VERDICT_COLUMNS {
            let value = row.remove(column).ok_or_else(|| bad(column, "missing column".into()))?;
            verdicts.insert(field.into(), value);
        }
        row.insert("verdicts".into(), Value::Object(verdicts));
        let record: PairRecord = serde_path_to_error::deserialize(Value::Object(row)).map_err(|e| {
            let path = e.path().to_string();
            let column = match path.strip_prefix("verdicts.") {
                Some(field) => VERDICT_COLUMNS
                    .iter()
                    .find(|(_, f)| *f == field)
                    .map_or(path.clone(), |(c, _)| c.to_string()),
                None if path == "." => "-".to_string(),
                None => path,
            };
            bad(&column, e.into_inner().to_string())
        })?;
        out.push(record);
    }
    Ok(out)
}
