//! Dataset export: the directory that trainers, `datasets` and the Hub read.
//!
//! [`write_dataset_dir`] writes a [`Dataset`] as
//!
//! ```text
//! out/
//!   README.md                      dataset card: YAML front matter + content warning, counts, columns
//!   manifest.json                  the run's Manifest, `splits` filled from the data
//!   trl/{train,test}.{jsonl,parquet}        prompt, chosen, rejected (strings) + provenance
//!   trl-chat/{train,test}.{jsonl,parquet}   the same as {role, content} message lists
//!   kto/{train,test}.{jsonl,parquet}        prompt, completion, label: two rows per pair
//!   redteam/prompts.{jsonl,parquet}         every prompt with its categories and split, no responses
//! ```
//!
//! for the [`ExportFormat`]s asked for. Column sets are defined once, in
//! [`columns`] and [`flat_row`]; the JSONL and Parquet files of a split hold
//! the same rows in the same order, and an empty split still gets both files
//! (the card leaves it out of its `configs`: `datasets` fails on a split
//! without rows). Parquet is written without Arrow, through the `parquet`
//! crate's column writer; [`read_parquet_rows`] and [`read_pairs_jsonl`] read
//! exports back. `scripts/check-dataset.py` loads a directory with `datasets`
//! and checks it.
//!
//! The directory is replaced atomically: it is built in a hidden sibling
//! directory and swapped in only when complete, so a crash leaves the old
//! directory or the new one, never half of one (see [`write_dataset_dir`]).
//!
//! Neighbours: [`crate::record`] defines the records exported here.

mod card;
mod jsonl;
mod parquet_file;
mod table;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

pub use jsonl::read_pairs_jsonl;
pub use parquet_file::{read_parquet_rows, ROW_GROUP_ROWS};
pub use table::{columns, flat_row, provenance_columns, Cell, Column, Dtype};

use crate::record::{Dataset, RedTeamPrompt};
use crate::PipelineError;
use card::{ConfigInfo, SplitInfo};
use table::Table;

/// The license a dataset card declares unless [`ExportOptions::license`] says
/// otherwise: CC BY-NC 4.0, as PKU-SafeRLHF. The data holds harmful prompts
/// and unsafe responses meant for safety research, and the generating models'
/// terms often restrict commercial use of their outputs; the run's owner, not
/// the code, knows better, hence the option.
pub const DEFAULT_LICENSE: &str = "cc-by-nc-4.0";

/// One output format of the dataset directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExportFormat {
    /// TRL standard preference: `prompt`, `chosen`, `rejected` strings.
    Trl,
    /// TRL conversational preference: lists of `{role, content}` messages.
    TrlChat,
    /// TRL unpaired (KTO): `prompt`, `completion`, `label`, two rows per pair.
    Kto,
    /// Red-team prompts with their categories, no responses.
    Redteam,
}

impl ExportFormat {
    /// Every format, in the order the card lists them.
    pub const ALL: [ExportFormat; 4] =
        [ExportFormat::Trl, ExportFormat::TrlChat, ExportFormat::Kto, ExportFormat::Redteam];

    /// The name used on the command line, as the directory and as the card's config name.
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Trl => "trl",
            ExportFormat::TrlChat => "trl-chat",
            ExportFormat::Kto => "kto",
            ExportFormat::Redteam => "redteam",
        }
    }

    /// The splits (file stems) the format writes.
    pub fn splits(self) -> &'static [&'static str] {
        match self {
            ExportFormat::Redteam => &["prompts"],
            _ => &["train", "test"],
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ExportFormat {
    type Err = PipelineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExportFormat::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<&str> = ExportFormat::ALL.iter().map(|f| f.name()).collect();
            PipelineError::Invalid(format!(
                "unknown export format `{s}` (expected one of: {})",
                names.join(", ")
            ))
        })
    }
}

/// Choices of an export that the dataset itself does not carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportOptions {
    /// The card's `license`: a Hub license id such as `cc-by-nc-4.0`, `cc-by-4.0`,
    /// `mit` or `other` (lowercase letters, digits, `.` and `-`).
    pub license: String,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { license: DEFAULT_LICENSE.into() }
    }
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Every file, under the final directory, in the order written.
    pub files: Vec<PathBuf>,
    /// Rows per `format/split` (`trl/train`, `kto/test`, `redteam/prompts`, …).
    pub rows: BTreeMap<String, u64>,
}

