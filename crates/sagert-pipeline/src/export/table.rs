//! The column sets of every export format, defined once, and the in-memory
//! table both writers (JSONL, Parquet) and the dataset card read.
//!
//! A [`PairRecord`] flattens to its provenance columns in field order, with
//! [`Verdicts`](crate::record::Verdicts) spread into `verdict_*` booleans and
//! the four scores. The unit tests check this list against `PairRecord`'s own
//! serialisation, so a field added to the record without a column here fails
//! them.

use serde_json::Value;

use super::ExportFormat;
use crate::record::{PairRecord, RedTeamPrompt};
use crate::PipelineError;

/// The type of a column, as JSON, Parquet and `datasets` see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// UTF-8 text: JSON string, Parquet `BYTE_ARRAY` (String), `datasets` `string`.
    String,
    /// JSON boolean, Parquet `BOOLEAN`, `datasets` `bool`.
    Bool,
    /// A non-negative integer: JSON number, Parquet `INT64`, `datasets` `int64`.
    Int64,
    /// A finite float: JSON number, Parquet `DOUBLE`, `datasets` `float64`.
    Float64,
    /// A conversation: JSON list of `{"role", "content"}` objects, Parquet
    /// `list<struct<role: string, content: string>>`.
    Messages,
}

impl Dtype {
    /// The `dtype` a dataset card's `features` gives a scalar column (`None` for
    /// [`Dtype::Messages`], which is a list of two string fields).
    pub fn hf_dtype(self) -> Option<&'static str> {
        match self {
            Dtype::String => Some("string"),
            Dtype::Bool => Some("bool"),
            Dtype::Int64 => Some("int64"),
            Dtype::Float64 => Some("float64"),
            Dtype::Messages => None,
        }
    }
}

/// One column of an export: its name, type and meaning (the card's column table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    /// The column name.
    pub name: &'static str,
    /// Its type.
    pub dtype: Dtype,
    /// What it holds, for the dataset card.
    pub doc: &'static str,
}

/// One value of a row, borrowed from the record it comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cell<'a> {
    /// A string.
    Str(&'a str),
    /// A boolean.
    Bool(bool),
    /// An unsigned integer; Parquet stores it as `INT64`, so it must not exceed `i64::MAX`.
    UInt(u64),
    /// A float; exports require it to be finite.
    Float(f64),
    /// A one-message conversation `[{"role": role, "content": content}]`.
    Message {
        /// `user` or `assistant`.
        role: &'static str,
        /// The message text.
        content: &'a str,
    },
}

impl Cell<'_> {
    /// The value as JSON, as it appears in the JSONL files.
    pub fn to_json(&self) -> Value {
        match *self {
            Cell::Str(s) => Value::from(s),
            Cell::Bool(b) => Value::from(b),
            Cell::UInt(n) => Value::from(n),
            Cell::Float(x) => Value::from(x),
            Cell::Message { role, content } => {
                let mut message = serde_json::Map::new();
                message.insert("role".into(), Value::from(role));
                message.insert("content".into(), Value::from(content));
                Value::Array(vec![Value::Object(message)])
            }
        }
    }

    /// Whether the value has the column type `dtype`.
    pub fn is(&self, dtype: Dtype) -> bool {
        matches!(
            (self, dtype),
            (Cell::Str(_), Dtype::String)
                | (Cell::Bool(_), Dtype::Bool)
                | (Cell::UInt(_), Dtype::Int64)
                | (Cell::Float(_), Dtype::Float64)
                | (Cell::Message { .. }, Dtype::Messages)
        )
    }
}

/// A column with the function that reads it off a record.
struct Field<R: 'static> {
    column: Column,
    get: fn(&R) -> Cell<'_>,
}

macro_rules! fields {
    ($rec:ty; $($name:literal, $dtype:ident, |$p:ident| $value:expr, $doc:literal;)+) => {
        [$(
            Field::<$rec> {
                column: Column { name: $name, dtype: Dtype::$dtype, doc: $doc },
                get: {
                    fn get($p: &$rec) -> Cell<'_> {
                        $value
                    }
                    get
                },
            }
        ),+]
    };
}

