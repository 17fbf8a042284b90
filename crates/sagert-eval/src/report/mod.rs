//! The study's HTML report, drawn from [`ResultRow`]s alone.
//!
//! [`render_html`] returns one self-contained page: inline CSS, charts as
//! inline SVG, no script, no fonts or images fetched from anywhere. Its
//! sections are a summary table (one row per cell, each value with its 95%
//! interval and its judge's calibration), data-efficiency curves, category
//! heatmaps of the harmful-response rate, over-refusal against harmful rate,
//! and the capability change against the base model. A section without data
//! says so instead of drawing an empty chart.
//!
//! Cell names, categories, judges, datasets and the caller's [`ReportMeta`]
//! come from prompts and files an adversary may have written: every piece of
//! such text, in HTML and in SVG alike, goes through [`escape`].
//!
//! The output is deterministic: the same rows and meta give the same bytes.

mod charts;
mod svg;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::results::{Level, ResultRow};

/// What the report says about the study besides its rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportMeta {
    /// The study's name, for the title.
    pub study: String,
    /// The base models; when empty, the report lists those its rows name.
    pub base_models: Vec<String>,
    /// When the report was generated, as the caller wants it shown (the
    /// report never reads the clock, so that its output is reproducible).
    pub generated_at: String,
    /// The sagert version that produced the results.
    pub sagert_version: String,
}

impl ReportMeta {
    /// Meta for study `study` generated at `generated_at`, with this crate's
    /// version and the base models taken from the rows.
    pub fn new(study: impl Into<String>, generated_at: impl Into<String>) -> ReportMeta {
        ReportMeta {
            study: study.into(),
            base_models: Vec::new(),
            generated_at: generated_at.into(),
            sagert_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// `text` with HTML's and XML's special characters (`& < > " '`) replaced
/// by entities, safe in element content and in quoted attribute values, in
/// HTML and in inline SVG alike.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A value for a table or a label: three decimals below 10, fewer above,
/// `–` when not finite, never `-0.000`.
pub fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return "–".to_string();
    }
    let decimals = match v.abs() {
        a if a >= 1000.0 => 0,
        a if a >= 100.0 => 1,
        a if a >= 10.0 => 2,
        _ => 3,
    };
    let text = format!("{v:.decimals$}");
    match text.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => text,
    }
}

/// `value [lo, hi]` as the summary table shows it (`0.250 [0.200, 0.300]`).
pub fn format_interval(value: f64, lo: f64, hi: f64) -> String {
    format!("{} [{}, {}]", format_value(value), format_value(lo), format_value(hi))
}

/// `+0.012` or `-0.034`: a difference with its sign.
fn format_signed(v: f64) -> String {
    let text = format_value(v);
    if v.is_finite() && !text.starts_with('-') {
        format!("+{text}")
    } else {
        text
    }
}

/// One cell of the grid: a base model, or one aligned on a dataset of a size.
#[derive(Clone, Debug)]
struct CellInfo {
    base_model: String,
    name: String,
    dataset: String,
    size: u64,
    method: String,
    is_base: bool,
    /// `dataset@size` (`base` for the base model), qualified where needed.
    label: String,
    /// Index into [`Study::series`]; `None` for a base model.
    series: Option<usize>,
}

/// A metric on an evaluation set: one column of the summary, one chart.
#[derive(Clone, Debug)]
struct Measure {
    metric: String,
    eval_set: String,
    /// Several eval sets carry this metric, so titles name the set.
    name_set: bool,
}

impl Measure {
    /// `harmful rate (harmbench)`.
    fn title(&self) -> String {
        let name = metric_name(&self.metric);
        if self.name_set && !self.eval_set.is_empty() {
            format!("{name} ({})", self.eval_set)
        } else {
            name.to_string()
        }
    }
}

/// Where a metric sorts: the study's headline metrics first.
fn metric_rank(metric: &str) -> usize {
    ["harmful_rate", "over_refusal", "toxicity", "bias_gap", "acc", "acc_norm", "perplexity"]
        .iter()
        .position(|m| *m == metric)
        .unwrap_or(7)
}

/// A metric's name for people.
fn metric_name(metric: &str) -> &str {
    match metric {
        "harmful_rate" => "harmful rate",
        "over_refusal" => "over-refusal",
        "bias_gap" => "bias gap",
        "acc" => "capability acc",
        "acc_norm" => "capability acc_norm",
        other => other,
    }
}

