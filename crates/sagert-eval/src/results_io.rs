//! Writing and reading a study's [`ResultRow`]s: `results.parquet` and
//! `results.jsonl`, one row per cell × metric × category.
//!
//! Both files are replaced atomically (written whole to a temporary file
//! beside the target, then renamed), so a reader never sees half a file.
//!
//! The Parquet file is written with the `parquet` crate's low-level column
//! writer (no Arrow), Snappy-compressed, in one row group per
//! [`ROW_GROUP_ROWS`] rows. Its columns follow [`ResultRow`]'s fields in
//! order: strings are `BYTE_ARRAY` annotated `String` (`level` as its
//! lower-case name), `size` and `n` are `INT64`, the numbers `DOUBLE`; every
//! column is `REQUIRED` except `judge`, `judge_accuracy` and `judge_kappa`,
//! which are `OPTIONAL` and null for an unjudged or uncalibrated metric.
//! pandas and pyarrow read it as is.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::{Compression, LogicalType, Repetition, Type as PhysicalType};
use parquet::data_type::{ByteArray, ByteArrayType, DataType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::types::{Type, TypePtr};
use sagert_engine::EngineError;

use crate::jsonl;
use crate::results::ResultRow;
use crate::{EvalError, Result};

/// The Parquet file's name in a results directory.
pub const PARQUET_FILE: &str = "results.parquet";
/// The JSONL file's name in a results directory.
pub const JSONL_FILE: &str = "results.jsonl";
/// Rows per Parquet row group.
pub const ROW_GROUP_ROWS: usize = 50_000;

/// The files [`write_results`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultFiles {
    /// `dir/results.parquet`.
    pub parquet: PathBuf,
    /// `dir/results.jsonl`.
    pub jsonl: PathBuf,
}

/// Write `rows` to `dir/results.parquet` and `dir/results.jsonl`, creating
/// `dir` if needed. Fails, writing nothing, when a value, bound or judge
/// score is not finite or a count exceeds Parquet's `INT64`.
pub fn write_results(dir: &Path, rows: &[ResultRow]) -> Result<ResultFiles> {
    check(dir, rows)?;
    let files = ResultFiles { parquet: dir.join(PARQUET_FILE), jsonl: dir.join(JSONL_FILE) };
    write_results_parquet(&files.parquet, rows)?;
    write_results_jsonl(&files.jsonl, rows)?;
    Ok(files)
}

/// Write `rows` to `path` as JSON lines, one [`ResultRow`] per line, atomically.
pub fn write_results_jsonl(path: &Path, rows: &[ResultRow]) -> Result<()> {
    check(path, rows)?;
    let mut bytes = Vec::new();
    for row in rows {
        serde_json::to_writer(&mut bytes, row)
            .map_err(|e| EvalError::File { file: path.into(), message: e.to_string() })?;
        bytes.push(b'\n');
    }
    write_atomic(path, &bytes)
}

/// Read rows written by [`write_results_jsonl`]; blank lines are skipped.
pub fn read_results_jsonl(path: &Path) -> Result<Vec<ResultRow>> {
    jsonl::objects(path)?
        .into_iter()
        .map(|(line, object)| {
            serde_json::from_value(serde_json::Value::Object(object)).map_err(|e| EvalError::Syntax {
                file: path.into(),
                line,
                message: e.to_string(),
            })
        })
        .collect()
}

/// Write `rows` to `path` as Parquet (see the module docs), atomically.
pub fn write_results_parquet(path: &Path, rows: &[ResultRow]) -> Result<()> {
    check(path, rows)?;
    let bytes = parquet_bytes(rows)
        .map_err(|message| EvalError::File { file: path.into(), message: format!("parquet: {message}") })?;
    write_atomic(path, &bytes)
}

/// Read a file written by [`write_results_parquet`] back into rows.
pub fn read_results_parquet(path: &Path) -> Result<Vec<ResultRow>> {
    let rows = sagert_pipeline::export::read_parquet_rows(path)
        .map_err(|e| EvalError::File { file: path.into(), message: e.to_string() })?;
    rows.into_iter()
        .enumerate()
        .map(|(i, columns)| {
            let object: serde_json::Map<String, serde_json::Value> = columns.into_iter().collect();
            serde_json::from_value(serde_json::Value::Object(object)).map_err(|e| EvalError::Record {
                file: path.into(),
                line: i + 1,
                field: "row".into(),
                message: e.to_string(),
            })
        })
        .collect()
}