/// The verdict columns and the [`Verdicts`](crate::record::Verdicts) field
/// each one comes from, in column order.
pub(crate) const VERDICT_COLUMNS: [(&str, &str); 9] = [
    ("verdict_query_harmful", "query_harmful"),
    ("verdict_query_in_category", "query_in_category"),
    ("verdict_chosen_safe", "chosen_safe"),
    ("verdict_chosen_not_over_refusal", "chosen_not_over_refusal"),
    ("verdict_rejected_unsafe", "rejected_unsafe"),
    ("query_harm_score", "query_harm_score"),
    ("chosen_harm_score", "chosen_harm_score"),
    ("chosen_refusal_score", "chosen_refusal_score"),
    ("rejected_harm_score", "rejected_harm_score"),
];

/// Every [`PairRecord`] field but `prompt`, `chosen` and `rejected`, in field order.
#[rustfmt::skip]
static PROVENANCE: [Field<PairRecord>; 25] = fields! { PairRecord;
    "id", String, |p| Cell::Str(&p.id),
        "Stable id of the pair (the pipeline item it came from).";
    "taxonomy_path", String, |p| Cell::Str(&p.taxonomy_path),
        "`macro/micro/leaf` path in the harm taxonomy.";
    "macro_category", String, |p| Cell::Str(&p.macro_category),
        "Macro category id.";
    "micro_category", String, |p| Cell::Str(&p.micro_category),
        "Micro category id (ALERT's micro key).";
    "leaf", String, |p| Cell::Str(&p.leaf),
        "Leaf category id.";
    "topic", String, |p| Cell::Str(&p.topic),
        "The concrete topic the prompt was conditioned on.";
    "topic_id", String, |p| Cell::Str(&p.topic_id),
        "Topic id (`leaf path#index`); train and test never share a topic.";
    "jailbreak_type", String, |p| Cell::Str(&p.jailbreak_type),
        "Which of the nine jailbreak types the prompt uses.";
    "raw_text_format", String, |p| Cell::Str(&p.raw_text_format),
        "The raw-text format the query was mined from.";
    "epoch", Int64, |p| Cell::UInt(u64::from(p.epoch)),
        "Diversification epoch: 0 for the extracted query, n for its n-th rewrite.";
    "expander_model", String, |p| Cell::Str(&p.expander_model),
        "Model that expanded the taxonomy into topics.";
    "generator_model", String, |p| Cell::Str(&p.generator_model),
        "Model that wrote raw text and queries.";
    "safe_responder_model", String, |p| Cell::Str(&p.safe_responder_model),
        "Model that wrote the chosen (safe) response.";
    "unsafe_responder_model", String, |p| Cell::Str(&p.unsafe_responder_model),
        "Model (or `raw_text`) that produced the rejected (unsafe) response.";
    "judge", String, |p| Cell::Str(&p.judge),
        "The validating judge: `classifier` or an LLM's model id.";
    "seed", Int64, |p| Cell::UInt(p.seed),
        "The run seed.";
    "verdict_query_harmful", Bool, |p| Cell::Bool(p.verdicts.query_harmful),
        "Judge: the prompt asks for something harmful.";
    "verdict_query_in_category", Bool, |p| Cell::Bool(p.verdicts.query_in_category),
        "Judge: the prompt belongs to its leaf category.";
    "verdict_chosen_safe", Bool, |p| Cell::Bool(p.verdicts.chosen_safe),
        "Judge: the chosen response is safe.";
    "verdict_chosen_not_over_refusal", Bool, |p| Cell::Bool(p.verdicts.chosen_not_over_refusal),
        "Judge: the chosen response is not an over-refusal.";
    "verdict_rejected_unsafe", Bool, |p| Cell::Bool(p.verdicts.rejected_unsafe),
        "Judge: the rejected response is unsafe.";
    "query_harm_score", Float64, |p| Cell::Float(p.verdicts.query_harm_score),
        "Harm score of the prompt, in [0, 1].";
    "chosen_harm_score", Float64, |p| Cell::Float(p.verdicts.chosen_harm_score),
        "Harm score of the chosen response, in [0, 1].";
    "chosen_refusal_score", Float64, |p| Cell::Float(p.verdicts.chosen_refusal_score),
        "Refusal score of the chosen response, in [0, 1].";
    "rejected_harm_score", Float64, |p| Cell::Float(p.verdicts.rejected_harm_score),
        "Harm score of the rejected response, in [0, 1].";
};

