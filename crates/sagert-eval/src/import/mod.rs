//! Importers of public safety datasets into sagert's formats.
//!
//! [`import`] reads one input (a file, or a directory holding a split; see
//! [Input formats](#input-formats)), converts every record, and writes
//!
//! - preference kinds ([`ImportKind::Pku`], [`ImportKind::Hh`], [`ImportKind::Trl`],
//!   [`ImportKind::PyritHarm`]): `OUT/<split>.jsonl`, TRL preference records that `sagert-align` reads as
//!   they are (`read_preferences(OUT, split)`);
//! - prompt kinds ([`ImportKind::Alert`], [`ImportKind::Advbench`],
//!   [`ImportKind::Harmbench`], [`ImportKind::Prompts`]): `OUT/prompts.jsonl`;
//! - both: `OUT/manifest.json` (kind, input files and their SHA-256, options,
//!   rows written, rows dropped by reason, counts per category, sagert version).
//!
//! # Records written
//!
//! Every record has, in this order, `id`, `prompt`, (`chosen`, `rejected`),
//! `category` (a micro path `macro/micro`, or `"unmapped"`), `macro_category`
//! (empty when unmapped), `source` (the kind's name, e.g. `pku-saferlhf`),
//! `source_categories` (the source's own labels, always a list),
//! `jailbreak_type` (ALERT's `attack_type`, only where the source has one), then
//! the source labels each importer keeps, under their source names. An input
//! column whose name is one of these output columns is kept as `input_<name>`.
//!
//! `id` is the source's id where it has one (ALERT `id`, HarmBench
//! `BehaviorID`, a TRL or plain file's `id`); PKU-SafeRLHF's is made from its
//! `response_0_sha256` and `response_1_sha256` and the prompt; otherwise it is
//! made from the content (16 hex digits of a SHA-256, see each importer). A
//! record whose id repeats with the same content is dropped as `duplicate`; the
//! same id with different content is an error.
//!
//! The per-source rules are documented in [`preference`] (PKU-SafeRLHF, HH-RLHF,
//! TRL), [`pyrit_harm`] (PyRIT's human-scored harm files) and [`prompts`] (ALERT, AdvBench, HarmBench, plain files); the mapping
//! of source labels onto the taxonomy in [`taxmap`].
//!
//! # Validation
//!
//! All input is read and checked before anything is written: a malformed
//! record (for `pyrit-harm`, a malformed response) stops the import with [`EvalError::Record`] (file, line, field),
//! [`EvalError::Syntax`] (a line or CSV record that cannot be decoded: bad JSON,
//! bad CSV, not UTF-8) or [`EvalError::File`] (empty input, a missing required
//! column, an unknown format), and no output file or directory is created.
//! Records that are well formed but unusable for training or evaluation
//! (identical responses, filtered by an option) are dropped and counted by
//! reason. Output is deterministic: the same input and options give the same
//! bytes.
//!
//! # Input formats
//!
//! See [`read`]: JSON Lines (`.jsonl`, `.json`, gzip-compressed `.gz`), Parquet,
//! CSV with a header (AdvBench, HarmBench, ALERT and plain files; not for
//! preference kinds, whose booleans and lists CSV cannot carry), and PyRIT seed
//! files (`.yaml`, `.yml`, `.prompt`; AdvBench and plain files). `pyrit-harm`
//! reads CSV only, and a directory as all the `*.csv` files in it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::{EvalError, Result};

pub mod preference;
pub mod prompts;
pub mod pyrit_harm;
pub mod read;
mod row;
pub mod taxmap;

use read::{file_error, Format, Input, InputFile, Layout, Row};
use taxmap::CategoryMap;

