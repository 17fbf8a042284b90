//! The HTML report: escaping of adversarial names, the summary table, each
//! section with and without data, no network references, determinism.

use sagert_eval::report::{render_html, ReportMeta};
use sagert_eval::results::{Level, ResultRow};

/// A row of cell `cell` (`base`, or `dataset@size` aligned with DPO).
fn row(cell: &str, metric: &str, level: Level, category: &str, value: f64, half: f64) -> ResultRow {
    let (dataset, size) = match cell.split_once('@') {
        Some((d, s)) => (d.to_string(), s.parse().unwrap()),
        None => (String::new(), 0),
    };
    let judged = matches!(metric, "harmful_rate" | "over_refusal");
    ResultRow {
        cell: cell.replace('@', "-n"),
        base_model: "smol-135m".into(),
        method: if size == 0 { "none".into() } else { "dpo".into() },
        dataset,
        size,
        metric: metric.into(),
        eval_set: if metric.starts_with("acc") { "arc_easy".into() } else { "harmbench".into() },
        level,
        category: category.into(),
        value,
        lo: value - half,
        hi: value + half,
        n: 200,
        judge: judged
            .then(|| if metric == "harmful_rate" { "classifier-harm" } else { "keyword-refusal" }.into()),
        judge_accuracy: (metric == "harmful_rate").then_some(0.82),
        judge_kappa: (metric == "harmful_rate").then_some(0.61),
    }
}

/// A small study: the base model and two datasets at three sizes each,
/// with every metric the report knows, macro and micro categories.
fn study() -> Vec<ResultRow> {
    let cells = [
        ("base", 0.40, 0.05, 0.50),
        ("sage@200", 0.25, 0.08, 0.55),
        ("sage@2000", 0.15, 0.10, 0.53),
        ("sage@20000", 0.10, 0.12, 0.52),
        ("pku@200", 0.35, 0.06, 0.45),
        ("pku@2000", 0.30, 0.07, 0.44),
        ("pku@20000", 0.20, 0.09, 0.46),
    ];
    let mut rows = Vec::new();
    for (cell, harm, refusal, acc) in cells {
        rows.push(row(cell, "harmful_rate", Level::Overall, "all", harm, 0.05));
        rows.push(row(cell, "harmful_rate", Level::Macro, "crime", harm + 0.1, 0.08));
        if !cell.starts_with("pku") {
            rows.push(row(cell, "harmful_rate", Level::Macro, "self-harm", harm - 0.05, 0.06));
        }
        rows.push(row(cell, "harmful_rate", Level::Micro, "crime/cyber", harm + 0.2, 0.1));
        rows.push(row(cell, "over_refusal", Level::Overall, "all", refusal, 0.02));
        rows.push(row(cell, "toxicity", Level::Overall, "all", harm / 4.0, 0.01));
        rows.push(row(cell, "bias_gap", Level::Overall, "all", 0.1, 0.03));
        rows.push(row(cell, "acc", Level::Overall, "all", acc, 0.02));
        rows.push(row(cell, "acc_norm", Level::Overall, "all", acc + 0.01, 0.02));
        rows.push(row(cell, "perplexity", Level::Overall, "all", 12.5, 0.4));
    }
    rows
}

fn meta() -> ReportMeta {
    ReportMeta {
        study: "sage-vs-pku".into(),
        base_models: vec!["smol-135m".into()],
        generated_at: "2025-01-01T00:00:00Z".into(),
        sagert_version: "0.1.0".into(),
    }
}

/// The text of section `id`, from its opening tag to its end.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html.find(&format!("<section id=\"{id}\">")).unwrap_or_else(|| panic!("no section {id}"));
    let end = html[start..].find("</section>").expect("section not closed") + start;
    &html[start..end]
}

/// `html` without its tags, entities left as they are.
fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Every tag name in `html` (opening or closing).
fn tag_names(html: &str) -> Vec<String> {
    html.split('<')
        .skip(1)
        .map(|rest| {
            rest.trim_start_matches(['/', '!'])
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase()
        })
        .collect()
}

