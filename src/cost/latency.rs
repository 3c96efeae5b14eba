//! A latency model of one network on one runtime, batch and thread count:
//! every convolution's time at a few widths of the dimensions pruning can
//! change (timed by `cost::probe`), interpolated between them, and scaled
//! so the whole original model comes out as measured. MACs say a conv of 6
//! channels costs 3/8 of one of 16; the runtime often says otherwise, and a
//! deleted block saves its whole time. This file is the model alone: pure
//! functions of recorded timings.

use crate::graph::Graph;
use crate::prune::plan::Plan;
use crate::prune::predict::ConvShape;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Which of a conv's dimensions pruning can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    /// Neither (the stem, a projection shortcut, the head).
    Fixed,
    /// Input channels (the last conv of a residual branch).
    In,
    /// Output channels (the first conv of a branch).
    Out,
    /// Both (the middle conv of a bottleneck).
    Both,
    /// Groups of a grouped conv, with its input and output channels.
    Groups,
}

/// One conv's times over a grid of widths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvTimes {
    /// The conv's output name in the graph the table was measured on.
    pub conv: String,
    pub cin: usize,
    pub cout: usize,
    pub groups: usize,
    pub axis: Axis,
    /// Input channels (groups for `Axis::Groups`) timed, ascending.
    pub a: Vec<usize>,
    /// Output channels timed, ascending.
    pub b: Vec<usize>,
    /// Milliseconds a run, row-major over (`a`, `b`).
    pub ms: Vec<f64>,
}

impl ConvTimes {
    /// The time at the conv's full width.
    pub fn full_ms(&self) -> f64 {
        self.ms.last().copied().unwrap_or(0.0)
    }

    /// The time at a pruned shape: bilinear between the widths timed,
    /// constant beyond them (narrower than timed is taken as no faster).
    pub fn at(&self, s: &ConvShape) -> f64 {
        if s.removed {
            return 0.0;
        }
        let x = match self.axis {
            Axis::Groups => s.groups,
            _ => s.cin,
        };
        interpolate2(&self.a, &self.b, &self.ms, x as f64, s.cout as f64)
    }
}

/// Where `x` falls on the ascending grid `g`: the segment and the weight of
/// its upper end, clamped to the ends.
fn locate(g: &[usize], x: f64) -> (usize, f64) {
    if g.len() < 2 || x <= g[0] as f64 {
        return (0, 0.0);
    }
    let last = g.len() - 1;
    if x >= g[last] as f64 {
        return (last - 1, 1.0);
    }
    let i = g
        .windows(2)
        .position(|w| x < w[1] as f64)
        .unwrap_or(last - 1);
    let (lo, hi) = (g[i] as f64, g[i + 1] as f64);
    (i, (x - lo) / (hi - lo).max(1e-12))
}

/// Bilinear interpolation of `ms` (row-major over `a` × `b`) at (x, y).
pub fn interpolate2(a: &[usize], b: &[usize], ms: &[f64], x: f64, y: f64) -> f64 {
    let at = |i: usize, j: usize| ms.get(i * b.len() + j).copied().unwrap_or(0.0);
    let (i, u) = locate(a, x);
    let (j, v) = locate(b, y);
    let (i1, j1) = ((i + 1).min(a.len() - 1), (j + 1).min(b.len() - 1));
    let row = |r: usize| at(r, j) * (1.0 - v) + at(r, j1) * v;
    row(i) * (1.0 - u) + row(i1) * u
}

/// The widths timed for a dimension of `n`, which are also the widths a
/// latency-targeted budget may leave: multiples of 8 (of 4 below 16
/// channels), or of n/8 rounded up to 8 when that is more (at most about
/// eight widths), and `n` itself.
pub fn widths(n: usize) -> Vec<usize> {
    let step = match n {
        0..=3 => 1,
        4..=15 => 4,
        _ => (n.div_ceil(8)).div_ceil(8).max(1) * 8,
    };
    let mut w: Vec<usize> = (1..=n / step).map(|i| i * step).collect();
    w.push(n);
    w.dedup();
    w
}

