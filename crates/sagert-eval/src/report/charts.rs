//! The report's chart sections: data-efficiency curves, category heatmaps,
//! over-refusal against harmful rate, and the capability change.
//!
//! Each section writes a `<section>` with one inline SVG per chart, or a
//! sentence saying which data it lacks.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::svg::{colour, heat, Anchor, Axis, Frame, Rect, Svg};
use super::{escape, format_interval, format_signed, format_value, Study};
use crate::results::{Level, ResultRow};

/// Grey of the base model's lines and points.
const BASE_COLOUR: &str = "#444";

/// The widest a label may be drawn, in characters; longer ones are cut with `…`
/// (the full text stays in the hover title).
const MAX_LABEL: usize = 36;

/// `text` cut to `max` characters.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}

/// About how wide `text` is drawn at `size` px, for laying out margins.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count().min(MAX_LABEL) as f64 * size * 0.6
}

/// A linear axis over `values`; one that starts at 0 when every value is a
/// fraction (rates), so that small rates are not blown up.
fn value_axis(values: impl Iterator<Item = f64>) -> Axis {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return Axis::linear(0.0, 1.0);
    }
    if lo >= 0.0 && hi <= 1.0 {
        Axis::linear(0.0, hi)
    } else {
        Axis::linear(lo, hi)
    }
}

/// The hover text of a row: `sage@200: 0.250 [0.200, 0.300], n=400`.
fn tip(label: &str, row: &ResultRow) -> String {
    format!("{label}: {}, n={}", format_interval(row.value, row.lo, row.hi), row.n)
}

/// One data-efficiency chart per measure with trained cells.
pub(super) fn curves(out: &mut String, study: &Study<'_>) {
    out.push_str("<section id=\"curves\">\n<h2>Data efficiency</h2>\n");
    let mut drawn = 0;
    let mut base_only = Vec::new();
    for (m, measure) in study.measures.iter().enumerate() {
        let points: Vec<(usize, &ResultRow)> = (0..study.cells.len())
            .filter(|&c| !study.cells[c].is_base && study.cells[c].size > 0)
            .filter_map(|c| study.overall(m, c).map(|r| (c, r)))
            .collect();
        if points.is_empty() {
            if (0..study.cells.len()).any(|c| study.overall(m, c).is_some()) {
                base_only.push(measure.title());
            }
            continue;
        }
        drawn += 1;
        let bases: Vec<(usize, &ResultRow)> = (0..study.cells.len())
            .filter(|&c| study.cells[c].is_base)
            .filter_map(|c| study.overall(m, c).map(|r| (c, r)))
            .collect();
        let svg = curve_chart(study, &measure.title(), &measure.metric, &points, &bases);
        let _ = write!(
            out,
            "<figure>\n<div class=\"scroll\">{svg}</div>\n<figcaption>{}: value against training pairs, one line \
             per dataset, bars are 95% intervals; the dashed line is the base model{}.</figcaption>\n</figure>\n",
            escape(&measure.title()),
            match super::direction(&measure.metric) {
                "" => String::new(),
                d => format!(" ({d})"),
            }
        );
    }
    if drawn == 0 {
        out.push_str(
            "<p class=\"empty\">No results for aligned cells: no data-efficiency curves to draw.</p>\n",
        );
    }
    if !base_only.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"note\">Measured on base models only: {}.</p>",
            escape(&base_only.join(", "))
        );
    }
    out.push_str("</section>\n");
}

