//! The report's two pictures, drawn as plain SVG (no dependency): the
//! architecture the run kept, one bar per residual block grouped by stage
//! (as the SSS paper draws it), and the training curve with its target,
//! budget steps and lock.

use crate::prune::BlockSummary;
use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 340.0;
/// Plot area margins: left, right, top, bottom.
const ML: f64 = 60.0;
const MR: f64 = 60.0;
const MT: f64 = 50.0;
const MB: f64 = 60.0;

const BLUE: &str = "#3b6ea5";
const RED: &str = "#c0504d";
const GREEN: &str = "#4f9a55";
const GREY: &str = "#9a9a9a";
const ORANGE: &str = "#d08a2a";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn open(title: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    out
}

fn text(out: &mut String, x: f64, y: f64, anchor: &str, colour: &str, s: &str) {
    let _ = write!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" fill="{colour}">{}</text>"#,
        escape(s)
    );
}

fn line(out: &mut String, (x1, y1): (f64, f64), (x2, y2): (f64, f64), style: &str) {
    let _ = write!(
        out,
        r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" {style}/>"#
    );
}

/// Axes with a label each and `ticks` values on the left axis.
fn axes(out: &mut String, x_label: &str, y_label: &str, ticks: &[(f64, String)]) {
    let (x0, y0, x1, y1) = (ML, H - MB, W - MR, MT);
    line(out, (x0, y0), (x1, y0), r#"stroke="black""#);
    line(out, (x0, y0), (x0, y1), r#"stroke="black""#);
    for (y, label) in ticks {
        line(out, (x0 - 4.0, *y), (x0, *y), r#"stroke="black""#);
        text(out, x0 - 6.0, y + 4.0, "end", "black", label);
    }
    text(out, (x0 + x1) / 2.0, H - 12.0, "middle", "black", x_label);
    let _ = write!(
        out,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0,
        escape(y_label)
    );
}

/// One bar per residual block, grouped by stage: the original width of its
/// gated convs as an outline, the kept width filled inside it, a deleted
/// block drawn as a dashed outline with a cross.
pub fn blocks(blocks: &[BlockSummary]) -> String {
    let gone = blocks.iter().filter(|b| b.removed).count();
    let mut out = open(&format!(
        "kept width per residual block: {gone} of {} blocks deleted",
        blocks.len()
    ));
    let stages = blocks.iter().map(|b| b.stage + 1).max().unwrap_or(0);
    let slots = blocks.len() + stages.saturating_sub(1); // a gap between stages
    let slot = (W - ML - MR) / slots.max(1) as f64;
    let bar = slot * 0.7;
    let top = blocks.iter().map(|b| b.width).max().unwrap_or(1).max(1) as f64;
    let sy = |v: f64| H - MB - v / top * (H - MB - MT);
    let ticks: Vec<(f64, String)> = (0..=4)
        .map(|k| {
            let v = top * k as f64 / 4.0;
            (sy(v), format!("{v:.0}"))
        })
        .collect();
    axes(
        &mut out,
        "residual blocks, by stage",
        "channels (gated convs)",
        &ticks,
    );
    let mut i = 0usize;
    for stage in 0..stages {
        let members: Vec<&BlockSummary> = blocks.iter().filter(|b| b.stage == stage).collect();
        let first = i;
        for b in &members {
            let x = ML + slot * i as f64 + (slot - bar) / 2.0;
            let (yw, yk) = (sy(b.width as f64), sy(b.kept as f64));
            if b.removed {
                let _ = write!(
                    out,
                    r#"<rect class="deleted" x="{x:.1}" y="{yw:.1}" width="{bar:.1}" height="{:.1}" fill="none" stroke="{RED}" stroke-dasharray="4 3"/>"#,
                    H - MB - yw
                );
                line(
                    &mut out,
                    (x, yw),
                    (x + bar, H - MB),
                    &format!(r#"stroke="{RED}""#),
                );
                line(
                    &mut out,
                    (x + bar, yw),
                    (x, H - MB),
                    &format!(r#"stroke="{RED}""#),
                );
            } else {
                let _ = write!(
                    out,
                    r#"<rect class="original" x="{x:.1}" y="{yw:.1}" width="{bar:.1}" height="{:.1}" fill="none" stroke="{GREY}"/><rect class="kept" x="{x:.1}" y="{yk:.1}" width="{bar:.1}" height="{:.1}" fill="{BLUE}"/>"#,
                    H - MB - yw,
                    H - MB - yk
                );
            }
            i += 1;
        }
        let mid = ML + slot * (first as f64 + members.len() as f64 / 2.0);
        text(
            &mut out,
            mid,
            H - MB + 16.0,
            "middle",
            "black",
            &format!("stage {}", stage + 1),
        );
        i += 1;
    }
    let ly = MT - 8.0;
    text(&mut out, ML, ly, "start", BLUE, "■ kept");
    text(&mut out, ML + 70.0, ly, "start", GREY, "□ original width");
    text(&mut out, ML + 200.0, ly, "start", RED, "⊠ block deleted");
    out.push_str("</svg>\n");
    out
}

/// What the training curve shows.
pub struct Curve<'a> {
    /// (step, implied MACs / original, train accuracy, train loss).
    pub points: &'a [(f64, f64, f64, f64)],
    pub target_macs: Option<f64>,
    /// Steps at which the budget deleted structures.
    pub budget_steps: &'a [f64],
    pub lock: Option<f64>,
    /// Held-out top-1 of the original and of the pruned model (at the end).
    pub original_top1: f64,
    pub pruned_top1: f64,
}

/// The training curve: implied MACs and train accuracy on the left axis
/// (fractions), the loss on the right one; the MAC target, the budget
/// steps and the lock marked; held-out accuracy before and after.
pub fn curve(c: &Curve) -> String {
    let mut out = open("training: implied MACs, accuracy and loss over the steps");
    let x_max = c.points.iter().map(|p| p.0).fold(1.0, f64::max);
    let loss_max = c.points.iter().map(|p| p.3).fold(1e-9, f64::max) * 1.05;
    let sx = |x: f64| ML + x / x_max * (W - ML - MR);
    let sy = |y: f64| H - MB - y.clamp(0.0, 1.05) * (H - MB - MT);
    let ticks: Vec<(f64, String)> = (0..=4)
        .map(|k| (sy(k as f64 / 4.0), format!("{:.2}", k as f64 / 4.0)))
        .collect();
    axes(
        &mut out,
        "training step",
        "fraction (MACs, accuracy)",
        &ticks,
    );
    // the right axis: loss
    line(
        &mut out,
        (W - MR, H - MB),
        (W - MR, MT),
        r#"stroke="black""#,
    );
    for k in 0..=4 {
        let v = loss_max * k as f64 / 4.0;
        text(
            &mut out,
            W - MR + 6.0,
            sy(k as f64 / 4.0) + 4.0,
            "start",
            ORANGE,
            &format!("{v:.2}"),
        );
    }
    let _ = write!(
        out,
        r#"<text x="{0:.1}" y="{1:.1}" text-anchor="middle" fill="{ORANGE}" transform="rotate(90 {0:.1} {1:.1})">train loss</text>"#,
        W - 14.0,
        (H - MB + MT) / 2.0
    );
    // x ticks
    for k in 0..=4 {
        let v = x_max * k as f64 / 4.0;
        text(
            &mut out,
            sx(v),
            H - MB + 16.0,
            "middle",
            "black",
            &format!("{v:.0}"),
        );
    }
    if let Some(t) = c.target_macs {
        line(
            &mut out,
            (ML, sy(t)),
            (W - MR, sy(t)),
            &format!(r#"class="target" stroke="{BLUE}" stroke-dasharray="6 4""#),
        );
        text(
            &mut out,
            W - MR - 4.0,
            sy(t) - 4.0,
            "end",
            BLUE,
            &format!("MAC target {t:.2}"),
        );
    }
    for &s in c.budget_steps {
        line(
            &mut out,
            (sx(s), H - MB),
            (sx(s), MT),
            &format!(r#"class="budget" stroke="{GREY}" stroke-dasharray="2 3""#),
        );
    }
    if let Some(l) = c.lock {
        line(
            &mut out,
            (sx(l), H - MB),
            (sx(l), MT),
            r#"class="lock" stroke="black" stroke-dasharray="8 3""#,
        );
        text(
            &mut out,
            sx(l) + 4.0,
            MT + 12.0,
            "start",
            "black",
            "lock: fine-tuning",
        );
    }
    let poly = |out: &mut String, class: &str, colour: &str, pts: Vec<(f64, f64)>| {
        let p: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline class="{class}" fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            p.join(" ")
        );
    };
    poly(
        &mut out,
        "macs",
        BLUE,
        c.points.iter().map(|p| (p.0, p.1)).collect(),
    );
    poly(
        &mut out,
        "accuracy",
        GREEN,
        c.points.iter().map(|p| (p.0, p.2)).collect(),
    );
    poly(
        &mut out,
        "loss",
        ORANGE,
        c.points.iter().map(|p| (p.0, p.3 / loss_max)).collect(),
    );
    // held-out accuracy: the original's as a line, the pruned model's as a point
    line(
        &mut out,
        (ML, sy(c.original_top1)),
        (W - MR, sy(c.original_top1)),
        &format!(r#"stroke="{GREEN}" stroke-dasharray="1 3""#),
    );
    let _ = write!(
        out,
        r#"<circle class="pruned-top1" cx="{:.1}" cy="{:.1}" r="5" fill="{RED}"/>"#,
        sx(x_max),
        sy(c.pruned_top1)
    );
    let ly = MT - 8.0;
    text(&mut out, ML, ly, "start", BLUE, "implied MACs");
    text(
        &mut out,
        ML + 100.0,
        ly,
        "start",
        GREEN,
        "train accuracy (dotted: original held-out top-1)",
    );
    text(
        &mut out,
        ML + 400.0,
        ly,
        "start",
        RED,
        "● pruned held-out top-1",
    );
    text(
        &mut out,
        W - MR,
        H - MB + 32.0,
        "end",
        GREY,
        "dotted verticals: budget steps",
    );
    out.push_str("</svg>\n");
    out
}