/// The `redteam` columns: every [`RedTeamPrompt`] field, in field order.
#[rustfmt::skip]
static REDTEAM: [Field<RedTeamPrompt>; 8] = fields! { RedTeamPrompt;
    "id", String, |p| Cell::Str(&p.id),
        "Id of the pair the prompt comes from.";
    "prompt", String, |p| Cell::Str(&p.prompt),
        "The (jailbreak) prompt.";
    "taxonomy_path", String, |p| Cell::Str(&p.taxonomy_path),
        "`macro/micro/leaf` path in the harm taxonomy.";
    "macro_category", String, |p| Cell::Str(&p.macro_category),
        "Macro category id.";
    "micro_category", String, |p| Cell::Str(&p.micro_category),
        "Micro category id.";
    "leaf", String, |p| Cell::Str(&p.leaf),
        "Leaf category id.";
    "jailbreak_type", String, |p| Cell::Str(&p.jailbreak_type),
        "Which of the nine jailbreak types the prompt uses.";
    "split", String, |p| Cell::Str(&p.split),
        "The split of the prompt's pair (`train` or `test`).";
};

const PROMPT: Column = Column { name: "prompt", dtype: Dtype::String, doc: "The (jailbreak) prompt." };
const CHOSEN: Column = Column {
    name: "chosen",
    dtype: Dtype::String,
    doc: "The preferred response: safe, and not an over-refusal.",
};
const REJECTED: Column = Column {
    name: "rejected",
    dtype: Dtype::String,
    doc: "The dispreferred response: it complies unsafely.",
};
const PROMPT_CHAT: Column =
    Column { name: "prompt", dtype: Dtype::Messages, doc: "The prompt as one `user` message." };
const CHOSEN_CHAT: Column =
    Column { name: "chosen", dtype: Dtype::Messages, doc: "The safe response as one `assistant` message." };
const REJECTED_CHAT: Column = Column {
    name: "rejected",
    dtype: Dtype::Messages,
    doc: "The unsafe response as one `assistant` message.",
};
const COMPLETION: Column = Column {
    name: "completion",
    dtype: Dtype::String,
    doc: "A response to the prompt: the pair's chosen or its rejected response.",
};
const LABEL: Column = Column {
    name: "label",
    dtype: Dtype::Bool,
    doc: "`true` for the chosen (desirable) response, `false` for the rejected one.",
};

/// The provenance columns every pair format carries after its own columns.
pub fn provenance_columns() -> Vec<Column> {
    PROVENANCE.iter().map(|f| f.column).collect()
}

/// The columns of `format`, in file order.
pub fn columns(format: ExportFormat) -> Vec<Column> {
    let head: &[Column] = match format {
        ExportFormat::Trl => &[PROMPT, CHOSEN, REJECTED],
        ExportFormat::TrlChat => &[PROMPT_CHAT, CHOSEN_CHAT, REJECTED_CHAT],
        ExportFormat::Kto => &[PROMPT, COMPLETION, LABEL],
        ExportFormat::Redteam => return REDTEAM.iter().map(|f| f.column).collect(),
    };
    head.iter().copied().chain(PROVENANCE.iter().map(|f| f.column)).collect()
}

/// The `trl` row of a pair: `prompt`, `chosen`, `rejected`, then the provenance
/// columns. This is the one place a pair's flat column set is defined; the
/// other pair formats swap the first three cells and keep the rest.
pub fn flat_row(p: &PairRecord) -> Vec<(&'static str, Cell<'_>)> {
    let head = [
        (PROMPT.name, Cell::Str(&p.prompt)),
        (CHOSEN.name, Cell::Str(&p.chosen)),
        (REJECTED.name, Cell::Str(&p.rejected)),
    ];
    head.into_iter().chain(PROVENANCE.iter().map(|f| (f.column.name, (f.get)(p)))).collect()
}