fn curve_chart(
    study: &Study<'_>,
    title: &str,
    metric: &str,
    points: &[(usize, &ResultRow)],
    bases: &[(usize, &ResultRow)],
) -> String {
    let series: Vec<usize> = points
        .iter()
        .filter_map(|&(c, _)| study.cells[c].series)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let legend: Vec<String> = series
        .iter()
        .map(|&s| study.series[s].clone())
        .chain(bases.iter().map(|&(c, _)| study.cells[c].label.clone()))
        .collect();
    let right = legend.iter().map(|l| text_width(l, 12.0)).fold(0.0, f64::max).clamp(60.0, 240.0) + 50.0;
    let (width, height) = (560.0 + right, 380.0);
    let plot = Rect { x: 70.0, y: 36.0, w: width - 70.0 - right, h: height - 36.0 - 60.0 };

    let sizes: Vec<f64> = points.iter().map(|&(c, _)| study.cells[c].size as f64).collect();
    let (min, max) = sizes.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &s| (lo.min(s), hi.max(s)));
    let x = if max / min > 10.0 { Axis::log(min, max) } else { Axis::linear(min, max) };
    let y = value_axis(points.iter().chain(bases).flat_map(|(_, r)| [r.value, r.lo, r.hi]));
    let frame = Frame { plot, x, y };

    let mut svg = Svg::new(width, height, title);
    svg.text((plot.x + plot.w / 2.0, 22.0), Anchor::Middle, 15.0, "#111", title);
    for &(_, r) in bases {
        let (top, bottom) = (frame.py(r.hi), frame.py(r.lo));
        svg.rect(plot.x, top, plot.w, bottom - top, "#efefef", None, None);
    }
    let scale = if frame.x.is_log() { "training pairs (log scale)" } else { "training pairs" };
    frame.draw(&mut svg, scale, super::metric_name(metric));
    for &(c, r) in bases {
        let y = frame.py(r.value);
        svg.line((plot.x, y), (plot.right(), y), BASE_COLOUR, 1.5, Some("6 4"));
        svg.rect(plot.x, y - 4.0, plot.w, 8.0, "transparent", None, Some(&tip(&study.cells[c].label, r)));
    }
    let k = series.len() as f64;
    for (i, &s) in series.iter().enumerate() {
        let mut line: Vec<(f64, f64, usize, &ResultRow)> = points
            .iter()
            .filter(|&&(c, _)| study.cells[c].series == Some(s))
            .map(|&(c, r)| (study.cells[c].size as f64, r.value, c, r))
            .collect();
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Spread the series a little sideways so that their bars do not hide each other.
        let nudge = (i as f64 - (k - 1.0) / 2.0) * 3.0;
        let px: Vec<(f64, f64)> =
            line.iter().map(|&(x, v, _, _)| (frame.px(x) + nudge, frame.py(v))).collect();
        svg.polyline(&px, colour(s), 2.0, None);
        for (&(x, y), &(_, _, c, r)) in px.iter().zip(&line) {
            if r.lo.is_finite() && r.hi.is_finite() {
                svg.v_error_bar(x, frame.py(r.lo), frame.py(r.hi), colour(s));
            }
            svg.circle((x, y), 3.5, colour(s), Some(&tip(&study.cells[c].label, r)));
        }
    }
    let lx = plot.right() + 16.0;
    for (i, label) in legend.iter().enumerate() {
        let y = plot.y + 10.0 + 20.0 * i as f64;
        match series.get(i) {
            Some(&s) => svg.line((lx, y), (lx + 24.0, y), colour(s), 2.5, None),
            None => svg.line((lx, y), (lx + 24.0, y), BASE_COLOUR, 1.5, Some("6 4")),
        }
        svg.text((lx + 30.0, y + 4.0), Anchor::Start, 12.0, "#222", &shorten(label, MAX_LABEL));
    }
    svg.finish()
}

/// Heatmaps of the harmful rate by category: macro level, and micro where present.
pub(super) fn heatmaps(out: &mut String, study: &Study<'_>) {
    out.push_str("<section id=\"heatmap\">\n<h2>Harmful rate by category</h2>\n");
    let measures: Vec<usize> = study.measures_of("harmful_rate").collect();
    if measures.is_empty() {
        out.push_str("<p class=\"empty\">No harmful_rate results: no category heatmap.</p>\n</section>\n");
        return;
    }
    for m in measures {
        let title = study.measures[m].title();
        for level in [Level::Macro, Level::Micro] {
            if !study.has_level(m, level) {
                if level == Level::Macro {
                    let _ = writeln!(
                        out,
                        "<p class=\"empty\">No {} results at the macro level: no category heatmap.</p>",
                        escape(&title)
                    );
                }
                continue;
            }
            let svg = heatmap(study, m, level, &format!("{title} by {} category", level.name()));
            let _ = write!(
                out,
                "<figure>\n<div class=\"scroll\">{svg}</div>\n<figcaption>{} by {} category: darker is more \
                 harmful; grey cells were not measured. Hover a cell for its interval.</figcaption>\n</figure>\n",
                escape(&title),
                level.name()
            );
        }
    }
    out.push_str("</section>\n");
}

