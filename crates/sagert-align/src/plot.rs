//! Plain SVG line charts for a run's summary (loss and reward curves), with no dependencies.
//!
//! [`line_chart`] draws one or more series on shared axes with "nice" ticks (steps of 1, 2 or 5
//! times a power of ten), a legend and a title. The output is a self-contained SVG document that
//! browsers and report viewers show as is.

use std::fmt::Write as _;

/// One named curve: `(x, y)` points in drawing order; non-finite points are skipped.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// The legend entry.
    pub name: &'a str,
    /// The points, in the order the line joins them.
    pub points: &'a [(f64, f64)],
}

/// Width of the whole image.
const WIDTH: f64 = 720.0;
/// Height of the whole image.
const HEIGHT: f64 = 420.0;
/// Space left of the plot area (tick labels and the y label).
const LEFT: f64 = 80.0;
/// Space above the plot area (the title).
const TOP: f64 = 40.0;
/// Space below the plot area (tick labels and the x label).
const BOTTOM: f64 = 56.0;
/// About how many ticks an axis gets.
const TARGET_TICKS: f64 = 6.0;
/// Line colours (matplotlib's tab10), reused with a dash pattern past ten series.
const COLOURS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf",
];
/// Dash patterns for the second, third... round of colours.
const DASHES: [&str; 3] = ["6 3", "2 3", "8 3 2 3"];