/// [`write_dataset_dir_with`] with the default [`ExportOptions`].
pub fn write_dataset_dir(
    out: &Path,
    ds: &Dataset,
    formats: &[ExportFormat],
) -> Result<ExportSummary, PipelineError> {
    write_dataset_dir_with(out, ds, formats, &ExportOptions::default())
}

/// Write the dataset directory `out` with the given formats (duplicates are
/// ignored; the card lists them in [`ExportFormat::ALL`] order, the first one
/// the default config).
///
/// Atomic: the directory is built as a hidden sibling `.<name>.tmp-…`, every
/// file flushed to disk, then swapped with `out` in one `renameat2(RENAME_EXCHANGE)`
/// on Linux (or, where that is not supported, `out` is renamed aside and the
/// new directory renamed into place) and the old one deleted. An existing
/// `out` is replaced only once the new one is complete; a crash leaves the old
/// or the new directory at `out` (at worst, a hidden sibling to delete).
///
/// Refuses to replace an `out` that is not a directory, or a non-empty
/// directory without a `manifest.json` (something other than an earlier
/// export), so a mistyped path cannot delete unrelated files.
pub fn write_dataset_dir_with(
    out: &Path,
    ds: &Dataset,
    formats: &[ExportFormat],
    options: &ExportOptions,
) -> Result<ExportSummary, PipelineError> {
    let formats: Vec<ExportFormat> = ExportFormat::ALL.into_iter().filter(|f| formats.contains(f)).collect();
    if formats.is_empty() {
        return Err(PipelineError::Invalid("no export format given".into()));
    }
    let license = &options.license;
    if license.is_empty()
        || !license.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err(PipelineError::Invalid(format!(
            "license `{license}` is not a Hub license id (lowercase letters, digits, `.`, `-`)"
        )));
    }
    check_replaceable(out)?;
    let name = out
        .file_name()
        .ok_or_else(|| PipelineError::Invalid(format!("{}: not a directory name", out.display())))?
        .to_string_lossy()
        .into_owned();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(PipelineError::io("cannot create", &parent))?;
    let tmp = parent.join(sibling_name(&name, "tmp"));
    let built = std::fs::create_dir(&tmp)
        .map_err(PipelineError::io("cannot create", &tmp))
        .and_then(|()| write_contents(&tmp, ds, &formats, license));
    let summary = match built.and_then(|summary| swap_into_place(&tmp, out, &parent, &name).map(|()| summary))
    {
        Ok(summary) => summary,
        Err(e) => {
            // The half-built directory, or (after a swap) the old one.
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    sync_dir(&parent)?;
    Ok(ExportSummary { files: summary.files.iter().map(|f| out.join(f)).collect(), rows: summary.rows })
}

/// A unique hidden sibling name: `.<name>.<what>-<pid>-<n>`.
fn sibling_name(name: &str, what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(".{name}.{what}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn check_replaceable(out: &Path) -> Result<(), PipelineError> {
    let meta = match std::fs::symlink_metadata(out) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PipelineError::Io { op: "cannot inspect", path: out.into(), source: e }),
    };
    if !meta.is_dir() {
        return Err(PipelineError::Invalid(format!("{}: exists and is not a directory", out.display())));
    }
    let mut entries = std::fs::read_dir(out).map_err(PipelineError::io("cannot read", out))?;
    if entries.next().is_some() && !out.join("manifest.json").is_file() {
        return Err(PipelineError::Invalid(format!(
            "{}: refusing to replace a non-empty directory that is not a dataset export (no manifest.json)",
            out.display()
        )));
    }
    Ok(())
}

