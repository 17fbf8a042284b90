//! Parquet: writing an export table with the `parquet` crate's low-level column
//! writer (no Arrow), reading files back as JSON rows.
//!
//! Every column is `REQUIRED` (exports hold no nulls): strings are `BYTE_ARRAY`
//! annotated `String`, booleans `BOOLEAN`, integers `INT64`, floats `DOUBLE`.
//! A conversation column is the standard three-level list,
//!
//! ```text
//! required group prompt (LIST) {
//!   repeated group list {
//!     required group element { required binary role (STRING); required binary content (STRING); }
//!   }
//! }
//! ```
//!
//! which pyarrow reads as `list<element: struct<role: string, content: string>>`.
//! Pages are Snappy-compressed; row groups hold at most [`ROW_GROUP_ROWS`] rows.
//! A table without rows still gets a file: the schema and no row groups.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Compression, LogicalType, Repetition, Type as PhysicalType};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DataType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::record::Field;
use parquet::schema::types::{Type, TypePtr};
use serde_json::Value;

use super::table::{Cell, Column, Dtype, Table};
use crate::PipelineError;

/// Rows per row group: a group's cells are held in memory while it is
/// written, and readers stream a split group by group.
pub const ROW_GROUP_ROWS: usize = 10_000;

fn parquet_error(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> PipelineError + '_ {
    move |e| PipelineError::Parquet { path: path.into(), message: e.to_string() }
}

fn string_leaf(name: &str) -> Result<TypePtr, parquet::errors::ParquetError> {
    Ok(Arc::new(
        Type::primitive_type_builder(name, PhysicalType::BYTE_ARRAY)
            .with_repetition(Repetition::REQUIRED)
            .with_logical_type(Some(LogicalType::String))
            .build()?,
    ))
}

/// The Parquet schema of `columns`.
fn schema(columns: &[Column]) -> Result<TypePtr, parquet::errors::ParquetError> {
    let mut fields = Vec::with_capacity(columns.len());
    for c in columns {
        let field = match c.dtype {
            Dtype::String => string_leaf(c.name)?,
            Dtype::Bool | Dtype::Int64 | Dtype::Float64 => {
                let physical = match c.dtype {
                    Dtype::Bool => PhysicalType::BOOLEAN,
                    Dtype::Int64 => PhysicalType::INT64,
                    _ => PhysicalType::DOUBLE,
                };
                Arc::new(
                    Type::primitive_type_builder(c.name, physical)
                        .with_repetition(Repetition::REQUIRED)
                        .build()?,
                )
            }
            Dtype::Messages => {
                let element = Type::group_type_builder("element")
                    .with_repetition(Repetition::REQUIRED)
                    .with_fields(vec![string_leaf("role")?, string_leaf("content")?])
                    .build()?;
                let list = Type::group_type_builder("list")
                    .with_repetition(Repetition::REPEATED)
                    .with_fields(vec![Arc::new(element)])
                    .build()?;
                Arc::new(
                    Type::group_type_builder(c.name)
                        .with_repetition(Repetition::REQUIRED)
                        .with_logical_type(Some(LogicalType::List))
                        .with_fields(vec![Arc::new(list)])
                        .build()?,
                )
            }
        };
        fields.push(field);
    }
    Ok(Arc::new(Type::group_type_builder("schema").with_fields(fields).build()?))
}

/// Write `table` to `path` as Parquet and flush it to disk. The table must
/// have passed [`Table::check`].
pub(crate) fn write(path: &Path, table: &Table<'_>) -> Result<(), PipelineError> {
    let err = parquet_error(path);
    let file = File::create(path).map_err(PipelineError::io("cannot create", path))?;
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut writer = SerializedFileWriter::new(file, schema(&table.columns).map_err(&err)?, Arc::new(props))
        .map_err(&err)?;
    let mut rows = table.rows();
    loop {
        let chunk: Vec<Vec<Cell<'_>>> = rows.by_ref().take(ROW_GROUP_ROWS).collect();
        if chunk.is_empty() {
            break;
        }
        let mut group = writer.next_row_group().map_err(&err)?;
        for (at, column) in table.columns.iter().enumerate() {
            write_column(&mut group, column, chunk.iter().map(|row| &row[at])).map_err(|message| {
                PipelineError::Parquet {
                    path: path.into(),
                    message: format!("column `{}`: {message}", column.name),
                }
            })?;
        }
        group.close().map_err(&err)?;
    }
    let file = writer.into_inner().map_err(&err)?;
    file.sync_all().map_err(PipelineError::io("cannot sync", path))
}

