//! Small SVG drawing helpers for the report's charts: a string builder whose
//! text always goes through [`escape`], and axes (linear or logarithmic) with
//! ticks at round numbers.
//!
//! Everything here writes SVG fragments meant to sit inline in the HTML
//! report; nothing is fetched and no script is used.

use std::fmt::Write as _;

use super::escape;

/// Series colours (matplotlib's tab10); a series keeps its colour in every chart.
pub(crate) const COLOURS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf",
];

/// The colour of series number `i`.
pub(crate) fn colour(i: usize) -> &'static str {
    COLOURS[i % COLOURS.len()]
}

/// Where a text's anchor point lies.
#[derive(Clone, Copy)]
pub(crate) enum Anchor {
    Start,
    Middle,
    End,
}

impl Anchor {
    fn name(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

/// An SVG image under construction. Coordinates are written with two
/// decimals, so the same drawing always gives the same text.
pub(crate) struct Svg {
    out: String,
}

impl Svg {
    /// A `width` × `height` image whose accessible title is `title`.
    pub(crate) fn new(width: f64, height: f64, title: &str) -> Svg {
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" role="img" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(out, "<title>{}</title>", escape(title));
        let _ = writeln!(out, r#"<rect x="0" y="0" width="{width:.0}" height="{height:.0}" fill="white"/>"#);
        Svg { out }
    }

    /// A straight line; `dash` is a `stroke-dasharray` pattern.
    pub(crate) fn line(
        &mut self,
        (x1, y1): (f64, f64),
        (x2, y2): (f64, f64),
        stroke: &str,
        width: f64,
        dash: Option<&str>,
    ) {
        let dash = dash.map(|d| format!(r#" stroke-dasharray="{d}""#)).unwrap_or_default();
        let _ = writeln!(
            self.out,
            r#"<line x1="{x1:.2}" y1="{y1:.2}" x2="{x2:.2}" y2="{y2:.2}" stroke="{stroke}" stroke-width="{width}"{dash}/>"#
        );
    }

    /// A rectangle, with an optional outline and an optional hover text.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rect(
        &mut self,
        x: f64,
        y: f64,
        w: f64,
        h: f64,
        fill: &str,
        stroke: Option<&str>,
        tip: Option<&str>,
    ) {
        let stroke = stroke.map(|s| format!(r#" stroke="{s}" stroke-width="1""#)).unwrap_or_default();
        let _ = write!(
            self.out,
            r#"<rect x="{x:.2}" y="{y:.2}" width="{:.2}" height="{:.2}" fill="{fill}"{stroke}"#,
            w.max(0.0),
            h.max(0.0)
        );
        self.close_with_tip("rect", tip);
    }

    /// A filled circle with an optional hover text.
    pub(crate) fn circle(&mut self, (cx, cy): (f64, f64), r: f64, fill: &str, tip: Option<&str>) {
        let _ = write!(
            self.out,
            r##"<circle cx="{cx:.2}" cy="{cy:.2}" r="{r}" fill="{fill}" stroke="#fff" stroke-width="1""##
        );
        self.close_with_tip("circle", tip);
    }

    /// A line through `points`, in order.
    pub(crate) fn polyline(&mut self, points: &[(f64, f64)], stroke: &str, width: f64, dash: Option<&str>) {
        if points.len() < 2 {
            return;
        }
        let coords: Vec<String> = points.iter().map(|(x, y)| format!("{x:.2},{y:.2}")).collect();
        let dash = dash.map(|d| format!(r#" stroke-dasharray="{d}""#)).unwrap_or_default();
        let _ = writeln!(
            self.out,
            r#"<polyline fill="none" stroke="{stroke}" stroke-width="{width}" stroke-linejoin="round"{dash} points="{}"/>"#,
            coords.join(" ")
        );
    }

    /// Text at `(x, y)` (the baseline), escaped.
    pub(crate) fn text(&mut self, (x, y): (f64, f64), anchor: Anchor, size: f64, fill: &str, text: &str) {
        let _ = writeln!(
            self.out,
            r#"<text x="{x:.2}" y="{y:.2}" text-anchor="{}" font-size="{size}" fill="{fill}">{}</text>"#,
            anchor.name(),
            escape(text)
        );
    }

    /// Text turned by `angle` degrees about its anchor point, escaped.
    pub(crate) fn text_rotated(
        &mut self,
        (x, y): (f64, f64),
        angle: f64,
        anchor: Anchor,
        size: f64,
        text: &str,
    ) {
        let _ = writeln!(
            self.out,
            r##"<text x="{x:.2}" y="{y:.2}" text-anchor="{}" font-size="{size}" fill="#333" transform="rotate({angle} {x:.2} {y:.2})">{}</text>"##,
            anchor.name(),
            escape(text)
        );
    }

    /// A vertical error bar from `lo` to `hi` (pixel rows) at column `x`, with caps.
    pub(crate) fn v_error_bar(&mut self, x: f64, lo: f64, hi: f64, stroke: &str) {
        self.line((x, lo), (x, hi), stroke, 1.2, None);
        self.line((x - 3.0, lo), (x + 3.0, lo), stroke, 1.2, None);
        self.line((x - 3.0, hi), (x + 3.0, hi), stroke, 1.2, None);
    }

    /// A horizontal error bar from `lo` to `hi` (pixel columns) at row `y`, with caps.
    pub(crate) fn h_error_bar(&mut self, y: f64, lo: f64, hi: f64, stroke: &str) {
        self.line((lo, y), (hi, y), stroke, 1.2, None);
        self.line((lo, y - 3.0), (lo, y + 3.0), stroke, 1.2, None);
        self.line((hi, y - 3.0), (hi, y + 3.0), stroke, 1.2, None);
    }

    /// The finished document.
    pub(crate) fn finish(mut self) -> String {
        self.out.push_str("</svg>\n");
        self.out
    }

    fn close_with_tip(&mut self, element: &str, tip: Option<&str>) {
        match tip {
            Some(tip) => {
                let _ = writeln!(self.out, "><title>{}</title></{element}>", escape(tip));
            }
            None => self.out.push_str("/>\n"),
        }
    }
}

/// A rectangle in image coordinates.
#[derive(Clone, Copy)]
pub(crate) struct Rect {
    pub(crate) x: f64,
    pub(crate) y: f64,
    pub(crate) w: f64,
    pub(crate) h: f64,
}

impl Rect {
    pub(crate) fn right(&self) -> f64 {
        self.x + self.w
    }

    pub(crate) fn bottom(&self) -> f64 {
        self.y + self.h
    }
}

/// An axis: its drawn range, its scale and its ticks.
#[derive(Clone, Debug)]
pub(crate) struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    step: f64,
    pub(crate) ticks: Vec<f64>,
}

impl Axis {
    /// A linear axis covering `lo..=hi`, widened to whole ticks; an empty
    /// range is widened around its value.
    pub(crate) fn linear(mut lo: f64, mut hi: f64) -> Axis {
        if !(lo.is_finite() && hi.is_finite()) {
            (lo, hi) = (0.0, 1.0);
        }
        if hi - lo <= 1e-12 * lo.abs().max(hi.abs()).max(1e-12) {
            let pad = if lo == 0.0 { 0.1 } else { lo.abs() * 0.1 };
            let floor_at_zero = lo >= 0.0;
            (lo, hi) = (lo - pad, hi + pad);
            if floor_at_zero {
                lo = lo.max(0.0);
            }
        }
        let step = nice_step((hi - lo) / 5.0);
        // The slack keeps a bound that is a tick already (0, 0.5) from gaining one more.
        let first = (lo / step + 1e-9).floor();
        let last = (hi / step - 1e-9).ceil();
        let ticks = (0..=(last - first) as i64)
            .map(|i| {
                let tick = (first + i as f64) * step;
                if tick.abs() < step * 1e-9 {
                    0.0
                } else {
                    tick
                }
            })
            .collect();
        Axis { lo: first * step, hi: last * step, log: false, step, ticks }
    }

    /// A base-10 logarithmic axis covering `lo..=hi` (both positive), with
    /// ticks at 1, 2 and 5 times powers of ten.
    pub(crate) fn log(lo: f64, hi: f64) -> Axis {
        let (lo, hi) = (lo / 1.4, hi * 1.4);
        let mut ticks = Vec::new();
        let decades = hi.log10().ceil() - lo.log10().floor();
        let mantissas: &[f64] = if decades > 4.0 { &[1.0] } else { &[1.0, 2.0, 5.0] };
        for exp in (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32) {
            for m in mantissas {
                let tick = m * 10f64.powi(exp);
                if (lo..=hi).contains(&tick) {
                    ticks.push(tick);
                }
            }
        }
        Axis { lo, hi, log: true, step: 1.0, ticks }
    }

    /// Where `v` lies on the axis, 0 at its low end and 1 at its high end.
    pub(crate) fn frac(&self, v: f64) -> f64 {
        if self.log {
            (v.max(f64::MIN_POSITIVE).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    /// Whether the axis is logarithmic.
    pub(crate) fn is_log(&self) -> bool {
        self.log
    }

    /// A tick's label: compact counts on a log axis (`500`, `2k`, `1M`), as
    /// many decimals as the step needs on a linear one.
    pub(crate) fn label(&self, tick: f64) -> String {
        if self.log {
            return compact_count(tick);
        }
        if tick == 0.0 {
            return "0".to_string();
        }
        let decimals = if self.step >= 1.0 { 0 } else { (-self.step.log10().floor()) as usize };
        format!("{tick:.decimals$}")
    }
}

/// `n` with a `k` or `M` suffix where it is round enough (`1500` → `1.5k`).
pub(crate) fn compact_count(n: f64) -> String {
    let (scaled, suffix) = if n >= 1e6 {
        (n / 1e6, "M")
    } else if n >= 1e3 {
        (n / 1e3, "k")
    } else {
        (n, "")
    };
    let text = format!("{scaled:.1}");
    format!("{}{suffix}", text.trim_end_matches('0').trim_end_matches('.'))
}

/// The smallest of 1, 2, 5 or 10 times a power of ten that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let mantissa = raw / magnitude;
    let nice = [1.0, 2.0, 5.0].into_iter().find(|m| mantissa <= m + 1e-9).unwrap_or(10.0);
    nice * magnitude
}

/// A plot area with its two axes: maps data to pixels and draws the frame.
pub(crate) struct Frame {
    pub(crate) plot: Rect,
    pub(crate) x: Axis,
    pub(crate) y: Axis,
}

impl Frame {
    /// The pixel column of data value `x`.
    pub(crate) fn px(&self, x: f64) -> f64 {
        self.plot.x + self.plot.w * self.x.frac(x)
    }

    /// The pixel row of data value `y`.
    pub(crate) fn py(&self, y: f64) -> f64 {
        self.plot.y + self.plot.h * (1.0 - self.y.frac(y))
    }

    /// Grid lines, tick labels, the outline and the axis labels.
    pub(crate) fn draw(&self, svg: &mut Svg, x_label: &str, y_label: &str) {
        let p = self.plot;
        for &t in &self.x.ticks {
            svg.line((self.px(t), p.y), (self.px(t), p.bottom()), "#e6e6e6", 1.0, None);
            svg.text((self.px(t), p.bottom() + 16.0), Anchor::Middle, 11.0, "#333", &self.x.label(t));
        }
        for &t in &self.y.ticks {
            svg.line((p.x, self.py(t)), (p.right(), self.py(t)), "#e6e6e6", 1.0, None);
            svg.text((p.x - 6.0, self.py(t) + 4.0), Anchor::End, 11.0, "#333", &self.y.label(t));
        }
        svg.rect(p.x, p.y, p.w, p.h, "none", Some("#555"), None);
        svg.text((p.x + p.w / 2.0, p.bottom() + 36.0), Anchor::Middle, 12.0, "#222", x_label);
        svg.text_rotated((16.0, p.y + p.h / 2.0), -90.0, Anchor::Middle, 12.0, y_label);
    }
}

/// White to red for `t` in 0..=1 (clamped): the heatmap's scale.
pub(crate) fn heat(t: f64) -> String {
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let (r, g, b) = (255.0 + (178.0 - 255.0) * t, 255.0 * (1.0 - t) + 24.0 * t, 255.0 * (1.0 - t) + 43.0 * t);
    format!("#{:02x}{:02x}{:02x}", r.round() as u8, g.round() as u8, b.round() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ticks_are_round_and_cover_the_range() {
        let axis = Axis::linear(0.03, 0.47);
        assert_eq!(axis.ticks.first(), Some(&0.0));
        assert!(*axis.ticks.last().unwrap() >= 0.47);
        assert_eq!(axis.label(0.1), "0.1");
        assert!((axis.frac(0.0)).abs() < 1e-12);
        let rates = Axis::linear(0.0, 0.45);
        assert_eq!(rates.ticks.first(), Some(&0.0), "a range from 0 starts at 0: {:?}", rates.ticks);
        assert_eq!(rates.ticks.last(), Some(&0.5));
        assert_eq!(Axis::linear(-0.1, 0.1).ticks.len(), 5);
    }

    #[test]
    fn log_ticks_are_powers_and_counts_are_compact() {
        let axis = Axis::log(100.0, 10_000.0);
        assert!(axis.ticks.contains(&1000.0) && axis.ticks.contains(&500.0));
        assert!(axis.frac(100.0) > 0.0 && axis.frac(10_000.0) < 1.0);
        assert_eq!(compact_count(1500.0), "1.5k");
        assert_eq!(compact_count(2_000_000.0), "2M");
        assert_eq!(compact_count(50.0), "50");
    }

    #[test]
    fn heat_runs_from_white_to_red() {
        assert_eq!(heat(0.0), "#ffffff");
        assert_eq!(heat(1.0), "#b2182b");
        assert_eq!(heat(f64::NAN), "#ffffff");
    }
}