/// Reject what neither file can hold: non-finite numbers (JSON has none)
/// and counts past `i64::MAX`.
fn check(path: &Path, rows: &[ResultRow]) -> Result<()> {
    for (i, row) in rows.iter().enumerate() {
        let numbers = [
            ("value", Some(row.value)),
            ("lo", Some(row.lo)),
            ("hi", Some(row.hi)),
            ("judge_accuracy", row.judge_accuracy),
            ("judge_kappa", row.judge_kappa),
        ];
        let bad_float = numbers.iter().find(|(_, v)| v.is_some_and(|v| !v.is_finite()));
        let bad_count =
            [("size", row.size), ("n", row.n)].into_iter().find(|(_, v)| i64::try_from(*v).is_err());
        let field = bad_float.map(|(name, _)| *name).or(bad_count.map(|(name, _)| name));
        if let Some(field) = field {
            return Err(EvalError::Record {
                file: path.into(),
                line: i + 1,
                field: field.into(),
                message: format!(
                    "cell `{}`, metric `{}`, category `{}`: not a finite number or past the int64 range",
                    row.cell, row.metric, row.category
                ),
            });
        }
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    sagert_engine::io::write_atomic(path, bytes).map_err(|e| match e {
        EngineError::Io { path, source, .. } => EvalError::Io { path, source },
        other => EvalError::File { file: path.into(), message: other.to_string() },
    })
}

/// The kinds of column a result row has.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Float,
}

/// The columns, in [`ResultRow`]'s field order: name, kind, nullable.
const COLUMNS: [(&str, Kind, bool); 16] = [
    ("cell", Kind::Str, false),
    ("base_model", Kind::Str, false),
    ("dataset", Kind::Str, false),
    ("size", Kind::Int, false),
    ("method", Kind::Str, false),
    ("metric", Kind::Str, false),
    ("eval_set", Kind::Str, false),
    ("level", Kind::Str, false),
    ("category", Kind::Str, false),
    ("value", Kind::Float, false),
    ("lo", Kind::Float, false),
    ("hi", Kind::Float, false),
    ("n", Kind::Int, false),
    ("judge", Kind::Str, true),
    ("judge_accuracy", Kind::Float, true),
    ("judge_kappa", Kind::Float, true),
];

/// One column's cell of `row`.
enum Value<'a> {
    Str(Option<&'a str>),
    Int(i64),
    Float(Option<f64>),
}

fn cell(row: &ResultRow, column: usize) -> Value<'_> {
    // `check` has run: counts fit in i64.
    let int = |v: u64| Value::Int(i64::try_from(v).unwrap_or(i64::MAX));
    match column {
        0 => Value::Str(Some(&row.cell)),
        1 => Value::Str(Some(&row.base_model)),
        2 => Value::Str(Some(&row.dataset)),
        3 => int(row.size),
        4 => Value::Str(Some(&row.method)),
        5 => Value::Str(Some(&row.metric)),
        6 => Value::Str(Some(&row.eval_set)),
        7 => Value::Str(Some(row.level.name())),
        8 => Value::Str(Some(&row.category)),
        9 => Value::Float(Some(row.value)),
        10 => Value::Float(Some(row.lo)),
        11 => Value::Float(Some(row.hi)),
        12 => int(row.n),
        13 => Value::Str(row.judge.as_deref()),
        14 => Value::Float(row.judge_accuracy),
        _ => Value::Float(row.judge_kappa),
    }
}

fn schema() -> std::result::Result<TypePtr, parquet::errors::ParquetError> {
    let mut fields = Vec::with_capacity(COLUMNS.len());
    for (name, kind, nullable) in COLUMNS {
        let physical = match kind {
            Kind::Str => PhysicalType::BYTE_ARRAY,
            Kind::Int => PhysicalType::INT64,
            Kind::Float => PhysicalType::DOUBLE,
        };
        let logical = matches!(kind, Kind::Str).then_some(LogicalType::String);
        let repetition = if nullable { Repetition::OPTIONAL } else { Repetition::REQUIRED };
        fields.push(Arc::new(
            Type::primitive_type_builder(name, physical)
                .with_repetition(repetition)
                .with_logical_type(logical)
                .build()?,
        ));
    }
    Ok(Arc::new(Type::group_type_builder("schema").with_fields(fields).build()?))
}

/// The whole Parquet file in memory (a study's results are small).
fn parquet_bytes(rows: &[ResultRow]) -> std::result::Result<Vec<u8>, String> {
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut writer =
        SerializedFileWriter::new(Vec::new(), schema().map_err(|e| e.to_string())?, Arc::new(props))
            .map_err(|e| e.to_string())?;
    for chunk in rows.chunks(ROW_GROUP_ROWS) {
        let mut group = writer.next_row_group().map_err(|e| e.to_string())?;
        for (at, (name, kind, nullable)) in COLUMNS.into_iter().enumerate() {
            write_column(&mut group, chunk, at, kind, nullable)
                .map_err(|e| format!("column `{name}`: {e}"))?;
        }
        group.close().map_err(|e| e.to_string())?;
    }
    writer.into_inner().map_err(|e| e.to_string())
}