/// Write one column of a row group: one leaf, or two (`role`, `content`) for a
/// conversation.
fn write_column<'c, 'a: 'c>(
    group: &mut SerializedRowGroupWriter<'_, File>,
    column: &Column,
    cells: impl ExactSizeIterator<Item = &'c Cell<'a>>,
) -> Result<(), String> {
    let mismatch = |cell: &Cell<'_>| format!("{cell:?} in a {:?} column", column.dtype);
    let n = cells.len();
    match column.dtype {
        Dtype::String => {
            let values = cells
                .map(|c| match c {
                    Cell::Str(s) => Ok(ByteArray::from(*s)),
                    other => Err(mismatch(other)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            leaf::<ByteArrayType>(group, &values, None, None)
        }
        Dtype::Bool => {
            let values = cells
                .map(|c| match c {
                    Cell::Bool(b) => Ok(*b),
                    other => Err(mismatch(other)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            leaf::<BoolType>(group, &values, None, None)
        }
        Dtype::Int64 => {
            let values = cells
                .map(|c| match c {
                    Cell::UInt(v) => i64::try_from(*v).map_err(|_| format!("{v} exceeds the int64 range")),
                    other => Err(mismatch(other)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            leaf::<Int64Type>(group, &values, None, None)
        }
        Dtype::Float64 => {
            let values = cells
                .map(|c| match c {
                    Cell::Float(x) => Ok(*x),
                    other => Err(mismatch(other)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            leaf::<DoubleType>(group, &values, None, None)
        }
        Dtype::Messages => {
            let (mut roles, mut contents) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for c in cells {
                match c {
                    Cell::Message { role, content } => {
                        roles.push(ByteArray::from(*role));
                        contents.push(ByteArray::from(*content));
                    }
                    other => return Err(mismatch(other)),
                }
            }
            // One message per row: each value starts a new list (repetition 0)
            // and is present (definition 1, the repeated level).
            let (def, rep) = (vec![1i16; n], vec![0i16; n]);
            leaf::<ByteArrayType>(group, &roles, Some(&def), Some(&rep))?;
            leaf::<ByteArrayType>(group, &contents, Some(&def), Some(&rep))
        }
    }
}

fn leaf<T: DataType>(
    group: &mut SerializedRowGroupWriter<'_, File>,
    values: &[T::T],
    def: Option<&[i16]>,
    rep: Option<&[i16]>,
) -> Result<(), String> {
    let mut writer = group.next_column().map_err(|e| e.to_string())?.ok_or("the schema has fewer leaves")?;
    writer.typed::<T>().write_batch(values, def, rep).map_err(|e| e.to_string())?;
    writer.close().map_err(|e| e.to_string())
}

/// Read a Parquet file into rows of `(column, value)` in schema order, values as
/// JSON (groups become objects, lists arrays). For checking exports against
/// their JSONL twins, and for tools that read them back.
pub fn read_parquet_rows(path: &Path) -> Result<Vec<Vec<(String, Value)>>, PipelineError> {
    let err = parquet_error(path);
    let file = File::open(path).map_err(PipelineError::io("cannot read", path))?;
    let reader = SerializedFileReader::new(file).map_err(&err)?;
    let mut out = Vec::new();
    for row in reader.get_row_iter(None).map_err(&err)? {
        let row = row.map_err(&err)?;
        let values = row
            .into_columns()
            .into_iter()
            .map(|(name, field)| {
                let value = to_json(&field).map_err(|message| PipelineError::Parquet {
                    path: path.into(),
                    message: format!("row {}: column `{name}`: {message}", out.len() + 1),
                })?;
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, PipelineError>>()?;
        out.push(values);
    }
    Ok(out)
}

fn to_json(field: &Field) -> Result<Value, String> {
    Ok(match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::from(*b),
        Field::Byte(n) => Value::from(*n),
        Field::Short(n) => Value::from(*n),
        Field::Int(n) => Value::from(*n),
        Field::Long(n) => Value::from(*n),
        Field::UByte(n) => Value::from(*n),
        Field::UShort(n) => Value::from(*n),
        Field::UInt(n) => Value::from(*n),
        Field::ULong(n) => Value::from(*n),
        Field::Float(x) => Value::from(f64::from(*x)),
        Field::Double(x) => Value::from(*x),
        Field::Str(s) => Value::from(s.as_str()),
        Field::Group(row) => Value::Object(
            row.get_column_iter()
                .map(|(name, field)| Ok((name.clone(), to_json(field)?)))
                .collect::<Result<_, String>>()?,
        ),
        Field::ListInternal(list) => {
            Value::Array(list.elements().iter().map(to_json).collect::<Result<_, _>>()?)
        }
        other => return Err(format!("unsupported value {other}")),
    })
}