/// A self-contained SVG line chart of `series` with a title, axis labels, ticks at round
/// numbers, a legend and one polyline per series in distinct colours.
///
/// Non-finite points are skipped; a series with a single point gets a dot, one with none only a
/// legend entry, and a chart with no finite point at all says "no data". A single point or a
/// constant series gets a range around its value. Text is escaped for XML.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> String {
    let finite: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect())
        .collect();
    let all = finite.iter().flatten();
    let x_range = bounds(all.clone().map(|p| p.0));
    let y_range = bounds(all.map(|p| p.1));
    let x_axis = Axis::new(x_range);
    let y_axis = Axis::new(y_range);

    let longest_name = series.iter().map(|s| s.name.chars().count()).max().unwrap_or(0);
    let right = if series.is_empty() { 24.0 } else { (48.0 + 7.0 * longest_name as f64).clamp(110.0, 280.0) };
    let plot = Rect { x: LEFT, y: TOP, w: WIDTH - LEFT - right, h: HEIGHT - TOP - BOTTOM };
    let to_px =
        |(x, y): (f64, f64)| (plot.x + plot.w * x_axis.frac(x), plot.y + plot.h * (1.0 - y_axis.frac(y)));

    let mut svg = String::new();
    // Writing to a String cannot fail; the `let _` below discard an always-Ok result.
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, "<title>{}</title>", escape(title));
    let _ = writeln!(svg, r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        plot.x + plot.w / 2.0,
        escape(title)
    );

    // Grid, ticks and tick labels.
    let _ = writeln!(svg, r##"<g stroke="#e0e0e0" stroke-width="1">"##);
    for &tick in &x_axis.ticks {
        let (px, _) = to_px((tick, y_axis.lo));
        let _ = writeln!(
            svg,
            r#"<line x1="{px:.2}" y1="{:.2}" x2="{px:.2}" y2="{:.2}"/>"#,
            plot.y,
            plot.bottom()
        );
    }
    for &tick in &y_axis.ticks {
        let (_, py) = to_px((x_axis.lo, tick));
        let _ =
            writeln!(svg, r#"<line x1="{:.2}" y1="{py:.2}" x2="{:.2}" y2="{py:.2}"/>"#, plot.x, plot.right());
    }
    let _ = writeln!(svg, "</g>");
    let _ = writeln!(svg, r##"<g fill="#333">"##);
    for &tick in &x_axis.ticks {
        let (px, _) = to_px((tick, y_axis.lo));
        let _ = writeln!(
            svg,
            r#"<text x="{px:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
            plot.bottom() + 16.0,
            format_tick(tick, x_axis.step)
        );
    }
    for &tick in &y_axis.ticks {
        let (_, py) = to_px((x_axis.lo, tick));
        let _ = writeln!(
            svg,
            r#"<text x="{:.2}" y="{:.2}" text-anchor="end">{}</text>"#,
            plot.x - 6.0,
            py + 4.0,
            format_tick(tick, y_axis.step)
        );
    }
    let _ = writeln!(svg, "</g>");
    let _ = writeln!(
        svg,
        r##"<rect x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="none" stroke="#333" stroke-width="1"/>"##,
        plot.x, plot.y, plot.w, plot.h
    );

    // Axis labels.
    let _ = writeln!(
        svg,
        r#"<text x="{:.2}" y="{:.2}" text-anchor="middle" font-size="13">{}</text>"#,
        plot.x + plot.w / 2.0,
        HEIGHT - 12.0,
        escape(x_label)
    );
    let (ly_x, ly_y) = (18.0, plot.y + plot.h / 2.0);
    let _ = writeln!(
        svg,
        r#"<text x="{ly_x:.2}" y="{ly_y:.2}" text-anchor="middle" font-size="13" transform="rotate(-90 {ly_x:.2} {ly_y:.2})">{}</text>"#,
        escape(y_label)
    );

    if finite.iter().all(Vec::is_empty) {
        let _ = writeln!(
            svg,
            r##"<text x="{:.2}" y="{:.2}" text-anchor="middle" fill="#888">no data</text>"##,
            plot.x + plot.w / 2.0,
            plot.y + plot.h / 2.0
        );
    }

    // One polyline per series, and the legend.
    let legend_x = plot.right() + 14.0;
    for (i, (s, points)) in series.iter().zip(&finite).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let dash = match i / COLOURS.len() {
            0 => String::new(),
            round => format!(r#" stroke-dasharray="{}""#, DASHES[(round - 1) % DASHES.len()]),
        };
        if !points.is_empty() {
            let coords: Vec<String> = points
                .iter()
                .map(|&p| {
                    let (px, py) = to_px(p);
                    format!("{px:.2},{py:.2}")
                })
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.8" stroke-linejoin="round"{dash} points="{}"><title>{}</title></polyline>"#,
                coords.join(" "),
                escape(s.name)
            );
        }
        if let [only] = points.as_slice() {
            let (px, py) = to_px(*only);
            let _ = writeln!(svg, r#"<circle cx="{px:.2}" cy="{py:.2}" r="3" fill="{colour}"/>"#);
        }
        let ly = plot.y + 12.0 + 20.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{legend_x:.2}" y1="{ly:.2}" x2="{:.2}" y2="{ly:.2}" stroke="{colour}" stroke-width="2.5"{dash}/>"#,
            legend_x + 22.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.2}" y="{:.2}">{}</text>"#,
            legend_x + 28.0,
            ly + 4.0,
            escape(s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A rectangle in image coordinates.
#[derive(Clone, Copy)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Rect {
    fn right(&self) -> f64 {
        self.x + self.w
    }

    fn bottom(&self) -> f64 {
        self.y + self.h
    }
}

/// The smallest and largest value, or `None` for no values.
fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// An axis: its drawn range (extended to whole ticks) and its ticks.
struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
    ticks: Vec<f64>,
}

impl Axis {
    /// An axis covering `range` (`None`: no data, drawn as 0..1). An empty range (one value)
    /// is widened around its value.
    fn new(range: Option<(f64, f64)>) -> Axis {
        let (mut lo, mut hi) = range.unwrap_or((0.0, 1.0));
        if hi - lo <= f64::EPSILON * lo.abs().max(hi.abs()) {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            (lo, hi) = (lo - pad, hi + pad);
        }
        let step = nice_step((hi - lo) / TARGET_TICKS);
        let first = (lo / step).floor();
        let last = (hi / step).ceil();
        let ticks: Vec<f64> = (0..=(last - first) as i64)
            .map(|i| {
                let tick = (first + i as f64) * step;
                // Keep 0 from printing as -0 or 1e-17.
                if tick.abs() < step * 1e-9 {
                    0.0
                } else {
                    tick
                }
            })
            .collect();
        Axis { lo: first * step, hi: last * step, step, ticks }
    }

    /// Where `v` lies on the axis, 0 at `lo` and 1 at `hi`.
    fn frac(&self, v: f64) -> f64 {
        (v - self.lo) / (self.hi - self.lo)
    }
}

/// The smallest of 1, 2, 5 or 10 times a power of ten that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let mantissa = raw / magnitude;
    let nice = if mantissa <= 1.0 + 1e-9 {
        1.0
    } else if mantissa <= 2.0 + 1e-9 {
        2.0
    } else if mantissa <= 5.0 + 1e-9 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// A tick label: as many decimals as the step needs, or scientific notation for very large or
/// very small steps (`2.5e-5`, `1.2e6`).
fn format_tick(value: f64, step: f64) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    if !(1e-4..1e6).contains(&step) {
        let text = format!("{value:.3e}");
        return match text.split_once('e') {
            Some((mantissa, exponent)) if mantissa.contains('.') => {
                format!("{}e{exponent}", mantissa.trim_end_matches('0').trim_end_matches('.'))
            }
            _ => text,
        };
    }
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize };
    format!("{value:.decimals$}")
}