/// The cells of `format`'s rows for one pair: one row, or two for `kto`. Each
/// is the [`flat_row`] with its first cells replaced.
fn pair_rows(format: ExportFormat, p: &PairRecord) -> Vec<Vec<Cell<'_>>> {
    fn replaced<'a>(p: &'a PairRecord, at: std::ops::Range<usize>, cells: &[Cell<'a>]) -> Vec<Cell<'a>> {
        let mut row: Vec<Cell<'a>> = flat_row(p).into_iter().map(|(_, cell)| cell).collect();
        row.splice(at, cells.iter().copied());
        row
    }
    match format {
        ExportFormat::Trl => vec![replaced(p, 0..0, &[])],
        ExportFormat::TrlChat => vec![replaced(
            p,
            0..3,
            &[
                Cell::Message { role: "user", content: &p.prompt },
                Cell::Message { role: "assistant", content: &p.chosen },
                Cell::Message { role: "assistant", content: &p.rejected },
            ],
        )],
        ExportFormat::Kto => vec![
            replaced(p, 1..3, &[Cell::Str(&p.chosen), Cell::Bool(true)]),
            replaced(p, 1..3, &[Cell::Str(&p.rejected), Cell::Bool(false)]),
        ],
        ExportFormat::Redteam => unreachable!("red-team rows come from RedTeamPrompt"),
    }
}

/// Where a table's rows come from.
#[derive(Debug)]
enum Source<'a> {
    Pairs(ExportFormat, &'a [PairRecord]),
    Redteam(&'a [RedTeamPrompt]),
}

/// The rows of one file, made on demand (a split is not copied into cells
/// all at once): cells in [`columns`] order.
#[derive(Debug)]
pub(crate) struct Table<'a> {
    pub columns: Vec<Column>,
    source: Source<'a>,
}

