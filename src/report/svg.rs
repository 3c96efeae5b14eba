//! Minimal SVG charts (no dependency): line charts over training steps and a
//! bar chart of final gate values.

use std::fmt::Write;

const W: f64 = 640.0;
const H: f64 = 300.0;
const M: f64 = 50.0;

fn frame(title: &str, out: &mut String) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="20" text-anchor="middle" font-size="14">{}</text><line x1="{M}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{M}" y1="{M}" x2="{M}" y2="{}" stroke="black"/>"#,
        W / 2.0,
        escape(title),
        H - M,
        W - 10.0,
        H - M,
        H - M
    );
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A labelled, coloured line: (label, colour, points).
pub type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// Lines over a shared x axis; each series is (label, colour, points), y in
/// [0, y_max].
pub fn lines(title: &str, x_label: &str, y_max: f64, series: &[Series]) -> String {
    let mut out = String::new();
    frame(title, &mut out);
    let x_max = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .fold(1e-9, f64::max);
    let sx = |x: f64| M + x / x_max * (W - M - 10.0);
    let sy = |y: f64| H - M - (y / y_max).clamp(0.0, 1.05) * (H - 2.0 * M);
    for k in 0..=4 {
        let v = y_max * k as f64 / 4.0;
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{:.2}</text>"#,
            M - 4.0,
            sy(v) + 4.0,
            v
        );
    }
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        W / 2.0,
        H - 15.0,
        escape(x_label)
    );
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end">{:.0}</text>"#,
        W - 10.0,
        H - M + 15.0,
        x_max
    );
    for (i, (label, colour, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" fill="{colour}">{}</text>"#,
            M + 10.0 + 170.0 * i as f64,
            M - 8.0,
            escape(label)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// One bar per value, grouped by label (e.g. the gates of each layer).
pub fn bars(title: &str, groups: &[(String, Vec<f32>)]) -> String {
    let mut out = String::new();
    frame(title, &mut out);
    let n: usize = groups.iter().map(|g| g.1.len()).sum::<usize>().max(1);
    let y_max = groups
        .iter()
        .flat_map(|g| g.1.iter().copied())
        .fold(1e-6f32, f32::max) as f64;
    let bw = (W - M - 10.0) / n as f64;
    let mut i = 0usize;
    for (gi, (label, vals)) in groups.iter().enumerate() {
        let colour = if gi % 2 == 0 { "#3b6ea5" } else { "#c0504d" };
        let x0 = M + bw * i as f64;
        for &v in vals {
            let h = (v as f64 / y_max).max(0.0) * (H - 2.0 * M);
            let _ = write!(
                out,
                r#"<rect x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="{colour}"/>"#,
                M + bw * i as f64,
                H - M - h,
                bw.max(0.5),
                h
            );
            i += 1;
        }
        if vals.len() as f64 * bw > 30.0 {
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{}" font-size="9" transform="rotate(45 {:.1} {})">{}</text>"#,
                x0,
                H - M + 12.0,
                x0,
                H - M + 12.0,
                escape(label)
            );
        }
    }
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end">{:.2}</text>"#,
        M - 4.0,
        M + 4.0,
        y_max
    );
    out.push_str("</svg>\n");
    out
}