/// Put the complete directory `tmp` at `out`, replacing and deleting an existing
/// `out`. A failure to delete the old directory is an error too, though the new
/// one is in place by then (its message says so).
fn swap_into_place(tmp: &Path, out: &Path, parent: &Path, name: &str) -> Result<(), PipelineError> {
    if std::fs::symlink_metadata(out).is_err() {
        return std::fs::rename(tmp, out).map_err(PipelineError::io("cannot rename into place", out));
    }
    if exchange(tmp, out)? {
        // `tmp` now holds the old directory.
        return std::fs::remove_dir_all(tmp).map_err(PipelineError::io(OLD_NOT_REMOVED, tmp));
    }
    let old = parent.join(sibling_name(name, "old"));
    std::fs::rename(out, &old).map_err(PipelineError::io("cannot move aside", out))?;
    if let Err(e) = std::fs::rename(tmp, out) {
        let _ = std::fs::rename(&old, out);
        return Err(PipelineError::Io { op: "cannot rename into place", path: out.into(), source: e });
    }
    std::fs::remove_dir_all(&old).map_err(PipelineError::io(OLD_NOT_REMOVED, &old))
}

const OLD_NOT_REMOVED: &str = "wrote the new export, but cannot remove the old one at";

/// Swap `a` and `b` in one atomic step. `Ok(false)` where the system or the
/// file system cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<bool, PipelineError> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    use rustix::io::Errno;
    match renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(true),
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => Ok(false),
        Err(e) => Err(PipelineError::Io { op: "cannot swap into place", path: b.into(), source: e.into() }),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> Result<bool, PipelineError> {
    Ok(false)
}

/// Write every file into `dir`; the summary's paths are relative to it.
fn write_contents(
    dir: &Path,
    ds: &Dataset,
    formats: &[ExportFormat],
    license: &str,
) -> Result<ExportSummary, PipelineError> {
    let mut summary = ExportSummary::default();
    let mut configs = Vec::new();
    let redteam: Vec<RedTeamPrompt> = if formats.contains(&ExportFormat::Redteam) {
        let train = ds.train.iter().map(|p| (p, "train"));
        train.chain(ds.test.iter().map(|p| (p, "test"))).map(RedTeamPrompt::from).collect()
    } else {
        Vec::new()
    };
    for &format in formats {
        let sub = dir.join(format.name());
        std::fs::create_dir(&sub).map_err(PipelineError::io("cannot create", &sub))?;
        let mut splits = Vec::new();
        for &split in format.splits() {
            let table = match (format, split) {
                (ExportFormat::Redteam, _) => Table::redteam(&redteam),
                (_, "train") => Table::pairs(format, &ds.train),
                _ => Table::pairs(format, &ds.test),
            };
            let what = format!("{format}/{split}");
            table.check(&what)?;
            for ext in ["jsonl", "parquet"] {
                let file = PathBuf::from(format.name()).join(format!("{split}.{ext}"));
                if ext == "jsonl" {
                    jsonl::write(&dir.join(&file), &table)?;
                } else {
                    parquet_file::write(&dir.join(&file), &table)?;
                }
                summary.files.push(file);
            }
            let jsonl = dir.join(format.name()).join(format!("{split}.jsonl"));
            let bytes = std::fs::metadata(&jsonl).map_err(PipelineError::io("cannot inspect", &jsonl))?.len();
            summary.rows.insert(what, table.len() as u64);
            splits.push(SplitInfo { name: split, rows: table.len() as u64, bytes });
        }
        sync_dir(&sub)?;
        configs.push(ConfigInfo { format, columns: columns(format), splits });
    }

    let mut manifest = ds.manifest.clone();
    manifest.splits =
        BTreeMap::from([("train".into(), ds.train.len() as u64), ("test".into(), ds.test.len() as u64)]);
    let json = serde_json::to_string_pretty(&manifest)
        .map_err(|e| PipelineError::Invalid(format!("cannot serialise the manifest: {e}")))?;
    write_file(&dir.join("manifest.json"), format!("{json}\n").as_bytes())?;
    summary.files.push("manifest.json".into());

    write_file(&dir.join("README.md"), card::render(ds, &manifest, license, &configs).as_bytes())?;
    summary.files.push("README.md".into());
    sync_dir(dir)?;
    Ok(summary)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), PipelineError> {
    use std::io::Write;
    let mut file = std::fs::File::create(path).map_err(PipelineError::io("cannot create", path))?;
    file.write_all(bytes).map_err(PipelineError::io("cannot write", path))?;
    file.sync_all().map_err(PipelineError::io("cannot sync", path))
}

/// Flush a directory's entries to disk, so that a rename of it (or into it)
/// never survives a crash that its contents do not.
fn sync_dir(dir: &Path) -> Result<(), PipelineError> {
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(PipelineError::io("cannot sync", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