fn heatmap(study: &Study<'_>, m: usize, level: Level, title: &str) -> String {
    let keys: Vec<(&str, usize)> =
        study.values.keys().filter(|k| k.0 == m && k.1 == level).map(|k| (k.2, k.3)).collect();
    let categories: Vec<&str> = keys.iter().map(|k| k.0).collect::<BTreeSet<_>>().into_iter().collect();
    let cells: Vec<usize> = keys.iter().map(|k| k.1).collect::<BTreeSet<_>>().into_iter().collect();
    let vmax = keys
        .iter()
        .filter_map(|&(cat, c)| study.values.get(&(m, level, cat, c)))
        .map(|r| r.value)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let vmax = if vmax > 0.0 { vmax } else { 1.0 };

    let (cw, rh) = (48.0, 24.0);
    let left =
        cells.iter().map(|&c| text_width(&study.cells[c].label, 12.0)).fold(0.0, f64::max).clamp(50.0, 240.0)
            + 16.0;
    let longest = categories.iter().map(|c| text_width(c, 11.0)).fold(0.0, f64::max) * 0.72;
    let top = 40.0 + longest;
    // Wide enough for the grid and its rotated labels, the colour scale and the title.
    let width = (left + cw * categories.len() as f64 + longest.max(40.0) + 10.0)
        .max(left + 16.0 * 11.0 + 180.0)
        .max(title.chars().count() as f64 * 15.0 * 0.6 + 24.0);
    let height = top + rh * cells.len() as f64 + 56.0;

    let mut svg = Svg::new(width, height, title);
    svg.text((8.0, 20.0), Anchor::Start, 15.0, "#111", title);
    for (j, cat) in categories.iter().enumerate() {
        let x = left + cw * j as f64 + cw / 2.0;
        svg.text_rotated((x, top - 6.0), -45.0, Anchor::Start, 11.0, &shorten(cat, MAX_LABEL));
    }
    for (i, &c) in cells.iter().enumerate() {
        let y = top + rh * i as f64;
        svg.text(
            (left - 8.0, y + rh / 2.0 + 4.0),
            Anchor::End,
            12.0,
            "#222",
            &shorten(&study.cells[c].label, MAX_LABEL),
        );
        for (j, cat) in categories.iter().enumerate() {
            let x = left + cw * j as f64;
            match study.values.get(&(m, level, *cat, c)) {
                Some(r) => {
                    let t = r.value / vmax;
                    let tip = tip(&format!("{} · {cat}", study.cells[c].label), r);
                    svg.rect(x, y, cw, rh, &heat(t), Some("#fff"), Some(&tip));
                    let ink = if t > 0.55 { "#fff" } else { "#222" };
                    svg.text(
                        (x + cw / 2.0, y + rh / 2.0 + 4.0),
                        Anchor::Middle,
                        11.0,
                        ink,
                        &format!("{:.2}", r.value),
                    );
                }
                None => {
                    let tip = format!("{} · {cat}: not measured", study.cells[c].label);
                    svg.rect(x, y, cw, rh, "#d0d0d0", Some("#fff"), Some(&tip));
                    svg.text((x + cw / 2.0, y + rh / 2.0 + 4.0), Anchor::Middle, 11.0, "#777", "–");
                }
            }
        }
    }
    // The colour scale.
    let ly = top + rh * cells.len() as f64 + 20.0;
    for step in 0..=10 {
        svg.rect(left + 16.0 * step as f64, ly, 16.0, 12.0, &heat(step as f64 / 10.0), None, None);
    }
    svg.rect(left, ly, 16.0 * 11.0, 12.0, "none", Some("#999"), None);
    svg.text((left - 8.0, ly + 10.0), Anchor::End, 11.0, "#333", "0");
    svg.text((left + 16.0 * 11.0 + 6.0, ly + 10.0), Anchor::Start, 11.0, "#333", &format_value(vmax));
    svg.rect(left + 16.0 * 11.0 + 60.0, ly, 16.0, 12.0, "#d0d0d0", None, None);
    svg.text((left + 16.0 * 11.0 + 82.0, ly + 10.0), Anchor::Start, 11.0, "#333", "not measured");
    svg.finish()
}

