//! The dataset card: `README.md` with the YAML front matter the Hugging Face
//! Hub and `datasets` read (license, task categories, tags, `configs` with
//! their data files, `dataset_info` with features and split sizes), then a
//! content warning, what the dataset is, its counts, its columns, the
//! manifest and how to load it.
//!
//! YAML strings are written as JSON strings, which YAML reads as
//! double-quoted scalars, so no value from the data can break the front matter.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::table::{provenance_columns, Column};
use super::ExportFormat;
use crate::record::{Dataset, Manifest, PairRecord};

/// One written split of a configuration.
pub(crate) struct SplitInfo {
    /// `train`, `test` or `prompts`.
    pub name: &'static str,
    /// Its rows.
    pub rows: u64,
    /// The size of its JSONL file (the card's `num_bytes`).
    pub bytes: u64,
}

/// One written configuration: a format, its columns and its splits.
pub(crate) struct ConfigInfo {
    pub format: ExportFormat,
    pub columns: Vec<Column>,
    /// In file order.
    pub splits: Vec<SplitInfo>,
}

impl ConfigInfo {
    /// The JSONL file of `split`, relative to the dataset directory.
    pub fn jsonl(&self, split: &str) -> String {
        format!("{}/{split}.jsonl", self.format)
    }

    /// The splits the card's front matter lists: those with rows, since
    /// `datasets` fails to load a split without any (from JSON or Parquet).
    pub fn loadable(&self) -> impl Iterator<Item = &SplitInfo> {
        self.splits.iter().filter(|s| s.rows > 0)
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A Markdown table cell: no pipes or line breaks.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn size_category(n: u64) -> &'static str {
    match n {
        0..1_000 => "n<1K",
        1_000..10_000 => "1K<n<10K",
        10_000..100_000 => "10K<n<100K",
        100_000..1_000_000 => "100K<n<1M",
        1_000_000..10_000_000 => "1M<n<10M",
        _ => "10M<n<100M",
    }
}

fn what_format(format: ExportFormat) -> &'static str {
    match format {
        ExportFormat::Trl => {
            "TRL standard preference format: `prompt`, `chosen`, `rejected` strings (DPO, ORPO, …)"
        }
        ExportFormat::TrlChat => {
            "TRL conversational preference format: `prompt` a `user` message, `chosen` and `rejected` \
             one `assistant` message each"
        }
        ExportFormat::Kto => {
            "TRL unpaired format (KTO): two rows per pair, `completion` the chosen response with \
             `label: true` or the rejected one with `label: false`"
        }
        ExportFormat::Redteam => {
            "Red-team prompt set: every prompt of both splits with its categories (`split` says \
             which), no responses"
        }
    }
}

/// The front matter. `configs` are those with at least one loadable split.
fn front_matter(out: &mut String, name: &str, license: &str, configs: &[&ConfigInfo], pairs: u64) {
    out.push_str("---\n");
    let _ = writeln!(out, "license: {license}");
    let _ = writeln!(out, "pretty_name: {}", quote(name));
    out.push_str("task_categories:\n- text-generation\n");
    out.push_str("tags:\n- safety\n- red-teaming\n- synthetic\n- preference\n- sage\n");
    let _ = writeln!(out, "size_categories:\n- {}", size_category(pairs));
    if configs.is_empty() {
        out.push_str("---\n\n");
        return;
    }
    out.push_str("configs:\n");
    for (i, c) in configs.iter().enumerate() {
        let _ = writeln!(out, "- config_name: {}", c.format);
        if i == 0 {
            out.push_str("  default: true\n");
        }
        out.push_str("  data_files:\n");
        for split in c.loadable() {
            let _ = writeln!(out, "  - split: {}\n    path: {}", split.name, c.jsonl(split.name));
        }
    }
    out.push_str("dataset_info:\n");
    for c in configs {
        let _ = writeln!(out, "- config_name: {}", c.format);
        out.push_str("  features:\n");
        for col in &c.columns {
            let _ = writeln!(out, "  - name: {}", col.name);
            match col.dtype.hf_dtype() {
                Some(dtype) => {
                    let _ = writeln!(out, "    dtype: {dtype}");
                }
                None => out.push_str(
                    "    list:\n    - name: role\n      dtype: string\n    - name: content\n      dtype: string\n",
                ),
            }
        }
        out.push_str("  splits:\n");
        for split in c.loadable() {
            let _ = writeln!(
                out,
                "  - name: {}\n    num_bytes: {}\n    num_examples: {}",
                split.name, split.bytes, split.rows
            );
        }
    }
    out.push_str("---\n\n");
}

