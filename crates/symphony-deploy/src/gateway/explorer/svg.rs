//! The training curve as inline SVG: x axis rounds, y axis loss, tick labels, axis
//! titles and a legend; one polyline per series. No script, no external file.

use maud::{html, Markup};

/// One line of the chart.
#[derive(Clone, Debug)]
pub struct CurveSeries {
    /// Legend label.
    pub name: String,
    /// Stroke colour (CSS).
    pub color: &'static str,
    /// `(round, value)` points; non-finite values are skipped.
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 640.0;
const H: f64 = 320.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 52.0;

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

/// A label for a tick value: enough digits to tell ticks apart.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil().clamp(0.0, 6.0) as usize
    };
    format!("{v:.decimals$}")
}

/// A "nice" tick step (1, 2 or 5 × 10^k) giving about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let unit = raw / mag;
    let nice = if unit <= 1.0 {
        1.0
    } else if unit <= 2.0 {
        2.0
    } else if unit <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// The chart of `series` with the axis titles `x_title` and `y_title`.
pub fn training_curve_svg(series: &[CurveSeries], x_title: &str, y_title: &str) -> Markup {
    let points = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in points() {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1.0 {
        x1 = x0 + 1.0;
    }
    let y_step = nice_step((y1 - y0).max(1e-6), 5.0);
    let y0 = (y0 / y_step).floor() * y_step;
    let y1 = ((y1 / y_step).ceil() * y_step).max(y0 + y_step);
    let x_step = nice_step(x1 - x0, 8.0).max(1.0);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let px = move |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let py = move |y: f64| TOP + ph - (y - y0) / (y1 - y0) * ph;
    let mut x_ticks = Vec::new();
    let mut t = (x0 / x_step).ceil() * x_step;
    while t <= x1 + 1e-9 {
        x_ticks.push(t);
        t += x_step;
    }
    let mut y_ticks = Vec::new();
    let mut t = y0;
    while t <= y1 + y_step * 1e-6 {
        y_ticks.push(t);
        t += y_step;
    }
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="training-curve" role="img"
            width=(W) height=(H) viewBox={ "0 0 " (W) " " (H) }
            aria-label={ (y_title) " by " (x_title) } {
            title { (y_title) " by " (x_title) }
            // Grid and ticks.
            g class="y-axis" font-size="11" fill="#5b6576" {
                @for t in &y_ticks {
                    line x1=(fmt(LEFT)) x2=(fmt(LEFT + pw)) y1=(fmt(py(*t))) y2=(fmt(py(*t)))
                        stroke="#eef1f5" {}
                    text x=(fmt(LEFT - 6.0)) y=(fmt(py(*t) + 4.0)) text-anchor="end" {
                        (tick_label(*t, y_step))
                    }
                }
            }
            g class="x-axis" font-size="11" fill="#5b6576" {
                @for t in &x_ticks {
                    line x1=(fmt(px(*t))) x2=(fmt(px(*t))) y1=(fmt(TOP + ph)) y2=(fmt(TOP + ph + 4.0))
                        stroke="#1d2430" {}
                    text x=(fmt(px(*t))) y=(fmt(TOP + ph + 17.0)) text-anchor="middle" {
                        (tick_label(*t, x_step))
                    }
                }
            }
            // Axes.
            line class="axis" x1=(fmt(LEFT)) y1=(fmt(TOP)) x2=(fmt(LEFT)) y2=(fmt(TOP + ph)) stroke="#1d2430" {}
            line class="axis" x1=(fmt(LEFT)) y1=(fmt(TOP + ph)) x2=(fmt(LEFT + pw)) y2=(fmt(TOP + ph)) stroke="#1d2430" {}
            text class="axis-title" x=(fmt(LEFT + pw / 2.0)) y=(fmt(H - 10.0)) text-anchor="middle" font-size="12" {
                (x_title)
            }
            text class="axis-title" x="14" y=(fmt(TOP + ph / 2.0)) text-anchor="middle" font-size="12"
                transform={ "rotate(-90 14 " (fmt(TOP + ph / 2.0)) ")" } {
                (y_title)
            }
            // Lines and points.
            @for s in series {
                @let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
                polyline class="series" fill="none" stroke=(s.color) stroke-width="2"
                    points=(pts.iter().map(|(x, y)| format!("{},{}", fmt(px(*x)), fmt(py(*y)))).collect::<Vec<_>>().join(" ")) {}
                @for (x, y) in &pts {
                    circle cx=(fmt(px(*x))) cy=(fmt(py(*y))) r="3" fill=(s.color) {
                        title { (s.name) ", " (x_title) " " (x) ": " (format!("{y:.4}")) }
                    }
                }
            }
            // Legend.
            g class="legend" font-size="12" {
                @for (i, s) in series.iter().enumerate() {
                    @let y = TOP + 10.0 + 20.0 * i as f64;
                    line x1=(fmt(W - RIGHT + 14.0)) x2=(fmt(W - RIGHT + 38.0)) y1=(fmt(y)) y2=(fmt(y))
                        stroke=(s.color) stroke-width="3" {}
                    text x=(fmt(W - RIGHT + 44.0)) y=(fmt(y + 4.0)) { (s.name) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_has_axes_tick_labels_titles_a_legend_and_one_line_per_series() {
        let series = vec![
            CurveSeries {
                name: "training loss".into(),
                color: "#2456a6",
                points: vec![(1.0, 0.69), (2.0, 0.61), (3.0, 0.58)],
            },
            CurveSeries {
                name: "held-out loss".into(),
                color: "#c0392b",
                points: vec![(1.0, 0.70), (2.0, 0.64), (3.0, f64::NAN)],
            },
        ];
        let svg = training_curve_svg(&series, "round", "loss").into_string();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert_eq!(svg.matches("class=\"axis\"").count(), 2, "{svg}");
        assert_eq!(svg.matches("class=\"axis-title\"").count(), 2, "{svg}");
        assert!(
            svg.contains(">round</text>") && svg.contains(">loss</text>"),
            "{svg}"
        );
        assert!(svg.contains("class=\"legend\""), "{svg}");
        assert!(svg.contains(">training loss</text>"), "{svg}");
        assert!(svg.contains(">held-out loss</text>"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        // x ticks 1, 2, 3 and y ticks spanning 0.58..0.70.
        for t in [">1</text>", ">2</text>", ">3</text>"] {
            assert!(svg.contains(t), "missing tick {t}: {svg}");
        }
        assert!(
            svg.contains(">0.55</text>") && svg.contains(">0.70</text>"),
            "{svg}"
        );
        // The NaN point is skipped, not drawn.
        assert!(!svg.contains("NaN"), "{svg}");
        // No series: still a chart with axes, no panic.
        let empty = training_curve_svg(&[], "round", "loss").into_string();
        assert_eq!(empty.matches("class=\"axis\"").count(), 2);
    }
}