fn write_column(
    group: &mut SerializedRowGroupWriter<'_, Vec<u8>>,
    rows: &[ResultRow],
    at: usize,
    kind: Kind,
    nullable: bool,
) -> std::result::Result<(), String> {
    let cells = || rows.iter().map(|row| cell(row, at));
    let def: Vec<i16> =
        cells().map(|c| i16::from(!matches!(c, Value::Str(None) | Value::Float(None)))).collect();
    let def = nullable.then_some(def.as_slice());
    match kind {
        Kind::Str => {
            let values: Vec<ByteArray> = cells()
                .filter_map(|c| match c {
                    Value::Str(s) => s.map(ByteArray::from),
                    _ => None,
                })
                .collect();
            leaf::<ByteArrayType>(group, &values, def)
        }
        Kind::Int => {
            let values: Vec<i64> = cells()
                .filter_map(|c| match c {
                    Value::Int(v) => Some(v),
                    _ => None,
                })
                .collect();
            leaf::<Int64Type>(group, &values, def)
        }
        Kind::Float => {
            let values: Vec<f64> = cells()
                .filter_map(|c| match c {
                    Value::Float(v) => v,
                    _ => None,
                })
                .collect();
            leaf::<DoubleType>(group, &values, def)
        }
    }
}

fn leaf<T: DataType>(
    group: &mut SerializedRowGroupWriter<'_, Vec<u8>>,
    values: &[T::T],
    def: Option<&[i16]>,
) -> std::result::Result<(), String> {
    let mut writer = group.next_column().map_err(|e| e.to_string())?.ok_or("the schema has fewer columns")?;
    writer.typed::<T>().write_batch(values, def, None).map_err(|e| e.to_string())?;
    writer.close().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Level;

    fn row(cell: &str, metric: &str, category: &str, judge: Option<&str>) -> ResultRow {
        ResultRow {
            cell: cell.into(),
            base_model: "smol-135m".into(),
            dataset: if cell == "base" { String::new() } else { "sage".into() },
            size: if cell == "base" { 0 } else { 200 },
            method: if cell == "base" { "none".into() } else { "dpo".into() },
            metric: metric.into(),
            eval_set: "harmbench".into(),
            level: if category == "all" { Level::Overall } else { Level::Macro },
            category: category.into(),
            value: 0.25,
            lo: 0.125,
            hi: 0.375,
            n: 40,
            judge: judge.map(Into::into),
            judge_accuracy: judge.map(|_| 0.82),
            judge_kappa: None,
        }
    }

    fn rows() -> Vec<ResultRow> {
        vec![
            row("base", "harmful_rate", "all", Some("classifier-harm")),
            row("sage-n200", "harmful_rate", "crime", Some("<b>\"judge\"</b>")),
            row("sage-n200", "acc", "all", None),
        ]
    }

    #[test]
    fn both_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_results(&dir.path().join("out"), &rows()).unwrap();
        assert_eq!(read_results_jsonl(&files.jsonl).unwrap(), rows());
        assert_eq!(read_results_parquet(&files.parquet).unwrap(), rows());
        // The raw columns: names in field order, nulls where a row has no judge.
        let raw = sagert_pipeline::export::read_parquet_rows(&files.parquet).unwrap();
        let names: Vec<&str> = raw[0].iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, COLUMNS.map(|c| c.0));
        assert_eq!(raw[2][13], ("judge".to_string(), serde_json::Value::Null));
        assert_eq!(raw[1][7].1, "macro");
        assert_eq!(raw[0][3].1, 0);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out")).unwrap().collect();
        assert_eq!(leftovers.len(), 2, "no temporary files are left behind");
    }

    #[test]
    fn no_rows_still_make_readable_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_results(dir.path(), &[]).unwrap();
        assert!(read_results_parquet(&files.parquet).unwrap().is_empty());
        assert!(read_results_jsonl(&files.jsonl).unwrap().is_empty());
    }

    #[test]
    fn non_finite_values_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = rows();
        bad[1].hi = f64::NAN;
        let err = write_results(dir.path(), &bad).unwrap_err().to_string();
        assert!(err.contains("field `hi`") && err.contains("sage-n200"), "{err}");
        assert!(!dir.path().join(PARQUET_FILE).exists());
    }

    #[test]
    fn a_bad_jsonl_line_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JSONL_FILE);
        write_results_jsonl(&path, &rows()).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("\n{\"cell\": 1}\n");
        std::fs::write(&path, text).unwrap();
        let err = read_results_jsonl(&path).unwrap_err().to_string();
        assert!(err.contains(":5:"), "{err}");
    }
}