/// A block's share of the time outside the convs (its Add, Relu and the
/// runtime's layout changes on the residual stream): gone with the block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockRest {
    /// The block's first branch conv (removed with the block).
    pub conv: String,
    /// Values of the block's output per sample.
    pub elements: f64,
}

/// Whole-model time = `alpha` · Σ conv probe times + `beta` · Σ kept
/// blocks' elements + `gamma`, fitted on three whole models timed
/// interleaved: the original, its branches at half width, every other
/// block deleted. Probes timed alone carry the runtime's layout changes
/// around each conv, which in a network happen once; the fit takes them out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Coefficients {
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
}

/// The latency model of one network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyTable {
    pub batch: usize,
    /// Intra-op threads (0: the runtime's default).
    pub threads: usize,
    pub convs: Vec<ConvTimes>,
    pub blocks: Vec<BlockRest>,
    pub fit: Coefficients,
    /// The whole models the fit used: (what, Σ probe ms, Σ block elements,
    /// measured ms).
    pub calibration: Vec<(String, f64, f64, f64)>,
    /// Seconds the measurement took.
    pub seconds: f64,
}

impl LatencyTable {
    /// The widths timed for the dimension a gate on `conv`'s output (or
    /// groups) changes: the widths a budget may leave it at.
    pub fn gate_widths(&self, conv: &str) -> Option<&[usize]> {
        let c = self.convs.iter().find(|c| c.conv == conv)?;
        match c.axis {
            Axis::Out | Axis::Both => Some(&c.b),
            Axis::Groups => Some(&c.a),
            Axis::In | Axis::Fixed => None,
        }
    }

    /// Σ of the convs' probe times and of the kept blocks' elements at the
    /// given shapes (a conv not in `shapes` counts at full width).
    pub(crate) fn terms(&self, shapes: &HashMap<&str, ConvShape>) -> (f64, f64) {
        let probes = self
            .convs
            .iter()
            .map(|c| match shapes.get(c.conv.as_str()) {
                Some(s) => c.at(s),
                None => c.full_ms(),
            })
            .sum();
        let elements = self
            .blocks
            .iter()
            .filter(|b| !shapes.get(b.conv.as_str()).is_some_and(|s| s.removed))
            .map(|b| b.elements)
            .sum();
        (probes, elements)
    }

    /// The predicted milliseconds a run for the convs' shapes after pruning.
    pub fn predict_ms(&self, shapes: &HashMap<&str, ConvShape>) -> f64 {
        let (p, e) = self.terms(shapes);
        self.fit.alpha * p + self.fit.beta * e + self.fit.gamma
    }

    /// The predicted latency over the original's.
    pub fn ratio(&self, shapes: &HashMap<&str, ConvShape>) -> f64 {
        let full = self.predict_ms(&HashMap::new());
        if full <= 0.0 {
            return 1.0;
        }
        self.predict_ms(shapes) / full
    }

    /// The original's predicted milliseconds (the fit's value at full width).
    pub fn model_ms(&self) -> f64 {
        self.predict_ms(&HashMap::new())
    }
}

/// Solves `rows` · (α, β, γ) = `m` for three rows (Gaussian elimination
/// with partial pivoting); `None` when singular or a term comes out
/// negative (the variants did not separate the terms).
pub fn solve3(rows: [[f64; 3]; 3], m: [f64; 3]) -> Option<Coefficients> {
    let mut a: Vec<[f64; 4]> = (0..3)
        .map(|i| [rows[i][0], rows[i][1], rows[i][2], m[i]])
        .collect();
    for c in 0..3 {
        let p = (c..3).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        let scale = a.iter().map(|r| r[c].abs()).fold(0.0, f64::max);
        if a[p][c].abs() <= 1e-9 * scale.max(1e-300) {
            return None;
        }
        a.swap(c, p);
        let pivot = a[c];
        for (i, row) in a.iter_mut().enumerate() {
            if i != c {
                let f = row[c] / pivot[c];
                for (x, p) in row.iter_mut().zip(pivot).skip(c) {
                    *x -= f * p;
                }
            }
        }
    }
    let x: Vec<f64> = (0..3).map(|i| a[i][3] / a[i][i]).collect();
    (x.iter().all(|v| v.is_finite() && *v >= 0.0) && x[0] > 0.0).then(|| Coefficients {
        alpha: x[0],
        beta: x[1],
        gamma: x[2],
    })
}