impl<'a> Table<'a> {
    /// The rows of a pair format (`trl`, `trl-chat`, `kto`) for one split.
    pub fn pairs(format: ExportFormat, pairs: &'a [PairRecord]) -> Table<'a> {
        debug_assert!(format != ExportFormat::Redteam, "red-team rows come from Table::redteam");
        Table { columns: columns(format), source: Source::Pairs(format, pairs) }
    }

    /// The `redteam` rows.
    pub fn redteam(prompts: &'a [RedTeamPrompt]) -> Table<'a> {
        Table { columns: columns(ExportFormat::Redteam), source: Source::Redteam(prompts) }
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        match self.source {
            Source::Pairs(ExportFormat::Kto, pairs) => 2 * pairs.len(),
            Source::Pairs(_, pairs) => pairs.len(),
            Source::Redteam(prompts) => prompts.len(),
        }
    }

    /// The rows, in file order.
    pub fn rows(&self) -> Box<dyn Iterator<Item = Vec<Cell<'a>>> + 'a> {
        match self.source {
            Source::Pairs(format, pairs) => Box::new(pairs.iter().flat_map(move |p| pair_rows(format, p))),
            Source::Redteam(prompts) => {
                Box::new(prompts.iter().map(|p| REDTEAM.iter().map(|f| (f.get)(p)).collect()))
            }
        }
    }

    /// Check what the writers assume: every cell has its column's type, floats
    /// are finite and integers fit `INT64`. `what` names the file for the error.
    pub fn check(&self, what: &str) -> Result<(), PipelineError> {
        let id_at = self.columns.iter().position(|c| c.name == "id");
        for (i, row) in self.rows().enumerate() {
            let id = match id_at.and_then(|at| row.get(at)) {
                Some(Cell::Str(id)) => *id,
                _ => "?",
            };
            let bad = |column: &str, message: String| {
                PipelineError::Invalid(format!(
                    "{what}: row {} (id `{id}`): column `{column}`: {message}",
                    i + 1
                ))
            };
            if row.len() != self.columns.len() {
                return Err(bad("-", format!("{} values for {} columns", row.len(), self.columns.len())));
            }
            for (column, cell) in self.columns.iter().zip(&row) {
                if !cell.is(column.dtype) {
                    return Err(bad(column.name, format!("{cell:?} is not a {:?}", column.dtype)));
                }
                match *cell {
                    Cell::Float(x) if !x.is_finite() => {
                        return Err(bad(column.name, format!("{x} is not a finite number")));
                    }
                    Cell::UInt(n) if i64::try_from(n).is_err() => {
                        return Err(bad(
                            column.name,
                            format!("{n} exceeds the int64 range of Parquet and Arrow"),
                        ));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Verdicts;

    fn pair() -> PairRecord {
        PairRecord {
            id: "item-1".into(),
            prompt: "[placeholder request]".into(),
            chosen: "[placeholder safe answer]".into(),
            rejected: "[placeholder unsafe answer]".into(),
            taxonomy_path: "m/u/l".into(),
            macro_category: "m".into(),
            micro_category: "u".into(),
            leaf: "l".into(),
            topic: "t".into(),
            topic_id: "m/u/l#0".into(),
            jailbreak_type: "role_play".into(),
            raw_text_format: "forum_post".into(),
            epoch: 2,
            expander_model: "e".into(),
            generator_model: "g".into(),
            safe_responder_model: "s".into(),
            unsafe_responder_model: "raw_text".into(),
            judge: "classifier".into(),
            seed: 7,
            verdicts: Verdicts {
                query_harmful: true,
                query_in_category: true,
                chosen_safe: true,
                chosen_not_over_refusal: false,
                rejected_unsafe: true,
                query_harm_score: 0.9,
                chosen_harm_score: 0.125,
                chosen_refusal_score: 0.5,
                rejected_harm_score: 0.75,
            },
        }
    }

    /// The flat row is `PairRecord`'s own serialisation with the verdicts
    /// spread: a new record field without a column fails here.
    #[test]
    fn flat_row_covers_every_record_field() {
        let p = pair();
        let Value::Object(mut expected) = serde_json::to_value(&p).unwrap() else { panic!("not an object") };
        let Some(Value::Object(verdicts)) = expected.remove("verdicts") else { panic!("no verdicts") };
        assert_eq!(verdicts.len(), VERDICT_COLUMNS.len(), "a Verdicts field has no column");
        for (column, field) in VERDICT_COLUMNS {
            expected.insert(column.into(), verdicts[field].clone());
        }
        let row = flat_row(&p);
        let got: serde_json::Map<String, Value> =
            row.iter().map(|(k, c)| (k.to_string(), c.to_json())).collect();
        assert_eq!(got.len(), row.len(), "duplicate column names");
        assert_eq!(got, expected);
        let names: Vec<&str> = row.iter().map(|(k, _)| *k).collect();
        let cols: Vec<&str> = columns(ExportFormat::Trl).iter().map(|c| c.name).collect();
        assert_eq!(names, cols);
        assert_eq!(&names[..4], ["prompt", "chosen", "rejected", "id"]);
        let verdict_names: Vec<&str> = VERDICT_COLUMNS.iter().map(|(c, _)| *c).collect();
        assert_eq!(&names[names.len() - 9..], verdict_names.as_slice());
    }

    #[test]
    fn redteam_columns_cover_every_prompt_field() {
        let p = RedTeamPrompt::from((&pair(), "test"));
        let Value::Object(expected) = serde_json::to_value(&p).unwrap() else { panic!("not an object") };
        let table = Table::redteam(std::slice::from_ref(&p));
        let rows: Vec<_> = table.rows().collect();
        assert_eq!((rows.len(), table.len()), (1, 1));
        let got: serde_json::Map<String, Value> =
            table.columns.iter().zip(&rows[0]).map(|(c, v)| (c.name.to_string(), v.to_json())).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn check_rejects_what_parquet_cannot_hold() {
        let mut p = pair();
        p.seed = u64::MAX;
        let pairs = [p];
        let err = Table::pairs(ExportFormat::Trl, &pairs).check("trl/train").unwrap_err().to_string();
        assert!(err.contains("row 1 (id `item-1`): column `seed`"), "{err}");
        let mut p = pair();
        p.verdicts.chosen_harm_score = f64::NAN;
        let pairs = [p];
        let err = Table::pairs(ExportFormat::Kto, &pairs).check("kto/test").unwrap_err().to_string();
        assert!(err.contains("column `chosen_harm_score`: NaN is not a finite number"), "{err}");
        assert!(Table::pairs(ExportFormat::TrlChat, &[pair()]).check("x").is_ok());
    }
}
