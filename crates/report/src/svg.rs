//! Line charts as inline SVG: no script, no external asset, readable in any browser.
//!
//! Each line is drawn as one `<polyline>` per run of consecutive values (a period without a
//! value, such as a latency where nothing arrived, breaks the line), tagged with
//! `data-series`, so a test can count the points drawn.
//!
//! Lines are told apart by more than their colour (which a reader may not see, or a
//! printout lose): each line of a chart has its own dash pattern and its own point marker
//! ([`STYLES`]), and the legend draws a sample of both beside the name.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use runtime::stats::Resolution;

use crate::format_seconds;
use crate::html::esc;

const WIDTH: f64 = 460.0;
const HEIGHT: f64 = 170.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 22.0;
const BOTTOM: f64 = 22.0;

/// How the lines of one chart differ besides colour, in the order the lines come: a dash
/// pattern (`stroke-dasharray`; empty: solid) and the marker drawn at every point (an id of
/// [`MARKERS`]).
pub const STYLES: [(&str, &str); 4] = [
    ("", "m-dot"),
    ("7 3", "m-square"),
    ("2 3", "m-triangle"),
    ("9 3 2 3", "m-diamond"),
];

/// The point markers, defined once per page (they are referred to by id, so every chart of
/// the page shares them). Their fill is the line's own colour where the browser supports
/// `context-stroke`, black otherwise: the shape is what tells them apart.
pub const MARKERS: &str = concat!(
    r#"<svg width="0" height="0" style="position:absolute" aria-hidden="true" focusable="false"><defs>"#,
    r#"<marker id="m-dot" viewBox="0 0 6 6" refX="3" refY="3" markerWidth="5" markerHeight="5" markerUnits="userSpaceOnUse"><circle cx="3" cy="3" r="2.6" fill="context-stroke"/></marker>"#,
    r#"<marker id="m-square" viewBox="0 0 6 6" refX="3" refY="3" markerWidth="5" markerHeight="5" markerUnits="userSpaceOnUse"><rect x="0.5" y="0.5" width="5" height="5" fill="context-stroke"/></marker>"#,
    r#"<marker id="m-triangle" viewBox="0 0 6 6" refX="3" refY="3" markerWidth="6" markerHeight="6" markerUnits="userSpaceOnUse"><path d="M3 0 L6 6 L0 6 Z" fill="context-stroke"/></marker>"#,
    r#"<marker id="m-diamond" viewBox="0 0 6 6" refX="3" refY="3" markerWidth="6" markerHeight="6" markerUnits="userSpaceOnUse"><path d="M3 0 L6 3 L3 6 L0 3 Z" fill="context-stroke"/></marker>"#,
    "</defs></svg>"
);

/// What the values of a chart are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Count,
}

/// One line of a chart: a value (or none) per period.
#[derive(Debug, Clone)]
pub struct Line {
    pub name: &'static str,
    pub color: &'static str,
    pub values: Vec<Option<f64>>,
}

/// A chart: the periods along x, the lines, what the values are.
#[derive(Debug, Clone)]
pub struct Chart {
    pub label: String,
    pub periods: Vec<DateTime<Utc>>,
    pub resolution: Resolution,
    pub unit: Unit,
    pub lines: Vec<Line>,
}

