//! Plain-text views of a taxonomy for the command line. Each returns the whole text,
//! ending in a newline; the CLI prints it as is (and offers `--json` on the model).

use std::fmt::Write as _;

use crate::{LeafRef, MappingTarget, Taxonomy, TaxonomyError};

/// The taxonomy as an indented tree, limited to `prefix` (see [`Taxonomy::select`]).
///
/// ```text
/// tiny v1: 1 macro, 1 micro and 2 leaf categories
/// crime: Crime (1 micro category, 2 leaves)
///   cyber: Cybercrime [crime_cyber] (2 leaves)
///     account_takeover: Account takeover
///     malware: Malware
/// ```
///
/// With `with_descriptions`, each node is followed by its description, indented four
/// spaces deeper than the node.
pub fn render_tree(tax: &Taxonomy, prefix: &str, with_descriptions: bool) -> Result<String, TaxonomyError> {
    let leaves = tax.select(prefix)?;
    let groups = group(&leaves);
    let micro_count: usize = groups.iter().map(|(_, micros)| micros.len()).sum();
    let mut out = format!(
        "{}: {} macro, {} micro and {} leaf categories",
        title(tax),
        groups.len(),
        micro_count,
        leaves.len()
    );
    let shown = prefix.trim().trim_matches('/');
    if !shown.is_empty() {
        let _ = write!(out, " under `{shown}`");
    }
    out.push('\n');

    for (macro_ref, micros) in &groups {
        let m = macro_ref.macro_cat;
        let leaf_total: usize = micros.iter().map(|leaves| leaves.len()).sum();
        let _ = writeln!(
            out,
            "{}: {} ({}, {})",
            m.id,
            m.name,
            plural(micros.len(), "micro category", "micro categories"),
            plural(leaf_total, "leaf", "leaves")
        );
        describe(&mut out, with_descriptions, 4, &m.description);
        for leaves in micros {
            let u = leaves[0].micro;
            let _ = writeln!(
                out,
                "  {}: {} [{}] ({})",
                u.id,
                u.name,
                leaves[0].alert_label(),
                plural(leaves.len(), "leaf", "leaves")
            );
            describe(&mut out, with_descriptions, 6, &u.description);
            for leaf in leaves.iter() {
                let _ = writeln!(out, "    {}: {}", leaf.leaf.id, leaf.leaf.name);
                describe(&mut out, with_descriptions, 8, &leaf.leaf.description);
            }
        }
    }
    Ok(out)
}

/// Counts per level, per macro and micro category, and mapping coverage.
pub fn render_stats(tax: &Taxonomy) -> String {
    let stats = tax.stats();
    let mut out = format!("{} ({})\n", title(tax), stats.origin);
    let _ = writeln!(out, "macro categories: {}", stats.macros);
    let _ = writeln!(out, "micro categories: {}", stats.micros);
    let _ = writeln!(out, "leaf categories: {}", stats.leaves);
    let _ = writeln!(
        out,
        "leaves per micro category: min {}, max {}",
        stats.min_leaves_per_micro, stats.max_leaves_per_micro
    );

    out.push_str("\nper macro category:\n");
    let mut rows = vec![vec!["macro".to_string(), "micros".to_string(), "leaves".to_string()]];
    rows.extend(
        stats.per_macro.iter().map(|m| vec![m.id.clone(), m.micros.to_string(), m.leaves.to_string()]),
    );
    table(&mut out, &rows, &[false, true, true]);

    out.push_str("\nper micro category:\n");
    let mut rows = vec![vec!["micro".to_string(), "alert label".to_string(), "leaves".to_string()]];
    rows.extend(
        stats.per_micro.iter().map(|u| vec![u.path.clone(), u.alert_label.clone(), u.leaves.to_string()]),
    );
    table(&mut out, &rows, &[false, false, true]);

    out.push_str("\nmapping coverage:\n");
    let key_width = width(stats.coverage.iter().map(|c| c.target.key().len()));
    for c in &stats.coverage {
        let _ = writeln!(
            out,
            "  {:<key_width$}  {}/{} micro categories mapped, {}/{} {} categories used",
            c.target.key(),
            c.mapped_micros,
            c.total_micros,
            c.used_categories,
            c.total_categories,
            c.target.title()
        );
    }
    out
}

/// Each micro category's mapping to `target`, then the target categories that no micro
/// category maps to.
pub fn render_mapping(tax: &Taxonomy, target: MappingTarget) -> String {
    let rows = tax.mapping(target);
    let mut out = format!("{} -> {} ({})\n", title(tax), target.title(), target.key());
    let path_width = width(rows.iter().map(|(path, _, _)| path.len()));
    let label_width = width(rows.iter().map(|(_, label, _)| label.len()));
    for (path, label, values) in &rows {
        let shown = if values.is_empty() { "-".to_string() } else { values.join(", ") };
        let _ = writeln!(out, "  {path:<path_width$}  {label:<label_width$}  {shown}");
    }
    let mapped = rows.iter().filter(|(_, _, values)| !values.is_empty()).count();
    let _ = writeln!(out, "mapped: {mapped}/{} micro categories", rows.len());

    let unused: Vec<&str> = target
        .categories()
        .into_iter()
        .filter(|category| !rows.iter().any(|(_, _, values)| values.iter().any(|v| v == category)))
        .collect();
    if unused.is_empty() {
        let _ = writeln!(out, "every {} category is mapped to", target.title());
    } else {
        let _ = writeln!(out, "{} categories no micro category maps to ({}):", target.title(), unused.len());
        for category in unused {
            let _ = writeln!(out, "  {}", target.describe(category));
        }
    }
    out
}

/// Consecutive leaves grouped by macro, then by micro (leaves come in file order).
fn group<'a, 'b>(leaves: &'b [LeafRef<'a>]) -> Vec<(LeafRef<'a>, Vec<&'b [LeafRef<'a>]>)> {
    let mut groups: Vec<(LeafRef<'a>, Vec<&'b [LeafRef<'a>]>)> = Vec::new();
    for macro_chunk in leaves.chunk_by(|a, b| std::ptr::eq(a.macro_cat, b.macro_cat)) {
        let micros = macro_chunk.chunk_by(|a, b| std::ptr::eq(a.micro, b.micro)).collect();
        groups.push((macro_chunk[0], micros));
    }
    groups
}

fn describe(out: &mut String, enabled: bool, indent: usize, description: &str) {
    if enabled && !description.is_empty() {
        let _ = writeln!(out, "{:indent$}{description}", "");
    }
}

fn title(tax: &Taxonomy) -> String {
    if tax.version.is_empty() {
        tax.name.clone()
    } else {
        format!("{} v{}", tax.name, tax.version)
    }
}

fn plural(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

fn width(lengths: impl Iterator<Item = usize>) -> usize {
    lengths.max().unwrap_or(0)
}

/// Writes `rows` as columns two spaces apart, indented two spaces; `right[i]` aligns
/// column `i` to the right. The last column is not padded on the left when left-aligned.
fn table(out: &mut String, rows: &[Vec<String>], right: &[bool]) {
    let columns = right.len();
    let widths: Vec<usize> =
        (0..columns).map(|i| width(rows.iter().map(|row| row[i].chars().count()))).collect();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let w = widths[i];
            if right[i] {
                let _ = write!(line, "  {cell:>w$}");
            } else if i + 1 == columns {
                let _ = write!(line, "  {cell}");
            } else {
                let _ = write!(line, "  {cell:<w$}");
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
}
