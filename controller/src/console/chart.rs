//! The fleet chart: hosts per state over time, as inline SVG (no script, no external
//! asset). Each state is a line with its own colour *and* dash pattern and a labelled
//! legend, and the figure carries a text description for screen readers.

use std::fmt::Write as _;

use super::data::{HostState, Sample};
use super::html::esc;

const W: f64 = 640.0;
const H: f64 = 200.0;
const LEFT: f64 = 36.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// A small vertical offset per state, so lines at the same count lie side by side
/// instead of hiding each other.
fn nudge(s: HostState) -> f64 {
    match s {
        HostState::Compliant => -3.0,
        HostState::Drifted => -1.0,
        HostState::Failed => 1.0,
        _ => 3.0,
    }
}

/// (stroke colour, dash pattern) per charted state; colours keep 3:1 against white.
fn style(s: HostState) -> (&'static str, &'static str) {
    match s {
        HostState::Compliant => ("#1b7a3a", ""),
        HostState::Drifted => ("#9a5b00", "6 3"),
        HostState::Failed => ("#b3261e", "2 3"),
        _ => ("#4a4f57", "10 4 2 4"),
    }
}

/// The chart of `samples` (oldest first).
pub fn svg(samples: &[Sample]) -> String {
    let latest = samples.last();
    let desc = match latest {
        None => "No samples yet.".to_owned(),
        Some(s) => HostState::CHARTED
            .iter()
            .map(|h| format!("{}: {}", h.label(), s.counts.get(*h)))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let span_ms = match (samples.first(), latest) {
        (Some(a), Some(b)) => (b.at_ms - a.at_ms).max(1),
        _ => 1,
    };
    let max = samples
        .iter()
        .flat_map(|s| HostState::CHARTED.map(|h| s.counts.get(h)))
        .max()
        .unwrap_or(0)
        .max(1);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |at: i64| {
        let t0 = samples.first().map_or(0, |s| s.at_ms);
        LEFT + pw * ((at - t0) as f64 / span_ms as f64)
    };
    let y = |v: u32| TOP + ph * (1.0 - f64::from(v) / f64::from(max));
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg"><title id="chart-title">Hosts by state over the last {}</title><desc id="chart-desc">Now: {}</desc>"#,
        esc(&span_text(span_ms)),
        esc(&desc)
    );
    // Axes and grid: 0, max/2, max.
    for v in [0, max / 2, max] {
        let yy = y(v);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#d0d4da" stroke-width="1"/><text x="{}" y="{:.1}" text-anchor="end" font-size="11" fill="#33373d">{v}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0
        );
    }
    let _ = write!(
        out,
        r##"<text x="{LEFT}" y="{}" font-size="11" fill="#33373d">{}</text><text x="{}" y="{}" text-anchor="end" font-size="11" fill="#33373d">now</text>"##,
        H - 8.0,
        esc(&format!("{} ago", span_text(span_ms))),
        W - RIGHT,
        H - 8.0
    );
    if samples.len() == 1 {
        // One point: a dot per state at the right edge.
        for h in HostState::CHARTED {
            let (colour, _) = style(h);
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                W - RIGHT,
                y(samples[0].counts.get(h)) + nudge(h)
            );
        }
    } else {
        for h in HostState::CHARTED {
            let (colour, dash) = style(h);
            // A step line: a count holds until the next sample.
            let mut points = String::new();
            let mut prev: Option<u32> = None;
            let yn = |v: u32| y(v) + nudge(h);
            for s in samples {
                let v = s.counts.get(h);
                if let Some(p) = prev {
                    let _ = write!(points, "{:.1},{:.1} ", x(s.at_ms), yn(p));
                }
                let _ = write!(points, "{:.1},{:.1} ", x(s.at_ms), yn(v));
                prev = Some(v);
            }
            let dash = if dash.is_empty() {
                String::new()
            } else {
                format!(r#" stroke-dasharray="{dash}""#)
            };
            let _ = write!(
                out,
                r#"<polyline class="series-{}" fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
                h.key(),
                points.trim_end()
            );
        }
    }
    out.push_str("</svg>");
    // The legend is HTML, so it wraps and reads in order.
    out.push_str(r#"<ul class="legend">"#);
    for h in HostState::CHARTED {
        let (colour, dash) = style(h);
        let dash =
            if dash.is_empty() { String::new() } else { format!(r#" stroke-dasharray="{dash}""#) };
        let _ = write!(
            out,
            r#"<li><svg width="28" height="10" aria-hidden="true"><line x1="0" x2="28" y1="5" y2="5" stroke="{colour}" stroke-width="2"{dash}/></svg> {} ({})</li>"#,
            h.label(),
            latest.map_or(0, |s| s.counts.get(h))
        );
    }
    out.push_str("</ul>");
    out
}

fn span_text(ms: i64) -> String {
    let secs = ms / 1000;
    if secs < 120 {
        format!("{secs} s")
    } else if secs < 7200 {
        format!("{} min", secs / 60)
    } else {
        format!("{} h", secs / 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::super::data::Counts;
    use super::*;

    #[test]
    fn draws_one_line_per_state_with_a_description() {
        let mut a = Counts::default();
        a.add(HostState::Compliant);
        a.add(HostState::Compliant);
        let mut b = a;
        b.add(HostState::Drifted);
        let svg = svg(&[Sample { at_ms: 0, counts: a }, Sample { at_ms: 60_000, counts: b }]);
        assert_eq!(svg.matches("<polyline").count(), 4, "{svg}");
        assert!(svg.contains("Compliant: 2, Drifted and repaired: 1, Failed: 0, Offline: 0"));
        assert!(svg.contains("over the last 60 s"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn no_samples_is_still_a_chart() {
        let svg = svg(&[]);
        assert!(svg.contains("No samples yet.") && !svg.contains("NaN"), "{svg}");
    }
}