impl Chart {
    pub fn render(&self) -> String {
        let mut svg = String::new();
        let n = self.periods.len();
        let _ = write!(
            svg,
            r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{}" data-periods="{n}" xmlns="http://www.w3.org/2000/svg">"#,
            esc(&self.label)
        );
        let _ = write!(svg, "<title>{}</title>", esc(&self.label));
        let top = self
            .lines
            .iter()
            .flat_map(|l| l.values.iter().flatten())
            .fold(0.0f64, |m, v| m.max(*v));
        let top = nice_ceiling(top, self.unit);
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let x = |i: usize| {
            if n <= 1 {
                LEFT + plot_w / 2.0
            } else {
                LEFT + plot_w * i as f64 / (n - 1) as f64
            }
        };
        let y = |v: f64| TOP + plot_h * (1.0 - (v / top).clamp(0.0, 1.0));
        // Grid and y labels: 0, half, top.
        for fraction in [0.0, 0.5, 1.0] {
            let value = top * fraction;
            let gy = y(value);
            let _ = write!(
                svg,
                r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#ddd" stroke-width="1"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="axis">{}</text>"##,
                WIDTH - RIGHT,
                LEFT - 4.0,
                gy + 3.5,
                self.format(value)
            );
        }
        // X labels: first, middle, last period.
        if n > 0 {
            let mut marks = vec![0, n / 2, n - 1];
            marks.dedup();
            for (k, i) in marks.iter().enumerate() {
                let anchor = match k {
                    0 => "start",
                    _ if *i == n - 1 => "end",
                    _ => "middle",
                };
                let _ = write!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="{anchor}" class="axis">{}</text>"#,
                    x(*i),
                    HEIGHT - 6.0,
                    self.period_label(self.periods[*i])
                );
            }
        }
        // Legend: a sample of each line (its colour, dashes and marker), then its name.
        let mut lx = LEFT;
        for (i, line) in self.lines.iter().enumerate() {
            let (dashes, marker) = STYLES[i % STYLES.len()];
            let _ = write!(
                svg,
                r#"<g class="key" data-legend="{name}"><polyline points="{:.1},11 {:.1},11 {:.1},11" fill="none" stroke="{color}" stroke-width="1.6" stroke-dasharray="{dashes}" marker-mid="url(#{marker})"/><text x="{:.1}" y="15" class="legend">{name}</text></g>"#,
                lx,
                lx + 9.0,
                lx + 18.0,
                lx + 22.0,
                name = esc(line.name),
                color = line.color,
            );
            lx += 30.0 + 6.0 * line.name.len() as f64;
        }
        // Lines: one polyline per run of values, a marker at each point.
        for (i, line) in self.lines.iter().enumerate() {
            let (dashes, marker) = STYLES[i % STYLES.len()];
            let mut run: Vec<(f64, f64)> = Vec::new();
            let flush = |run: &mut Vec<(f64, f64)>, svg: &mut String| {
                if run.is_empty() {
                    return;
                }
                let points: Vec<String> = run
                    .iter()
                    .map(|(px, py)| format!("{px:.1},{py:.1}"))
                    .collect();
                let _ = write!(
                    svg,
                    r#"<polyline data-series="{}" points="{}" fill="none" stroke="{}" stroke-width="1.6" stroke-linejoin="round" stroke-dasharray="{dashes}" marker-start="url(#{marker})" marker-mid="url(#{marker})" marker-end="url(#{marker})"/>"#,
                    esc(line.name),
                    points.join(" "),
                    line.color
                );
                // A lone value has no segment to stroke; browsers differ on whether its
                // markers show, so a dot of the line's colour marks it in any case.
                if let [(px, py)] = run.as_slice() {
                    let _ = write!(
                        svg,
                        r#"<circle cx="{px:.1}" cy="{py:.1}" r="1.5" fill="{}"/>"#,
                        line.color
                    );
                }
                run.clear();
            };
            for (i, value) in line.values.iter().enumerate() {
                match value {
                    Some(v) => run.push((x(i), y(*v))),
                    None => flush(&mut run, &mut svg),
                }
            }
            flush(&mut run, &mut svg);
        }
        svg.push_str("</svg>");
        svg
    }

    fn format(&self, value: f64) -> String {
        match self.unit {
            Unit::Seconds if value == 0.0 => "0".into(),
            Unit::Seconds => format_seconds(value),
            Unit::Count if value >= 10_000.0 => format!("{:.0}k", value / 1000.0),
            Unit::Count if value.fract() != 0.0 => format!("{value:.1}"),
            Unit::Count => format!("{value:.0}"),
        }
    }

    fn period_label(&self, at: DateTime<Utc>) -> String {
        match self.resolution {
            Resolution::Minute => at.format("%H:%M").to_string(),
            Resolution::Hour => at.format("%d %H:00").to_string(),
            Resolution::Day => at.format("%m-%d").to_string(),
        }
    }
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `value` (whole numbers for counts).
pub fn nice_ceiling(value: f64, unit: Unit) -> f64 {
    let floor = match unit {
        Unit::Seconds => 0.001,
        Unit::Count => 1.0,
    };
    let value = value.max(floor);
    let magnitude = 10f64.powf(value.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        let candidate = step * magnitude;
        if candidate >= value * (1.0 - 1e-9) {
            return candidate;
        }
    }
    10.0 * magnitude
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_are_round() {
        assert_eq!(nice_ceiling(0.0, Unit::Count), 1.0);
        assert_eq!(nice_ceiling(7.0, Unit::Count), 10.0);
        assert_eq!(nice_ceiling(120.0, Unit::Count), 200.0);
        assert!((nice_ceiling(0.0031, Unit::Seconds) - 0.005).abs() < 1e-12);
    }

    #[test]
    fn a_gap_breaks_the_line_and_every_value_is_a_point() {
        let t0: DateTime<Utc> = "2026-03-01T10:00:00Z".parse().unwrap();
        let chart = Chart {
            label: "latency".into(),
            periods: (0..5).map(|i| t0 + chrono::TimeDelta::minutes(i)).collect(),
            resolution: Resolution::Minute,
            unit: Unit::Seconds,
            lines: vec![Line {
                name: "p95",
                color: "#c00",
                values: vec![Some(0.01), Some(0.02), None, Some(0.03), Some(0.01)],
            }],
        };
        let svg = chart.render();
        assert_eq!(svg.matches(r#"<polyline data-series="p95""#).count(), 2);
        assert!(
            svg.contains(r#"data-legend="p95""#),
            "the legend names the line"
        );
        assert!(svg.contains(r#"data-periods="5""#));
        assert!(svg.contains("10:00") && svg.contains("10:04"));
    }

    #[test]
    fn every_line_of_a_chart_has_its_own_dashes_and_marker() {
        let mut seen: Vec<(&str, &str)> = STYLES.to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), STYLES.len());
        for (_, marker) in STYLES {
            assert!(MARKERS.contains(&format!(r#"<marker id="{marker}""#)));
        }
    }
}