/// `lower is better`, `higher is better`, or nothing for a metric not known.
fn direction(metric: &str) -> &'static str {
    match metric {
        "harmful_rate" | "over_refusal" | "toxicity" | "bias_gap" | "perplexity" => "lower is better",
        "acc" | "acc_norm" => "higher is better",
        _ => "",
    }
}

/// The rows indexed by measure, level, category and cell.
struct Study<'a> {
    cells: Vec<CellInfo>,
    /// Series labels (a dataset, qualified by method and base model where the
    /// grid has several); a series' colour is its index.
    series: Vec<String>,
    measures: Vec<Measure>,
    values: BTreeMap<(usize, Level, &'a str, usize), &'a ResultRow>,
    base_models: Vec<String>,
}

impl<'a> Study<'a> {
    fn new(rows: &'a [ResultRow]) -> Study<'a> {
        // Cells keyed by (base model, name), metadata from their first row.
        let mut by_key: BTreeMap<(&str, &str), &ResultRow> = BTreeMap::new();
        for row in rows {
            by_key.entry((&row.base_model, &row.cell)).or_insert(row);
        }
        let mut cells: Vec<CellInfo> = by_key
            .values()
            .map(|r| CellInfo {
                base_model: r.base_model.clone(),
                name: r.cell.clone(),
                dataset: r.dataset.clone(),
                size: r.size,
                method: r.method.clone(),
                is_base: r.dataset.is_empty() || r.cell == "base",
                label: String::new(),
                series: None,
            })
            .collect();
        cells.sort_by(|a, b| {
            (&a.base_model, !a.is_base, &a.dataset, a.size, &a.method, &a.name).cmp(&(
                &b.base_model,
                !b.is_base,
                &b.dataset,
                b.size,
                &b.method,
                &b.name,
            ))
        });
        let base_models: Vec<String> =
            cells.iter().map(|c| c.base_model.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let multi_base = base_models.len() > 1;
        let multi_method =
            cells.iter().filter(|c| !c.is_base).map(|c| &c.method).collect::<BTreeSet<_>>().len() > 1;
        let mut series: Vec<String> = Vec::new();
        for c in &mut cells {
            let mut qualifier = String::new();
            if multi_method && !c.is_base {
                qualifier.push_str(&format!(" · {}", c.method));
            }
            if multi_base {
                qualifier.push_str(&format!(" · {}", c.base_model));
            }
            if c.is_base {
                c.label = format!("base{qualifier}");
            } else {
                let name = format!("{}{qualifier}", c.dataset);
                c.label = format!("{}@{}{qualifier}", c.dataset, c.size);
                c.series = Some(series.iter().position(|s| *s == name).unwrap_or_else(|| {
                    series.push(name);
                    series.len() - 1
                }));
            }
        }
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for c in &cells {
            *seen.entry(c.label.clone()).or_default() += 1;
        }
        for c in &mut cells {
            if seen[&c.label] > 1 {
                c.label = format!("{} [{}]", c.label, c.name);
            }
        }

        let pairs: BTreeSet<(usize, &str, &str)> =
            rows.iter().map(|r| (metric_rank(&r.metric), r.metric.as_str(), r.eval_set.as_str())).collect();
        let mut sets_per_metric: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, metric, _) in &pairs {
            *sets_per_metric.entry(metric).or_default() += 1;
        }
        let measures: Vec<Measure> = pairs
            .iter()
            .map(|&(_, metric, eval_set)| Measure {
                metric: metric.to_string(),
                eval_set: eval_set.to_string(),
                name_set: sets_per_metric[metric] > 1,
            })
            .collect();

        let mut values = BTreeMap::new();
        for row in rows {
            let m = measures.iter().position(|m| m.metric == row.metric && m.eval_set == row.eval_set);
            let c = cells.iter().position(|c| c.base_model == row.base_model && c.name == row.cell);
            if let (Some(m), Some(c)) = (m, c) {
                values.entry((m, row.level, row.category.as_str(), c)).or_insert(row);
            }
        }
        Study { cells, series, measures, values, base_models }
    }

    /// The overall row of measure `m` for cell `c`.
    fn overall(&self, m: usize, c: usize) -> Option<&'a ResultRow> {
        self.values.get(&(m, Level::Overall, "all", c)).copied().or_else(|| {
            self.values
                .range((m, Level::Overall, "", 0)..(m, Level::Macro, "", 0))
                .find(|(k, _)| k.3 == c)
                .map(|(_, r)| *r)
        })
    }

