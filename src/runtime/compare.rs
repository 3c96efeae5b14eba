//! Comparing two sets of outputs: max abs / max rel difference, cosine
//! similarity and top-1 agreement per output.

use super::Tensors;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub output: String,
    pub max_abs: f64,
    pub max_rel: f64,
    pub cosine: f64,
    /// Share of rows (first axis) whose arg-max agrees.
    pub top1_agreement: f64,
}

/// Compares outputs pairwise by position; shapes must match.
pub fn diff(a: &Tensors, b: &Tensors) -> Result<Vec<Diff>, String> {
    if a.len() != b.len() {
        return Err(format!("{} outputs against {}", a.len(), b.len()));
    }
    let mut out = Vec::new();
    for ((name, x), (_, y)) in a.iter().zip(b) {
        if x.shape() != y.shape() {
            return Err(format!(
                "output `{name}`: shape {:?} against {:?}",
                x.shape(),
                y.shape()
            ));
        }
        let (mut max_abs, mut max_rel, mut dot, mut nx, mut ny) = (0f64, 0f64, 0f64, 0f64, 0f64);
        for (&p, &q) in x.iter().zip(y.iter()) {
            let (p, q) = (p as f64, q as f64);
            let d = (p - q).abs();
            if d.is_nan() {
                max_abs = f64::INFINITY;
                max_rel = f64::INFINITY;
                continue;
            }
            max_abs = max_abs.max(d);
            max_rel = max_rel.max(d / p.abs().max(q.abs()).max(1e-6));
            dot += p * q;
            nx += p * p;
            ny += q * q;
        }
        let cosine = if nx == 0.0 && ny == 0.0 {
            1.0
        } else {
            dot / (nx.sqrt() * ny.sqrt()).max(f64::MIN_POSITIVE)
        };
        let top1_agreement = top1(x, y);
        out.push(Diff {
            output: name.clone(),
            max_abs,
            max_rel,
            cosine,
            top1_agreement,
        });
    }
    Ok(out)
}

fn argmax(row: impl Iterator<Item = f32>) -> usize {
    row.enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0
}

fn top1(x: &ndarray::ArrayD<f32>, y: &ndarray::ArrayD<f32>) -> f64 {
    if x.ndim() < 2 || x.shape()[0] == 0 {
        return 1.0;
    }
    let rows = x.shape()[0];
    let n = x.len() / rows;
    let (xs, ys) = (x.as_standard_layout(), y.as_standard_layout());
    let (Some(xs), Some(ys)) = (xs.as_slice(), ys.as_slice()) else {
        return 0.0;
    };
    let agree = (0..rows)
        .filter(|&r| {
            argmax(xs[r * n..(r + 1) * n].iter().copied())
                == argmax(ys[r * n..(r + 1) * n].iter().copied())
        })
        .count();
    agree as f64 / rows as f64
}

/// Whether every output is within `atol` absolute, or `rtol` relative.
pub fn within(diffs: &[Diff], atol: f64, rtol: f64) -> bool {
    diffs.iter().all(|d| d.max_abs <= atol || d.max_rel <= rtol)
}