/// `text` with XML's special characters escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small well-formedness check: every tag closes in order, attributes are quoted, and text
    /// holds no raw `<`, and `&` only as one of XML's five entities.
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        let mut roots = 0;
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open]);
            let close = rest[open..].find('>').expect("unclosed tag") + open;
            let tag = &rest[open + 1..close];
            rest = &rest[close + 1..];
            assert!(!tag.contains('<'), "`<` inside tag `{tag}`");
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack.pop().unwrap_or_else(|| panic!("`</{name}>` closes nothing"));
                assert_eq!(top, name.trim(), "mismatched closing tag");
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name = body.split_whitespace().next().expect("empty tag");
            check_attributes(&body[name.len()..]);
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(name.to_string());
            }
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed elements: {stack:?}");
        assert_eq!(roots, 1, "exactly one root element");
    }

    fn check_attributes(mut attrs: &str) {
        loop {
            attrs = attrs.trim_start();
            if attrs.is_empty() {
                return;
            }
            let eq = attrs.find('=').unwrap_or_else(|| panic!("attribute without value: {attrs}"));
            assert!(!attrs[..eq].contains(char::is_whitespace), "bad attribute name in {attrs}");
            let value = attrs[eq + 1..].strip_prefix('"').unwrap_or_else(|| panic!("unquoted: {attrs}"));
            let end = value.find('"').expect("unterminated attribute value");
            check_text(&value[..end]);
            attrs = &value[end + 1..];
        }
    }

    fn check_text(text: &str) {
        assert!(!text.contains('<'), "raw `<` in {text:?}");
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].iter().any(|e| entity.starts_with(e)),
                "bare `&` in {text:?}"
            );
        }
    }

    /// The point counts of the chart's polylines, in order.
    fn polyline_points(svg: &str) -> Vec<usize> {
        svg.split("<polyline")
            .skip(1)
            .map(|element| {
                let start = element.find("points=\"").expect("polyline without points") + 8;
                let end = element[start..].find('"').expect("unterminated points") + start;
                let coords: Vec<&str> = element[start..end].split_whitespace().collect();
                for pair in &coords {
                    let (x, y) = pair.split_once(',').expect("x,y pair");
                    let (x, y): (f64, f64) = (x.parse().expect("x"), y.parse().expect("y"));
                    assert!(
                        (0.0..=WIDTH).contains(&x) && (0.0..=HEIGHT).contains(&y),
                        "{pair} off the image"
                    );
                }
                coords.len()
            })
            .collect()
    }

    #[test]
    fn chart_has_each_series_as_a_polyline() {
        let train: Vec<(f64, f64)> = (0..50).map(|i| (i as f64, 2.0 / (1.0 + i as f64 * 0.1))).collect();
        let eval = [(10.0, 1.1), (20.0, 0.8), (30.0, f64::NAN), (40.0, 0.6), (f64::INFINITY, 0.5)];
        let svg = line_chart(
            "Loss",
            "step",
            "loss",
            &[Series { name: "train loss", points: &train }, Series { name: "held-out loss", points: &eval }],
        );
        assert_well_formed(&svg);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains(">train loss</text>") && svg.contains(">held-out loss</text>"));
        assert!(svg.contains(">Loss</text>") && svg.contains(">step</text>") && svg.contains(">loss</text>"));
        assert_eq!(polyline_points(&svg), [50, 3], "non-finite points skipped");
        assert!(svg.contains(COLOURS[0]) && svg.contains(COLOURS[1]), "distinct colours");
        // Ticks at round numbers: x 0..50 in tens, y 0..2 in halves.
        for label in [">0<", ">10<", ">50<", ">0.5<", ">1.5<", ">2.0<"] {
            assert!(svg.contains(label), "tick {label} missing");
        }
    }

    #[test]
    fn text_is_escaped() {
        let points = [(0.0, 1.0), (1.0, 2.0)];
        let svg =
            line_chart("a <b> & \"c\"", "x & y", "<y>", &[Series { name: "p<q & r's", points: &points }]);
        assert_well_formed(&svg);
        assert!(svg.contains("a &lt;b&gt; &amp; &quot;c&quot;"));
        assert!(svg.contains("p&lt;q &amp; r&apos;s"));
        assert!(svg.contains(">x &amp; y<") && svg.contains(">&lt;y&gt;<"));
        assert!(!svg.contains("<b>") && !svg.contains("p<q"));
    }

    #[test]
    fn empty_single_point_and_constant_series_draw() {
        let svg = line_chart("Nothing", "step", "loss", &[]);
        assert_well_formed(&svg);
        assert!(svg.contains("no data"));
        assert!(polyline_points(&svg).is_empty());

        let empty: [(f64, f64); 0] = [];
        let all_nan = [(f64::NAN, 1.0), (2.0, f64::NAN)];
        let svg = line_chart(
            "Empty",
            "step",
            "loss",
            &[Series { name: "empty", points: &empty }, Series { name: "nan", points: &all_nan }],
        );
        assert_well_formed(&svg);
        assert!(svg.contains(">empty</text>") && svg.contains(">nan</text>") && svg.contains("no data"));
        assert!(polyline_points(&svg).is_empty());

        let one = [(3.0, 0.5)];
        let svg = line_chart("One", "step", "loss", &[Series { name: "one", points: &one }]);
        assert_well_formed(&svg);
        assert_eq!(polyline_points(&svg), [1]);
        assert!(svg.contains("<circle"), "a single point gets a dot");
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "degenerate range leaks into coordinates");

        let flat = [(0.0, 0.0), (1.0, 0.0), (2.0, 0.0)];
        let svg = line_chart("Flat", "step", "loss", &[Series { name: "flat", points: &flat }]);
        assert_well_formed(&svg);
        assert_eq!(polyline_points(&svg), [3]);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn many_series_stay_distinct() {
        let points = [(0.0, 1.0), (1.0, 0.0)];
        let names: Vec<String> = (0..12).map(|i| format!("s{i}")).collect();
        let series: Vec<Series<'_>> = names.iter().map(|name| Series { name, points: &points }).collect();
        let svg = line_chart("Many", "x", "y", &series);
        assert_well_formed(&svg);
        assert_eq!(polyline_points(&svg), [2; 12]);
        assert!(svg.contains("stroke-dasharray"), "series past the palette are dashed");
    }

    #[test]
    fn nice_steps_and_ticks() {
        assert_eq!(nice_step(0.13), 0.2);
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(1.0), 1.0);
        assert_eq!(nice_step(1500.0), 2000.0);
        let axis = Axis::new(Some((0.03, 0.93)));
        assert_eq!(axis.step, 0.2);
        assert_eq!((axis.lo, axis.hi), (0.0, 1.0));
        let labels: Vec<String> = axis.ticks.iter().map(|&t| format_tick(t, axis.step)).collect();
        assert_eq!(labels, ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let axis = Axis::new(Some((-3.0, 7.0)));
        let labels: Vec<String> = axis.ticks.iter().map(|&t| format_tick(t, axis.step)).collect();
        assert_eq!(labels, ["-4", "-2", "0", "2", "4", "6", "8"]);
        // A constant value gets a range around it.
        let axis = Axis::new(Some((5.0, 5.0)));
        assert!(axis.lo < 5.0 && axis.hi > 5.0, "{} {}", axis.lo, axis.hi);
    }

    #[test]
    fn tick_labels_are_readable() {
        assert_eq!(format_tick(0.0, 0.1), "0");
        assert_eq!(format_tick(0.30000000000000004, 0.1), "0.3");
        assert_eq!(format_tick(-0.25, 0.05), "-0.25");
        assert_eq!(format_tick(1500.0, 500.0), "1500");
        assert_eq!(format_tick(2.5e-5, 5e-6), "2.5e-5");
        assert_eq!(format_tick(1e-4, 2e-5), "1e-4");
        assert_eq!(format_tick(3.0e7, 5e6), "3e7");
    }
}