/// The dataset kinds [`import`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImportKind {
    /// PKU-SafeRLHF preference pairs (`pku-saferlhf`).
    Pku,
    /// Anthropic HH-RLHF preference dialogues (`hh-rlhf`).
    Hh,
    /// TRL preference data, standard or conversational (`trl`).
    Trl,
    /// PyRIT's human-scored harm files, paired by harm (`pyrit-harm`).
    PyritHarm,
    /// ALERT red-team prompts, normal or adversarial (`alert`).
    Alert,
    /// AdvBench harmful behaviours, CSV or PyRIT's seed file (`advbench`).
    Advbench,
    /// HarmBench behaviours CSV (`harmbench`).
    Harmbench,
    /// Any prompt file, columns chosen by a [`FieldMap`] (`prompts`).
    Prompts,
}

impl ImportKind {
    /// Every kind, in the order help texts list them.
    pub const ALL: [ImportKind; 8] = [
        ImportKind::Pku,
        ImportKind::Hh,
        ImportKind::Trl,
        ImportKind::PyritHarm,
        ImportKind::Alert,
        ImportKind::Advbench,
        ImportKind::Harmbench,
        ImportKind::Prompts,
    ];

    /// The kind's name on the command line and in records' `source`.
    pub fn name(self) -> &'static str {
        match self {
            ImportKind::Pku => "pku-saferlhf",
            ImportKind::Hh => "hh-rlhf",
            ImportKind::Trl => "trl",
            ImportKind::PyritHarm => "pyrit-harm",
            ImportKind::Alert => "alert",
            ImportKind::Advbench => "advbench",
            ImportKind::Harmbench => "harmbench",
            ImportKind::Prompts => "prompts",
        }
    }

    /// Whether the kind holds preference pairs (written as `<split>.jsonl`)
    /// rather than prompts (written as `prompts.jsonl`).
    pub fn is_preference(self) -> bool {
        matches!(self, ImportKind::Pku | ImportKind::Hh | ImportKind::Trl | ImportKind::PyritHarm)
    }

    /// The data file [`import`] writes for this kind.
    pub fn output_file(self, split: &str) -> String {
        if self.is_preference() {
            format!("{split}.jsonl")
        } else {
            "prompts.jsonl".to_string()
        }
    }
}

impl fmt::Display for ImportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ImportKind {
    type Err = EvalError;

    fn from_str(s: &str) -> Result<Self> {
        ImportKind::ALL.into_iter().find(|k| k.name().eq_ignore_ascii_case(s.trim())).ok_or_else(|| {
            let names: Vec<&str> = ImportKind::ALL.iter().map(|k| k.name()).collect();
            EvalError::Invalid(format!("unknown import kind `{s}` (expected one of: {})", names.join(", ")))
        })
    }
}

impl Serialize for ImportKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// Which input columns the `prompts` kind reads: `prompt=COL` (required),
/// `category=COL` and `id=COL` (optional).
///
/// Parsed from `prompt=goal,category=harm,id=key`; the default reads the
/// `prompt` column, no category and no id (ids are then made from the prompt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldMap {
    /// The column holding the prompt text.
    pub prompt: String,
    /// The column holding the record's harm label(s): a string or a list of strings.
    pub category: Option<String>,
    /// The column holding the record's id: a string or an integer.
    pub id: Option<String>,
}

impl Default for FieldMap {
    fn default() -> Self {
        FieldMap { prompt: "prompt".into(), category: None, id: None }
    }
}