fn counts_tables(out: &mut String, train: &[PairRecord], test: &[PairRecord]) {
    let mut macros: BTreeMap<&str, [u64; 2]> = BTreeMap::new();
    for (i, split) in [train, test].into_iter().enumerate() {
        for p in split {
            macros.entry(&p.macro_category).or_default()[i] += 1;
        }
    }
    out.push_str(
        "### Pairs by macro category\n\n| macro category | train | test | total |\n|---|---:|---:|---:|\n",
    );
    for (m, [a, b]) in &macros {
        let _ = writeln!(out, "| {} | {a} | {b} | {} |", cell(m), a + b);
    }
    let _ =
        writeln!(out, "| **total** | {} | {} | {} |\n", train.len(), test.len(), train.len() + test.len());

    let types: BTreeSet<&str> = train.iter().chain(test).map(|p| p.jailbreak_type.as_str()).collect();
    for (name, split) in [("train", train), ("test", test)] {
        let _ = writeln!(out, "### Pairs by leaf and jailbreak type: {name}\n");
        if split.is_empty() {
            out.push_str("(no pairs)\n\n");
            continue;
        }
        let mut leaves: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
        for p in split {
            *leaves.entry(&p.taxonomy_path).or_default().entry(&p.jailbreak_type).or_default() += 1;
        }
        out.push_str("| leaf |");
        for t in &types {
            let _ = write!(out, " {} |", cell(t));
        }
        out.push_str(" total |\n|---|");
        out.push_str(&"---:|".repeat(types.len() + 1));
        out.push('\n');
        for (leaf, by_type) in &leaves {
            let _ = write!(out, "| {} |", cell(leaf));
            for t in &types {
                let _ = write!(out, " {} |", by_type.get(t).copied().unwrap_or(0));
            }
            let _ = writeln!(out, " {} |", by_type.values().sum::<u64>());
        }
        out.push('\n');
    }
}

fn dtype_text(c: &Column) -> &'static str {
    c.dtype.hf_dtype().unwrap_or("list of {role, content}")
}

fn column_table(out: &mut String, columns: &[Column]) {
    out.push_str("| column | type | meaning |\n|---|---|---|\n");
    for c in columns {
        let _ = writeln!(out, "| `{}` | {} | {} |", c.name, dtype_text(c), cell(c.doc));
    }
    out.push('\n');
}

fn manifest_table(out: &mut String, m: &Manifest) {
    out.push_str("| | |\n|---|---|\n");
    for (key, value) in [
        ("run", m.run_name.as_str()),
        ("sagert version", m.sagert_version.as_str()),
        ("taxonomy", m.taxonomy.as_str()),
        ("config hash (SHA-256)", m.config_hash.as_str()),
    ] {
        if value.is_empty() {
            let _ = writeln!(out, "| {key} | (not recorded) |");
        } else {
            let _ = writeln!(out, "| {key} | `{}` |", cell(value));
        }
    }
    let _ = writeln!(out, "| seed | `{}` |", m.seed);
    for (role, model) in &m.models {
        let _ = writeln!(out, "| model: {} | `{}` |", cell(role), cell(model));
    }
    for (template, hash) in &m.template_hashes {
        let _ = writeln!(out, "| template: {} | `{}` |", cell(template), cell(hash));
    }
    out.push('\n');
}

fn how_to_load(out: &mut String, listed: &[&ConfigInfo]) {
    out.push_str("## How to load\n\n");
    let Some(c) = listed.first() else {
        out.push_str("The dataset has no rows to load.\n\n");
        return;
    };
    let files: Vec<String> =
        c.loadable().map(|s| format!("\"{0}\": \"{1}\"", s.name, c.jsonl(s.name))).collect();
    let parquet: Vec<String> =
        c.loadable().map(|s| format!("\"{0}\": \"{1}/{0}.parquet\"", s.name, c.format)).collect();
    out.push_str("```python\nfrom datasets import load_dataset\n\n");
    let _ =
        writeln!(out, "ds = load_dataset(\"path/to/this/directory\", \"{}\")  # or a Hub repo id", c.format);
    out.push_str("# or one format's files, paths relative to this directory:\n");
    let _ = writeln!(out, "ds = load_dataset(\"json\", data_files={{{}}})", files.join(", "));
    let _ = writeln!(out, "ds = load_dataset(\"parquet\", data_files={{{}}})", parquet.join(", "));
    out.push_str(
        "```\n\nThe `trl`, `trl-chat` and `kto` configs are what TRL's `DPOTrainer` and \
         `KTOTrainer` take as `train_dataset` / `eval_dataset`; the extra columns are ignored by \
         the trainers and kept for analysis.\n\n",
    );
}