/// Over-refusal against harmful rate, one labelled point per cell.
pub(super) fn tradeoff(out: &mut String, study: &Study<'_>) {
    out.push_str("<section id=\"tradeoff\">\n<h2>Over-refusal vs harmful rate</h2>\n");
    let harms: Vec<usize> = study.measures_of("harmful_rate").collect();
    let refusals: Vec<usize> = study.measures_of("over_refusal").collect();
    if harms.is_empty() || refusals.is_empty() {
        out.push_str(
            "<p class=\"empty\">This needs both harmful_rate and over_refusal results: no scatter plot.</p>\n</section>\n",
        );
        return;
    }
    // The first pair of eval sets that some cell has both overall values of.
    let pairs = harms.iter().flat_map(|&h| refusals.iter().map(move |&r| (h, r)));
    let found = pairs
        .map(|(h, r)| {
            let points: Vec<(usize, &ResultRow, &ResultRow)> = (0..study.cells.len())
                .filter_map(|c| Some((c, study.overall(h, c)?, study.overall(r, c)?)))
                .collect();
            (h, r, points)
        })
        .find(|(_, _, points)| !points.is_empty());
    let Some((h, r, points)) = found else {
        out.push_str(
            "<p class=\"empty\">No cell has both an overall harmful_rate and an overall over_refusal: no scatter plot.</p>\n</section>\n",
        );
        return;
    };
    let (x_title, y_title) = (study.measures[h].title(), study.measures[r].title());
    let right = points
        .iter()
        .map(|&(c, _, _)| text_width(&study.cells[c].label, 11.0))
        .fold(0.0, f64::max)
        .min(200.0);
    let (width, height) = (620.0 + right, 460.0);
    let plot = Rect { x: 70.0, y: 36.0, w: width - 70.0 - right - 20.0, h: height - 36.0 - 60.0 };
    let x = value_axis(points.iter().flat_map(|(_, hr, _)| [hr.value, hr.lo, hr.hi]));
    let y = value_axis(points.iter().flat_map(|(_, _, rr)| [rr.value, rr.lo, rr.hi]));
    let frame = Frame { plot, x, y };
    let title = format!("{y_title} vs {x_title}");
    let mut svg = Svg::new(width, height, &title);
    svg.text((plot.x + plot.w / 2.0, 22.0), Anchor::Middle, 15.0, "#111", &title);
    frame.draw(&mut svg, &x_title, &y_title);
    for &(c, hr, rr) in &points {
        let cell = &study.cells[c];
        let ink = cell.series.map(colour).unwrap_or(BASE_COLOUR);
        let (px, py) = (frame.px(hr.value), frame.py(rr.value));
        if hr.lo.is_finite() && hr.hi.is_finite() {
            svg.h_error_bar(py, frame.px(hr.lo), frame.px(hr.hi), ink);
        }
        if rr.lo.is_finite() && rr.hi.is_finite() {
            svg.v_error_bar(px, frame.py(rr.lo), frame.py(rr.hi), ink);
        }
        let tip = format!(
            "{}: {x_title} {}, {y_title} {}",
            cell.label,
            format_interval(hr.value, hr.lo, hr.hi),
            format_interval(rr.value, rr.lo, rr.hi)
        );
        svg.circle((px, py), if cell.is_base { 5.0 } else { 4.0 }, ink, Some(&tip));
        svg.text((px + 7.0, py - 7.0), Anchor::Start, 11.0, "#222", &shorten(&cell.label, MAX_LABEL));
    }
    let _ = write!(
        out,
        "<figure>\n<div class=\"scroll\">{}</div>\n<figcaption>One point per cell with both 95% intervals as \
         cross bars; the lower left corner is best (few harmful answers, few needless refusals).</figcaption>\n</figure>\n",
        svg.finish()
    );
    out.push_str("</section>\n");
}