#[test]
fn adversarial_names_are_escaped_everywhere() {
    let mut rows = study();
    for r in &mut rows {
        if r.cell == "sage-n200" {
            r.cell = "<script>alert(1)</script>".into();
        }
        if r.dataset == "pku" {
            r.dataset = "&amp;".into();
        }
        if r.category == "crime" {
            r.category = "\" onmouseover=\"x".into();
        }
        if r.judge.as_deref() == Some("classifier-harm") {
            r.judge = Some("</svg><img src=x onerror=alert(2)>".into());
        }
    }
    let mut meta = meta();
    meta.study = "<SCRIPT>alert('study')</SCRIPT>".into();
    meta.base_models = vec!["'><iframe src=javascript:alert(3)>".into()];
    let html = render_html(&rows, &meta);

    assert!(!html.to_ascii_lowercase().contains("<script"), "a script tag got through");
    assert!(!html.contains("onmouseover=\""), "an injected attribute got through");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("&quot; onmouseover=&quot;x"));
    assert!(html.contains("&lt;/svg&gt;&lt;img src=x onerror=alert(2)&gt;"));
    assert!(html.contains("&amp;amp;"));
    assert!(html.contains("&lt;SCRIPT&gt;alert(&#39;study&#39;)&lt;/SCRIPT&gt;"));
    assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
    assert!(html.matches("<svg").count() >= 8, "the charts are still drawn");
    // Only the tags the report writes itself.
    let allowed = [
        "",
        "doctype",
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "main",
        "h1",
        "h2",
        "h3",
        "dl",
        "dt",
        "dd",
        "nav",
        "a",
        "section",
        "p",
        "em",
        "code",
        "div",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "span",
        "br",
        "sup",
        "ol",
        "li",
        "figure",
        "figcaption",
        "svg",
        "rect",
        "line",
        "text",
        "polyline",
        "circle",
    ];
    for name in tag_names(&html) {
        assert!(allowed.contains(&name.as_str()), "unexpected tag <{name}>");
    }
}

#[test]
fn summary_has_one_row_per_cell_with_intervals_and_judges() {
    let html = render_html(&study(), &meta());
    let summary = section(&html, "summary");
    assert_eq!(summary.matches("<tr class=\"base\">").count(), 1);
    assert_eq!(summary.matches("<tr class=\"cell\">").count(), 6);
    let text = text_of(summary);
    // Base first, then by dataset (pku before sage) and size.
    let order: Vec<usize> =
        ["base", "pku-n200", "pku-n2000", "pku-n20000", "sage-n200", "sage-n2000", "sage-n20000"]
            .iter()
            .map(|c| text.find(c).unwrap_or_else(|| panic!("no row for {c}")))
            .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "rows out of order: {order:?}");
    for expected in
        ["0.400 [0.350, 0.450]", "0.250 [0.200, 0.300]", "0.080 [0.060, 0.100]", "12.50 [12.10, 12.90]"]
    {
        assert!(text.contains(expected), "no `{expected}` in the summary");
    }
    for header in ["harmful rate", "over-refusal", "toxicity", "bias gap", "capability acc", "perplexity"] {
        assert!(text.contains(header), "no column `{header}`");
    }
    assert!(text.contains("judge: classifier-harm (κ=0.61, acc 0.82)"));
    assert!(text.contains("judge: keyword-refusal (uncalibrated)"));
}

#[test]
fn every_section_is_drawn_when_there_is_data() {
    let html = render_html(&study(), &meta());
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("2025-01-01T00:00:00Z") && html.contains("0.1.0") && html.contains("smol-135m"));
    assert!(section(&html, "how-to-read").contains("[lo, hi]"));
    let curves = section(&html, "curves");
    // One chart per metric with aligned cells; sizes 200..20000 span 100x.
    assert_eq!(curves.matches("<svg").count(), 7);
    assert!(curves.contains("training pairs (log scale)"));
    assert!(
        curves.contains(">sage</text>") && curves.contains(">pku</text>") && curves.contains(">base</text>")
    );
    assert!(curves.contains("stroke-dasharray"), "the base model is a dashed line");
    let heatmap = section(&html, "heatmap");
    assert_eq!(heatmap.matches("<svg").count(), 2, "macro and micro heatmaps");
    assert!(heatmap.contains("by macro category") && heatmap.contains("by micro category"));
    assert!(heatmap.contains(">0.50</text>"), "base's crime rate printed in its cell");
    assert!(heatmap.contains("pku@200 · self-harm: not measured"), "missing cells are marked");
    let tradeoff = section(&html, "tradeoff");
    assert_eq!(tradeoff.matches("<circle").count(), 7, "one point per cell");
    let capability = section(&html, "capability");
    assert_eq!(capability.matches("<svg").count(), 2, "acc and acc_norm");
    assert!(capability.contains("+0.050 ["), "sage@200 gains 0.05 over the base");
    assert!(capability.contains("-0.050 ["), "pku@200 loses 0.05");
    assert!(capability.contains("#1a9850") && capability.contains("#d73027"), "gains green, losses red");
}