/// The fit when the variants cannot separate the terms: the probes scaled
/// to the original's measured time.
pub(crate) fn proportional(probes: f64, measured: f64) -> Coefficients {
    Coefficients {
        alpha: measured / probes.max(1e-12),
        beta: 0.0,
        gamma: 0.0,
    }
}

/// How each conv of a gated graph can change, from its plan.
pub fn axes(g: &Graph, plan: &Plan) -> HashMap<String, Axis> {
    let mut out: HashMap<String, (bool, bool, bool)> = HashMap::new();
    for n in g
        .nodes
        .iter()
        .filter(|n| matches!(n.op_type.as_str(), "Conv" | "MatMul"))
    {
        out.insert(n.outputs[0].clone(), (false, false, false));
    }
    for bp in &plan.blocks {
        let convs = &bp.block.convs;
        for (i, cg) in bp.convs.iter().enumerate() {
            let Some(cg) = cg else { continue };
            let this = convs[i].conv.clone();
            if cg.is_group() {
                out.entry(this).or_default().2 = true;
                if i > 0 {
                    out.entry(convs[i - 1].conv.clone()).or_default().1 = true;
                }
            } else {
                out.entry(this).or_default().1 = true;
            }
            if let Some(next) = convs.get(i + 1) {
                out.entry(next.conv.clone()).or_default().0 = true;
            }
        }
    }
    out.into_iter()
        .map(|(k, (cin, cout, groups))| {
            let axis = match (cin, cout, groups) {
                (_, _, true) => Axis::Groups,
                (true, true, _) => Axis::Both,
                (true, false, _) => Axis::In,
                (false, true, _) => Axis::Out,
                _ => Axis::Fixed,
            };
            (k, axis)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_are_aligned_and_few() {
        assert_eq!(widths(16), vec![8, 16]);
        assert_eq!(widths(64), vec![8, 16, 24, 32, 40, 48, 56, 64]);
        assert_eq!(widths(256), vec![32, 64, 96, 128, 160, 192, 224, 256]);
        assert_eq!(widths(12), vec![4, 8, 12]);
        assert_eq!(widths(20), vec![8, 16, 20]);
        assert_eq!(widths(3), vec![1, 2, 3]);
        assert_eq!(widths(1), vec![1]);
    }

    #[test]
    fn interpolation_hits_grid_points_and_lies_between() {
        let (a, b) = (vec![2, 4, 8], vec![10, 20]);
        let ms = vec![1.0, 2.0, 3.0, 5.0, 7.0, 11.0];
        for (i, &x) in a.iter().enumerate() {
            for (j, &y) in b.iter().enumerate() {
                let v = interpolate2(&a, &b, &ms, x as f64, y as f64);
                assert!((v - ms[i * 2 + j]).abs() < 1e-12, "({x},{y}): {v}");
            }
        }
        // halfway between a=4 and 8 at b=10: (3 + 7)/2
        assert!((interpolate2(&a, &b, &ms, 6.0, 10.0) - 5.0).abs() < 1e-12);
        // the centre of the last cell: mean of its corners
        let c = interpolate2(&a, &b, &ms, 6.0, 15.0);
        assert!((c - (3.0 + 5.0 + 7.0 + 11.0) / 4.0).abs() < 1e-12);
        // narrower than timed: no faster than the narrowest
        assert_eq!(interpolate2(&a, &b, &ms, 1.0, 5.0), 1.0);
    }
}