    /// The base cell of cell `c`'s base model.
    fn base_of(&self, c: usize) -> Option<usize> {
        self.cells.iter().position(|b| b.is_base && b.base_model == self.cells[c].base_model)
    }

    /// The measures of `metric`, in order.
    fn measures_of<'s>(&'s self, metric: &'s str) -> impl Iterator<Item = usize> + 's {
        self.measures.iter().enumerate().filter(move |(_, m)| m.metric == metric).map(|(i, _)| i)
    }

    /// Whether measure `m` has a row at `level`.
    fn has_level(&self, m: usize, level: Level) -> bool {
        self.values.keys().any(|k| k.0 == m && k.1 == level)
    }
}

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; color: #222; margin: 0; background: #fafafa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 2em; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; font-size: 0.95em; }
dl.meta dt { color: #666; } dl.meta dd { margin: 0; }
nav a { margin-right: 14px; }
p.empty { color: #777; font-style: italic; }
p.note, .footnotes { color: #555; font-size: 0.9em; }
.scroll { overflow-x: auto; }
table.summary { border-collapse: collapse; font-size: 0.9em; }
table.summary th, table.summary td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; vertical-align: top; }
table.summary th { background: #f3f3f3; }
table.summary td { white-space: nowrap; }
table.summary td.name, table.summary th.name { text-align: left; }
table.summary tr.base td { background: #f7f7fb; }
table.summary .set { font-weight: normal; color: #777; font-size: 0.85em; }
table.summary .ci { color: #666; }
table.summary td.na { color: #aaa; text-align: center; }
figure { margin: 12px 0 24px; }
figcaption { color: #555; font-size: 0.9em; margin-top: 4px; }
";

/// The report: one self-contained HTML page for `rows` (see the module docs).
pub fn render_html(rows: &[ResultRow], meta: &ReportMeta) -> String {
    let study = Study::new(rows);
    let mut out = String::new();
    let title = if meta.study.is_empty() { "sagert study report".to_string() } else { meta.study.clone() };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} — sagert report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        escape(&title)
    );
    let _ = writeln!(out, "<h1>Study report: {}</h1>", escape(&title));
    let base_models = if meta.base_models.is_empty() { &study.base_models } else { &meta.base_models };
    let _ = writeln!(out, "<dl class=\"meta\">");
    let mut item = |k: &str, v: &str| {
        let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(v));
    };
    item("Study", &title);
    item("Base models", &if base_models.is_empty() { "–".to_string() } else { base_models.join(", ") });
    item("Generated", &meta.generated_at);
    item("sagert version", &meta.sagert_version);
    item(
        "Results",
        &format!("{} rows, {} cells, {} measures", rows.len(), study.cells.len(), study.measures.len()),
    );
    out.push_str("</dl>\n");
    out.push_str(
        "<nav><a href=\"#how-to-read\">How to read</a><a href=\"#summary\">Summary</a>\
         <a href=\"#curves\">Data efficiency</a><a href=\"#heatmap\">Categories</a>\
         <a href=\"#tradeoff\">Over-refusal vs harm</a><a href=\"#capability\">Capability</a></nav>\n",
    );
    out.push_str(HOW_TO_READ);
    summary(&mut out, &study);
    charts::curves(&mut out, &study);
    charts::heatmaps(&mut out, &study);
    charts::tradeoff(&mut out, &study);
    charts::capability(&mut out, &study);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

const HOW_TO_READ: &str = "<section id=\"how-to-read\">\n<h2>How to read this report</h2>\n\
<p>Each <em>cell</em> is a base model aligned on one dataset with a number of training pairs \
(<code>dataset@size</code>); <code>base</code> is the base model before alignment. Every value comes \
with its bootstrap 95% confidence interval, written <code>value [lo, hi]</code>: two cells whose \
intervals overlap much are not clearly different. Harmful rate, over-refusal, toxicity, bias gap and \
perplexity are better when lower; capability accuracy is better when higher. Judged rates name their \
judge and its agreement with human labels (accuracy and Cohen's &kappa;); an uncalibrated judge's \
rates deserve less trust. A capability change is a cell's accuracy minus its base model's, with an \
interval that combines both intervals as if independent (conservative for the same benchmark items).</p>\n\
</section>\n";

/// The summary table: one row per cell, one column per measure at the overall level.
fn summary(out: &mut String, study: &Study<'_>) {
    out.push_str("<section id=\"summary\">\n<h2>Summary</h2>\n");
    let columns: Vec<usize> =
        (0..study.measures.len()).filter(|&m| study.has_level(m, Level::Overall)).collect();
    if columns.is_empty() {
        out.push_str("<p class=\"empty\">No overall results: nothing to summarise.</p>\n</section>\n");
        return;
    }
    let multi_base = study.base_models.len() > 1;
    out.push_str("<div class=\"scroll\"><table class=\"summary\">\n<thead><tr><th class=\"name\">cell</th>");
    if multi_base {
        out.push_str("<th class=\"name\">base model</th>");
    }
    out.push_str("<th class=\"name\">dataset</th><th>size</th><th class=\"name\">method</th>");
    for &m in &columns {
        let measure = &study.measures[m];
        let _ = write!(out, "<th>{}", escape(metric_name(&measure.metric)));
        if !measure.eval_set.is_empty() {
            let _ = write!(out, "<br><span class=\"set\">{}</span>", escape(&measure.eval_set));
        }
        out.push_str("</th>");
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    let mut judges: Vec<String> = Vec::new();
    for (c, cell) in study.cells.iter().enumerate() {
        let _ = write!(
            out,
            "<tr class=\"{}\"><td class=\"name\">{}</td>",
            if cell.is_base { "base" } else { "cell" },
            escape(&cell.name)
        );
        if multi_base {
            let _ = write!(out, "<td class=\"name\">{}</td>", escape(&cell.base_model));
        }
        let size = if cell.is_base { "–".to_string() } else { cell.size.to_string() };
        let _ = write!(
            out,
            "<td class=\"name\">{}</td><td>{size}</td><td class=\"name\">{}</td>",
            escape(if cell.is_base { "–" } else { &cell.dataset }),
            escape(&cell.method)
        );
        for &m in &columns {
            let Some(row) = study.overall(m, c) else {
                out.push_str("<td class=\"na\">–</td>");
                continue;
            };
            let mark = row.judge.as_ref().map(|j| {
                let note = judge_note(j, row.judge_accuracy, row.judge_kappa);
                let at = judges.iter().position(|n| *n == note).unwrap_or_else(|| {
                    judges.push(note);
                    judges.len() - 1
                });
                format!("<sup>{}</sup>", at + 1)
            });
            let _ = write!(
                out,
                "<td title=\"n={}\">{} <span class=\"ci\">[{}, {}]</span>{}</td>",
                row.n,
                format_value(row.value),
                format_value(row.lo),
                format_value(row.hi),
                mark.unwrap_or_default()
            );
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table></div>\n");
    if !judges.is_empty() {
        out.push_str("<ol class=\"footnotes\">\n");
        for note in &judges {
            let _ = writeln!(out, "<li>{}</li>", escape(note));
        }
        out.push_str("</ol>\n");
    }
    let directions: Vec<String> = columns
        .iter()
        .map(|&m| &study.measures[m].metric)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|m| !direction(m).is_empty())
        .map(|m| format!("{}: {}", metric_name(m), direction(m)))
        .collect();
    if !directions.is_empty() {
        let _ = writeln!(out, "<p class=\"note\">{}.</p>", escape(&directions.join("; ")));
    }
    out.push_str("</section>\n");
}

/// `judge: classifier-harm (κ=0.61, acc 0.82)`, or `(uncalibrated)`.
pub fn judge_note(judge: &str, accuracy: Option<f64>, kappa: Option<f64>) -> String {
    let parts: Vec<String> = [kappa.map(|k| format!("κ={k:.2}")), accuracy.map(|a| format!("acc {a:.2}"))]
        .into_iter()
        .flatten()
        .collect();
    if parts.is_empty() {
        format!("judge: {judge} (uncalibrated)")
    } else {
        format!("judge: {judge} ({})", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_all_five() {
        assert_eq!(
            escape(r#"<a href="x" class='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; class=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn values_format_by_magnitude() {
        assert_eq!(format_value(0.25), "0.250");
        assert_eq!(format_value(-0.0001), "0.000");
        assert_eq!(format_value(12.345), "12.35");
        assert_eq!(format_value(f64::NAN), "–");
        assert_eq!(format_interval(0.25, 0.2, 0.3), "0.250 [0.200, 0.300]");
        assert_eq!(format_signed(0.01), "+0.010");
        assert_eq!(format_signed(-0.01), "-0.010");
    }

    #[test]
    fn judge_notes() {
        assert_eq!(judge_note("j", Some(0.82), Some(0.61)), "judge: j (κ=0.61, acc 0.82)");
        assert_eq!(judge_note("j", None, None), "judge: j (uncalibrated)");
    }
}