/// A cell's capability change against its base model: one bar chart per
/// accuracy measure.
pub(super) fn capability(out: &mut String, study: &Study<'_>) {
    out.push_str("<section id=\"capability\">\n<h2>Capability change</h2>\n");
    let measures: Vec<usize> = study.measures_of("acc").chain(study.measures_of("acc_norm")).collect();
    if measures.is_empty() {
        out.push_str(
            "<p class=\"empty\">No capability results (acc, acc_norm): nothing to compare.</p>\n</section>\n",
        );
        return;
    }
    for m in measures {
        let title = format!("{} change vs base", study.measures[m].title());
        let deltas: Vec<(usize, f64, f64, f64)> = (0..study.cells.len())
            .filter(|&c| !study.cells[c].is_base)
            .filter_map(|c| {
                let (cell, base) = (study.overall(m, c)?, study.overall(m, study.base_of(c)?)?);
                let delta = cell.value - base.value;
                let down = (cell.value - cell.lo).hypot(base.hi - base.value);
                let up = (cell.hi - cell.value).hypot(base.value - base.lo);
                Some((c, delta, delta - down, delta + up))
            })
            .collect();
        if deltas.is_empty() {
            let _ = writeln!(
                out,
                "<p class=\"empty\">{}: no aligned cell has a base model measured on it to compare with.</p>",
                escape(&study.measures[m].title())
            );
            continue;
        }
        let _ = write!(
            out,
            "<figure>\n<div class=\"scroll\">{}</div>\n<figcaption>{}: each cell's value minus its base model's, \
             with a 95% interval; green is a gain, red a loss.</figcaption>\n</figure>\n",
            delta_chart(study, &title, &deltas),
            escape(&study.measures[m].title())
        );
    }
    out.push_str("</section>\n");
}

fn delta_chart(study: &Study<'_>, title: &str, deltas: &[(usize, f64, f64, f64)]) -> String {
    let rh = 26.0;
    let left = deltas
        .iter()
        .map(|&(c, ..)| text_width(&study.cells[c].label, 12.0))
        .fold(0.0, f64::max)
        .clamp(50.0, 240.0)
        + 16.0;
    let (width, height) = (left + 420.0 + 200.0, 44.0 + rh * deltas.len() as f64 + 50.0);
    let plot = Rect { x: left, y: 36.0, w: 420.0, h: rh * deltas.len() as f64 };
    let x = Axis::linear(
        deltas.iter().map(|d| d.2).filter(|v| v.is_finite()).fold(0.0, f64::min),
        deltas.iter().map(|d| d.3).filter(|v| v.is_finite()).fold(0.0, f64::max),
    );
    let frame = Frame { plot, x, y: Axis::linear(0.0, 1.0) };
    let mut svg = Svg::new(width, height, title);
    svg.text((8.0, 22.0), Anchor::Start, 15.0, "#111", title);
    for &t in &frame.x.ticks {
        svg.line((frame.px(t), plot.y), (frame.px(t), plot.bottom()), "#e6e6e6", 1.0, None);
        svg.text((frame.px(t), plot.bottom() + 16.0), Anchor::Middle, 11.0, "#333", &frame.x.label(t));
    }
    svg.text((plot.x + plot.w / 2.0, plot.bottom() + 36.0), Anchor::Middle, 12.0, "#222", "change vs base");
    for (i, &(c, delta, lo, hi)) in deltas.iter().enumerate() {
        let y = plot.y + rh * i as f64;
        let label = &study.cells[c].label;
        svg.text((left - 8.0, y + rh / 2.0 + 4.0), Anchor::End, 12.0, "#222", &shorten(label, MAX_LABEL));
        let fill = if delta > 0.0 {
            "#1a9850"
        } else if delta < 0.0 {
            "#d73027"
        } else {
            "#999"
        };
        let (x0, x1) = (frame.px(0.0), frame.px(delta));
        let text = format!("{} [{}, {}]", format_signed(delta), format_signed(lo), format_signed(hi));
        svg.rect(
            x0.min(x1),
            y + 6.0,
            (x1 - x0).abs(),
            rh - 12.0,
            fill,
            None,
            Some(&format!("{label}: {text}")),
        );
        if lo.is_finite() && hi.is_finite() {
            svg.h_error_bar(y + rh / 2.0, frame.px(lo), frame.px(hi), "#333");
        }
        svg.text((plot.right() + 10.0, y + rh / 2.0 + 4.0), Anchor::Start, 11.0, fill, &text);
    }
    svg.line((frame.px(0.0), plot.y), (frame.px(0.0), plot.bottom()), "#222", 1.2, None);
    svg.finish()
}