impl FromStr for FieldMap {
    type Err = EvalError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |m: String| EvalError::Invalid(format!("field map `{s}`: {m}"));
        let (mut prompt, mut category, mut id) = (None, None, None);
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, column) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` is not KEY=COLUMN (keys: prompt, category, id)")))?;
            let (key, column) = (key.trim(), column.trim());
            if column.is_empty() {
                return Err(bad(format!("`{key}` has no column name")));
            }
            let slot = match key {
                "prompt" => &mut prompt,
                "category" => &mut category,
                "id" => &mut id,
                other => return Err(bad(format!("unknown key `{other}` (expected prompt, category or id)"))),
            };
            if slot.is_some() {
                return Err(bad(format!("`{key}` is given twice")));
            }
            *slot = Some(column.to_string());
        }
        let prompt = prompt.ok_or_else(|| bad("`prompt=COLUMN` is required".into()))?;
        Ok(FieldMap { prompt, category, id })
    }
}

impl fmt::Display for FieldMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "prompt={}", self.prompt)?;
        if let Some(c) = &self.category {
            write!(f, ",category={c}")?;
        }
        if let Some(i) = &self.id {
            write!(f, ",id={i}")?;
        }
        Ok(())
    }
}

/// Options of [`import`].
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The split: the output file of preference kinds (`<split>.jsonl`) and the
    /// file looked for in a directory input. Default `train`.
    pub split: String,
    /// PKU-SafeRLHF: keep only pairs where exactly one response is safe.
    pub only_one_safe: bool,
    /// HH-RLHF: the subset's name (`harmless-base`, ...), written as the
    /// records' `source_categories`; inferred from the input path when `None`.
    pub subset: Option<String>,
    /// `prompts`: the columns to read.
    pub field_map: FieldMap,
    /// The taxonomy that source labels are mapped onto.
    pub taxonomy: sagert_taxonomy::Taxonomy,
    /// Write at most this many records (the first, in input order, after
    /// filtering); the rest count as dropped with reason `limit`.
    pub limit: Option<usize>,
}

impl ImportOptions {
    /// The default options with `taxonomy`.
    pub fn new(taxonomy: sagert_taxonomy::Taxonomy) -> Self {
        ImportOptions {
            split: "train".into(),
            only_one_safe: false,
            subset: None,
            field_map: FieldMap::default(),
            taxonomy,
            limit: None,
        }
    }
}

impl Default for ImportOptions {
    /// The default options with the built-in taxonomy.
    fn default() -> Self {
        ImportOptions::new(sagert_taxonomy::Taxonomy::builtin())
    }
}

/// What [`import`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    /// The kind imported.
    pub kind: ImportKind,
    /// Records read from the input (`pyrit-harm`: scored responses).
    pub read: usize,
    /// Records written (`pyrit-harm`: pairs, one per objective at most).
    pub rows: usize,
    /// Records not written, by reason (`identical_responses`, `duplicate`, ...).
    pub dropped: BTreeMap<String, usize>,
    /// The files written: the data file, then `manifest.json`.
    pub files: Vec<PathBuf>,
    /// Records written per `category` (`unmapped` included).
    pub categories: BTreeMap<String, usize>,
}

impl ImportSummary {
    /// A few lines for the terminal: what was written, what was dropped and
    /// why, and the records per category.
    pub fn render(&self) -> String {
        let counts = |m: &BTreeMap<String, usize>| {
            m.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
        };
        // pyrit-harm reads scored responses and writes one pair per objective.
        let (read, written) = match self.kind {
            ImportKind::PyritHarm => ("responses read", "pairs written"),
            _ => ("records read", "written"),
        };
        let mut out = format!("{}: {} {read}, {} {written}", self.kind, self.read, self.rows);
        if !self.dropped.is_empty() {
            out.push_str(&format!(
                ", {} dropped ({})",
                self.dropped.values().sum::<usize>(),
                counts(&self.dropped)
            ));
        }
        out.push('\n');
        out.push_str(&format!("categories: {}\n", counts(&self.categories)));
        for file in &self.files {
            out.push_str(&format!("wrote {}\n", file.display()));
        }
        out
    }
}

/// A message of a conversational record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Message {
    pub role: &'static str,
    pub content: String,
}

/// A prompt or response: a string (standard form) or messages (conversational form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub(crate) enum Turns {
    Text(String),
    Messages(Vec<Message>),
}

/// One output record (see the module docs for the columns).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Record {
    pub id: String,
    pub prompt: Turns,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen: Option<Turns>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Turns>,
    pub category: String,
    pub macro_category: String,
    pub source: String,
    pub source_categories: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jailbreak_type: Option<String>,
    #[serde(flatten)]
    pub labels: Map<String, Value>,
}

/// What a converter makes of one input record.
pub(crate) enum Outcome {
    Keep(Box<Record>),
    Drop(&'static str),
}

/// What the converters share: the options, the category map and the input's shape.
pub(crate) struct Context<'a> {
    pub kind: ImportKind,
    pub opts: &'a ImportOptions,
    pub map: CategoryMap,
    pub format: Format,
    /// HH-RLHF's subset (from the options or the path), empty when unknown.
    pub subset: String,
}

/// Import `input` as `kind` into the directory `out`; see the module docs.
///
/// Nothing is written when any record is malformed. Existing files of the same
/// names in `out` are replaced (each atomically); other files are left alone.
pub fn import(kind: ImportKind, input: &Path, out: &Path, opts: &ImportOptions) -> Result<ImportSummary> {
    if kind.is_preference()
        && (opts.split.is_empty() || opts.split.contains(['/', '\\']) || opts.split.starts_with('.'))
    {
        return Err(EvalError::Invalid(format!("`{}` is not a split name", opts.split)));
    }
    let layout = if kind == ImportKind::PyritHarm { Layout::AllCsv } else { Layout::Split(&opts.split) };
    let data = read::read_input(input, layout)?;
    check_format(kind, &data)?;
    let subset = match (&opts.subset, kind) {
        (Some(s), _) => s.clone(),
        (None, ImportKind::Hh) => preference::infer_hh_subset(input).unwrap_or_default(),
        (None, _) => String::new(),
    };
    let ctx = Context { kind, opts, map: CategoryMap::new(&opts.taxonomy), format: data.format, subset };
    check_columns(&ctx, &data)?;

    // Each record on its own, or (`pyrit-harm`) all of them at once: (row, outcome)s.
    let outcomes: Box<dyn Iterator<Item = Result<(&Row, Outcome)>> + '_> = match kind {
        ImportKind::PyritHarm => Box::new(pyrit_harm::pairs(&data.rows, &ctx)?.into_iter().map(Ok)),
        _ => {
            let converter: fn(&Row, &Context<'_>) -> Result<Outcome> = match kind {
                ImportKind::Pku => preference::pku,
                ImportKind::Hh => preference::hh,
                ImportKind::Trl => preference::trl,
                ImportKind::Alert => prompts::alert,
                ImportKind::Advbench => prompts::advbench,
                ImportKind::Harmbench => prompts::harmbench,
                ImportKind::Prompts => prompts::plain,
                ImportKind::PyritHarm => unreachable!("pyrit-harm is paired above"),
            };
            let ctx = &ctx;
            Box::new(data.rows.iter().map(move |row| converter(row, ctx).map(|outcome| (row, outcome))))
        }
    };
    let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
    let mut kept: Vec<Record> = Vec::new();
    // id -> (content, place) of the first record with it.
    let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut trl_form: Option<(bool, String)> = None;
    for item in outcomes {
        let (row, outcome) = item?;
        let record = match outcome {
            Outcome::Keep(record) => *record,
            Outcome::Drop(reason) => {
                *dropped.entry(reason.to_string()).or_default() += 1;
                continue;
            }
        };
        if kind == ImportKind::Trl {
            preference::check_same_form(row, &record, &mut trl_form)?;
        }
        let content = serde_json::to_string(&(&record.prompt, &record.chosen, &record.rejected))
            .expect("turns serialise");
        match seen.get(&record.id) {
            Some((first, _)) if *first == content => {
                *dropped.entry("duplicate".into()).or_default() += 1;
                continue;
            }
            Some((_, place)) => {
                return Err(row.error(
                    "id",
                    format!(
                        "id `{}` is already used, with other content, by the record at {place}",
                        record.id
                    ),
                ))
            }
            None => {
                seen.insert(record.id.clone(), (content, format!("{}:{}", row.file.display(), row.line)));
            }
        }
        kept.push(record);
    }
    if let Some(limit) = opts.limit {
        if kept.len() > limit {
            *dropped.entry("limit".into()).or_default() += kept.len() - limit;
            kept.truncate(limit);
        }
    }
    if kept.is_empty() {
        let why: Vec<String> = dropped.iter().map(|(r, n)| format!("{r}: {n}")).collect();
        return Err(file_error(
            input,
            format!("no records left to write: {} read, all dropped ({})", data.rows.len(), why.join(", ")),
        ));
    }

    let mut categories: BTreeMap<String, usize> = BTreeMap::new();
    let mut jsonl = Vec::new();
    for record in &kept {
        *categories.entry(record.category.clone()).or_default() += 1;
        serde_json::to_writer(&mut jsonl, record).expect("records serialise");
        jsonl.push(b'\n');
    }
    let data_name = kind.output_file(&opts.split);
    let manifest = Manifest {
        kind,
        input: input.display().to_string(),
        input_sha256: combined_sha256(&data.files),
        input_files: data.files.iter().map(ManifestFile::from).collect(),
        options: ManifestOptions {
            split: kind.is_preference().then(|| opts.split.clone()),
            only_one_safe: (kind == ImportKind::Pku).then_some(opts.only_one_safe),
            subset: (kind == ImportKind::Hh).then(|| ctx.subset.clone()),
            field_map: (kind == ImportKind::Prompts).then(|| opts.field_map.to_string()),
            min_harm_spread: (kind == ImportKind::PyritHarm).then_some(pyrit_harm::MIN_HARM_SPREAD),
            limit: opts.limit,
        },
        taxonomy: format!("{} v{}", opts.taxonomy.name, opts.taxonomy.version),
        read: data.rows.len(),
        rows: kept.len(),
        dropped: dropped.clone(),
        categories: categories.clone(),
        files: vec![data_name.clone()],
        sagert_version: env!("CARGO_PKG_VERSION"),
    };
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    manifest_bytes.push(b'\n');

    let data_path = out.join(&data_name);
    let manifest_path = out.join("manifest.json");
    write(&data_path, &jsonl)?;
    write(&manifest_path, &manifest_bytes)?;
    Ok(ImportSummary {
        kind,
        read: data.rows.len(),
        rows: kept.len(),
        dropped,
        files: vec![data_path, manifest_path],
        categories,
    })
}

/// The formats each kind reads.
fn check_format(kind: ImportKind, data: &Input) -> Result<()> {
    let file = &data.files[0].path;
    match data.format {
        Format::Csv if kind == ImportKind::PyritHarm => Ok(()),
        _ if kind == ImportKind::PyritHarm => {
            Err(file_error(file, "pyrit-harm reads PyRIT's harm CSV files: expected a .csv file"))
        }
        Format::Csv if kind.is_preference() => Err(file_error(
            file,
            format!("{kind} is not read from CSV (its booleans and lists do not survive it): use JSONL or Parquet"),
        )),
        Format::Yaml if !matches!(kind, ImportKind::Advbench | ImportKind::Prompts) => Err(file_error(
            file,
            format!("PyRIT seed files are read by `advbench` and `prompts`, not by `{kind}`"),
        )),
        _ => Ok(()),
    }
}

/// For CSV and Parquet, whose columns are known up front: every required column is there.
fn check_columns(ctx: &Context<'_>, data: &Input) -> Result<()> {
    if ctx.kind == ImportKind::PyritHarm {
        return check_pyrit_columns(data);
    }
    let Some(columns) = &data.columns else { return Ok(()) };
    let required = match ctx.kind {
        ImportKind::Pku => preference::PKU_REQUIRED.iter().map(|c| c.to_string()).collect(),
        ImportKind::Hh => vec!["chosen".to_string(), "rejected".to_string()],
        ImportKind::Trl => vec!["prompt".to_string(), "chosen".to_string(), "rejected".to_string()],
        ImportKind::PyritHarm => Vec::new(),
        kind => prompts::required_columns(kind, ctx.opts, columns),
    };
    let missing: Vec<String> = required.into_iter().filter(|c| !columns.contains(c)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = |v: &[String]| v.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
    Err(file_error(
        &data.files[0].path,
        format!(
            "missing required column(s) {} for {} (columns: {})",
            list(&missing),
            ctx.kind,
            list(columns)
        ),
    ))
}

/// `pyrit-harm`: every file (their columns may differ) has the required ones.
fn check_pyrit_columns(data: &Input) -> Result<()> {
    for file in &data.files {
        let columns = file.columns.as_deref().unwrap_or_default();
        let missing = pyrit_harm::missing_columns(columns);
        if !missing.is_empty() {
            let list = |v: &[String]| v.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
            return Err(file_error(
                &file.path,
                format!(
                    "missing required column(s) {} for {} (a score column is `human_score` or \
                     `human_score_N`; columns: {})",
                    list(&missing),
                    ImportKind::PyritHarm,
                    list(columns)
                ),
            ));
        }
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    sagert_engine::io::write_atomic(path, bytes).map_err(|e| match e {
        sagert_engine::EngineError::Io { path, source, .. } => EvalError::Io { path, source },
        other => EvalError::File { file: path.to_path_buf(), message: other.to_string() },
    })
}

/// One file's SHA-256, or for several the SHA-256 of their `sha256  path` lines.
fn combined_sha256(files: &[InputFile]) -> String {
    use sha2::{Digest, Sha256};
    match files {
        [one] => one.sha256.clone(),
        many => {
            let mut hasher = Sha256::new();
            for f in many {
                hasher.update(format!("{}  {}\n", f.sha256, f.path.display()).as_bytes());
            }
            hex::encode(hasher.finalize())
        }
    }
}

#[derive(Serialize)]
struct Manifest {
    kind: ImportKind,
    input: String,
    input_sha256: String,
    input_files: Vec<ManifestFile>,
    options: ManifestOptions,
    taxonomy: String,
    read: usize,
    rows: usize,
    dropped: BTreeMap<String, usize>,
    categories: BTreeMap<String, usize>,
    files: Vec<String>,
    sagert_version: &'static str,
}

#[derive(Serialize)]
struct ManifestFile {
    path: String,
    sha256: String,
    records: usize,
}

impl From<&InputFile> for ManifestFile {
    fn from(f: &InputFile) -> Self {
        ManifestFile { path: f.path.display().to_string(), sha256: f.sha256.clone(), records: f.records }
    }
}

#[derive(Serialize)]
struct ManifestOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    split: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    only_one_safe: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field_map: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_harm_spread: Option<f64>,
    limit: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in ImportKind::ALL {
            assert_eq!(kind.name().parse::<ImportKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.name());
        }
        let err = "pku".parse::<ImportKind>().unwrap_err().to_string();
        assert!(err.contains("unknown import kind `pku`") && err.contains("pku-saferlhf"), "{err}");
    }

    #[test]
    fn field_maps_parse_and_reject_what_they_cannot_use() {
        let map: FieldMap = "prompt=goal, category=harm".parse().unwrap();
        assert_eq!(map, FieldMap { prompt: "goal".into(), category: Some("harm".into()), id: None });
        assert_eq!(map.to_string(), "prompt=goal,category=harm");
        for (text, wanted) in [
            ("category=harm", "`prompt=COLUMN` is required"),
            ("prompt=a,label=b", "unknown key `label`"),
            ("prompt=a,prompt=b", "`prompt` is given twice"),
            ("prompt=", "`prompt` has no column name"),
            ("prompt", "is not KEY=COLUMN"),
        ] {
            let err = text.parse::<FieldMap>().unwrap_err().to_string();
            assert!(err.contains(wanted), "{text}: {err}");
        }
    }
}