#[test]
fn sizes_within_ten_times_use_a_linear_axis() {
    let rows: Vec<ResultRow> = ["base", "sage@500", "sage@1000", "sage@2000"]
        .iter()
        .map(|c| row(c, "harmful_rate", Level::Overall, "all", 0.2, 0.05))
        .collect();
    let html = render_html(&rows, &meta());
    let curves = section(&html, "curves");
    assert!(curves.contains("training pairs</text>") && !curves.contains("log scale"));
}

#[test]
fn sections_without_data_say_so() {
    let base_only = vec![row("base", "harmful_rate", Level::Overall, "all", 0.4, 0.05)];
    let html = render_html(&base_only, &meta());
    assert!(section(&html, "summary").contains("<table"));
    assert!(section(&html, "curves").contains("No results for aligned cells"));
    assert!(section(&html, "curves").contains("Measured on base models only: harmful rate"));
    assert!(section(&html, "heatmap").contains("No harmful rate results at the macro level"));
    assert!(section(&html, "tradeoff").contains("needs both harmful_rate and over_refusal"));
    assert!(section(&html, "capability").contains("No capability results"));
    assert_eq!(html.matches("<svg").count(), 0, "no empty charts");

    let html = render_html(&[], &meta());
    assert!(section(&html, "summary").contains("No overall results"));
    assert!(section(&html, "heatmap").contains("No harmful_rate results"));
    assert_eq!(html.matches("<svg").count(), 0);

    // Accuracy measured on aligned cells only: nothing to subtract.
    let no_base = vec![row("sage@200", "acc", Level::Overall, "all", 0.5, 0.02)];
    let html = render_html(&no_base, &meta());
    assert!(section(&html, "capability").contains("no aligned cell has a base model measured"));
}

#[test]
fn the_page_references_nothing_outside_itself() {
    let html = render_html(&study(), &meta());
    let lower = html.to_ascii_lowercase();
    for scheme in ["http://", "https://"] {
        for (at, _) in lower.match_indices(scheme) {
            assert!(
                html[at..].starts_with("http://www.w3.org/2000/svg\""),
                "external reference: {}",
                &html[at..(at + 60).min(html.len())]
            );
        }
    }
    for needle in ["<link", "src=", "url(", "@import", "//cdn", "<script"] {
        assert!(!lower.contains(needle), "the page holds `{needle}`");
    }
    assert!(lower.contains("xmlns=\"http://www.w3.org/2000/svg\""));
}

#[test]
fn output_is_deterministic() {
    let rows = study();
    let first = render_html(&rows, &meta());
    // For looking at the page: `SAGERT_REPORT_FIXTURE_OUT=/tmp/report.html cargo test ... report`,
    // then `scripts/screenshot-report /tmp/report.html /tmp/report.png`.
    if let Some(path) = std::env::var_os("SAGERT_REPORT_FIXTURE_OUT") {
        std::fs::write(path, &first).unwrap();
    }
    assert_eq!(first, render_html(&rows, &meta()));
    let mut reversed = rows.clone();
    reversed.reverse();
    assert_eq!(first, render_html(&reversed, &meta()), "the rows' order does not matter");
}

#[test]
fn the_scatter_pairs_eval_sets_that_share_cells() {
    // harmful_rate on two eval sets; only the second has overall rows beside over_refusal.
    let mut rows = Vec::new();
    for cell in ["base", "sage@200"] {
        let mut micro = row(cell, "harmful_rate", Level::Micro, "crime/cyber", 0.3, 0.05);
        micro.eval_set = "advbench".into();
        rows.push(micro);
        let mut overall = row(cell, "harmful_rate", Level::Overall, "all", 0.2, 0.05);
        overall.eval_set = "harmbench".into();
        rows.push(overall);
        rows.push(row(cell, "over_refusal", Level::Overall, "all", 0.1, 0.02));
    }
    let html = render_html(&rows, &meta());
    let tradeoff = section(&html, "tradeoff");
    assert_eq!(tradeoff.matches("<circle").count(), 2, "{tradeoff}");
    assert!(tradeoff.contains("harmful rate (harmbench)"));
}