/// The whole `README.md`. `manifest` is the dataset's, with `splits` filled in.
pub(crate) fn render(ds: &Dataset, manifest: &Manifest, license: &str, configs: &[ConfigInfo]) -> String {
    let pairs = (ds.train.len() + ds.test.len()) as u64;
    let listed: Vec<&ConfigInfo> = configs.iter().filter(|c| c.loadable().next().is_some()).collect();
    let mut out = String::new();
    front_matter(&mut out, &ds.name, license, &listed, pairs);
    let _ = writeln!(out, "# {}\n", ds.name.replace(['\n', '\r'], " "));
    out.push_str(
        "> **⚠️ CONTENT WARNING.** This dataset contains prompts that ask for harmful content, and \
         responses that comply with them (the `rejected` column, and `kto` rows with `label: false`). \
         It is for safety research only: training and evaluating models to refuse harmful requests \
         without over-refusing, and red-teaming. Do not use it to build systems that produce harmful \
         content.\n\n",
    );
    out.push_str("## What it is\n\n");
    let _ = writeln!(
        out,
        "A synthetic safety preference dataset generated by [sagert](https://example.invalid/sagert) \
         with the SAGE process: a harm taxonomy is expanded into topics, topics into raw text, raw \
         text into prompts in nine jailbreak styles, and each prompt is answered twice, safely \
         (`chosen`) and unsafely (`rejected`). A judge validates every pair (the prompt is harmful \
         and in its category, the chosen response is safe and not an over-refusal, the rejected \
         response is unsafe); only pairs that pass are kept, deduplicated and balanced over \
         categories. Train and test never share a topic.\n\n\
         Pairs: {} in `train`, {} in `test`.\n",
        ds.train.len(),
        ds.test.len()
    );
    out.push_str("## Configurations\n\n| config | format | splits | files |\n|---|---|---|---|\n");
    for c in configs {
        let splits: Vec<String> = c.splits.iter().map(|s| format!("{}: {}", s.name, s.rows)).collect();
        let files: Vec<String> = c
            .splits
            .iter()
            .map(|s| format!("`{0}/{1}.jsonl`, `{0}/{1}.parquet`", c.format, s.name))
            .collect();
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            c.format,
            what_format(c.format),
            splits.join(", "),
            files.join(", ")
        );
    }
    out.push_str(
        "\nEach split is written twice, as JSON Lines and as Parquet, with the same rows in the \
         same order; the card's `configs` point `datasets` at the JSON Lines files.\n\n",
    );
    let empty: Vec<String> = configs
        .iter()
        .flat_map(|c| {
            c.splits.iter().filter(|s| s.rows == 0).map(move |s| format!("`{}/{}`", c.format, s.name))
        })
        .collect();
    if !empty.is_empty() {
        let _ = writeln!(
            out,
            "Empty splits ({}) have their files, with the schema and no rows, but are left out of \
             the card's `configs`: `datasets` cannot load a split without rows.\n",
            empty.join(", ")
        );
    }
    out.push_str("## Counts\n\n");
    counts_tables(&mut out, &ds.train, &ds.test);
    out.push_str("## Columns\n\nEach pair format starts with its own three columns:\n\n");
    out.push_str("| config | column | type | meaning |\n|---|---|---|---|\n");
    for c in configs.iter().filter(|c| c.format != ExportFormat::Redteam) {
        for col in c.columns.iter().take(3) {
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {} | {} |",
                c.format,
                col.name,
                dtype_text(col),
                cell(col.doc)
            );
        }
    }
    out.push('\n');
    out.push_str(
        "then come the provenance columns, the same in every pair format (a `kto` pair's two rows \
         share them):\n\n",
    );
    column_table(&mut out, &provenance_columns());
    if let Some(c) = configs.iter().find(|c| c.format == ExportFormat::Redteam) {
        out.push_str("The `redteam` config has these columns only:\n\n");
        column_table(&mut out, &c.columns);
    }
    out.push_str(
        "## Provenance\n\nWhat produced the dataset (also in `manifest.json`, with the SHA-256 of \
         every prompt template):\n\n",
    );
    manifest_table(&mut out, manifest);
    how_to_load(&mut out, &listed);
    let _ = writeln!(out, "## License\n\n`{license}`.");
    out
}
