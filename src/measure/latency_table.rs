//! A latency model of one network on one runtime, batch and thread count:
//! every convolution timed alone in ONNX Runtime at a few widths of the
//! dimensions pruning can change, interpolated between them, and scaled so
//! the whole original model comes out as measured. MACs say a conv of 6
//! channels costs 3/8 of one of 16; the runtime often says otherwise, and a
//! deleted block saves its whole time. The budget ranks and stops on this
//! prediction when a run asks for a latency target.

use crate::error::{Error, Result};
use crate::graph::build::Builder;
use crate::graph::{shape, Attr, Graph, Node};
use crate::measure::inputs;
use crate::prune::plan::Plan;
use crate::prune::predict::ConvShape;
use crate::runtime::{self, time_runs};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

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
pub struct Fit {
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
    pub fit: Fit,
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
    fn terms(&self, shapes: &HashMap<&str, ConvShape>) -> (f64, f64) {
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
pub fn solve3(rows: [[f64; 3]; 3], m: [f64; 3]) -> Option<Fit> {
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
    (x.iter().all(|v| v.is_finite() && *v >= 0.0) && x[0] > 0.0).then(|| Fit {
        alpha: x[0],
        beta: x[1],
        gamma: x[2],
    })
}

/// The fit when the variants cannot separate the terms: the probes scaled
/// to the original's measured time.
fn proportional(probes: f64, measured: f64) -> Fit {
    Fit {
        alpha: measured / probes.max(1e-12),
        beta: 0.0,
        gamma: 0.0,
    }
}

/// How each conv of a gated graph can change, from its plan.
pub fn axes(g: &Graph, plan: &Plan) -> HashMap<String, Axis> {
    let mut out: HashMap<String, (bool, bool, bool)> = HashMap::new();
    for n in g.nodes.iter().filter(|n| n.op_type == "Conv") {
        out.insert(n.outputs[0].clone(), (false, false, false));
    }
    for bp in &plan.blocks {
        let convs = &bp.block.convs;
        for (i, cg) in bp.convs.iter().enumerate() {
            let Some(cg) = cg else { continue };
            let this = convs[i].conv.clone();
            if cg.span > 1 {
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

/// A graph of `conv` alone (its attributes, random weights of the given
/// width, a bias) followed by a Relu, as the runtime fuses them in a network.
fn single_conv(
    conv: &Node,
    input: &[usize],
    cout: usize,
    groups: usize,
    kernel: &[usize],
) -> Graph {
    let dims: Vec<i64> = input.iter().map(|&d| d as i64).collect();
    let mut b = Builder::new("x", &dims, 7);
    let mut shape = vec![cout, input[1] / groups.max(1)];
    shape.extend_from_slice(kernel);
    let fan_in: usize = shape[1..].iter().product();
    let w = b.weight("w", &shape, (1.0 / fan_in.max(1) as f32).sqrt());
    let bias = b.weight("b", &[cout], 0.1);
    let attrs = conv
        .attrs
        .iter()
        .filter(|(k, _)| k != "group")
        .map(|(k, v)| (k.as_str(), v.clone()))
        .chain([("group", Attr::Int(groups as i64))])
        .collect();
    let y = b.node("Conv", &["x", &w, &bias], attrs);
    let z = b.relu(&y);
    let mut g = b.finish(&z);
    // the output is the conv's 4-D value, not a classifier's
    g.outputs[0].shape = None;
    g
}

/// Median milliseconds of a run of `g` on ONNX Runtime: two runs to warm
/// up, then at least 7 and at least 0.1 s (at most 200 runs).
fn time_graph(g: &Graph, batch: usize, label: &str, opts: &runtime::Options) -> Result<f64> {
    let mut s = runtime::open_graph(g, Path::new(label), opts)?;
    let x = inputs::random_inputs(g, batch, 3)?;
    time_runs(s.as_mut(), &x, 2, 0)?;
    let mut t: Vec<Duration> = Vec::new();
    let start = Instant::now();
    while t.len() < 200 && (t.len() < 7 || start.elapsed() < Duration::from_millis(100)) {
        t.extend(time_runs(s.as_mut(), &x, 0, 1)?);
    }
    t.sort();
    Ok(t[t.len() / 2].as_secs_f64() * 1e3)
}

/// Measures the table for the gated graph `gated` (its gates say what may
/// change) at `batch`. Needs ONNX Runtime.
pub fn measure(
    gated: &Graph,
    batch: usize,
    opts: &runtime::Options,
    mut note: impl FnMut(&str),
) -> Result<LatencyTable> {
    let (kind, why) = runtime::resolve(opts.kind);
    if kind != runtime::Kind::Ort {
        return Err(Error::Invalid(match why {
            Some(w) => {
                format!("a latency target is timed in ONNX Runtime, which is not available ({w})")
            }
            None => "a latency target is timed in ONNX Runtime, and the run asks for tract".into(),
        }));
    }
    let ort = runtime::Options {
        kind: runtime::Kind::Ort,
        ..opts.clone()
    };
    let started = Instant::now();
    let plan = crate::prune::plan::plan(gated)?;
    let facts = shape::infer_strict(gated, batch)?;
    let convs = probe_convs(gated, &plan, &facts, batch, &ort, &mut note)?;
    let blocks: Vec<BlockRest> = plan
        .blocks
        .iter()
        .filter_map(|bp| {
            let first = bp.block.convs.first()?;
            let s = facts.shape(&bp.block.add)?;
            Some(BlockRest {
                conv: first.conv.clone(),
                elements: s[1..].iter().product::<usize>() as f64,
            })
        })
        .collect();
    let mut table = LatencyTable {
        batch,
        threads: opts.threads,
        convs,
        blocks,
        fit: Fit {
            alpha: 1.0,
            beta: 0.0,
            gamma: 0.0,
        },
        calibration: Vec::new(),
        seconds: 0.0,
    };
    table.calibration = calibrate(gated, &table, batch, &ort)?;
    let c = &table.calibration;
    let row = |i: usize| [c[i].1, c[i].2, 1.0];
    table.fit = solve3([row(0), row(1), row(2)], [c[0].3, c[1].3, c[2].3])
        .or_else(|| {
            // no block gates (or no inner ones): probes and a constant
            let (dp, dm) = (c[0].1 - c[1].1, c[0].3 - c[1].3);
            (dp > 1e-9 && dm > 0.0 && c[0].3 - dm / dp * c[0].1 >= 0.0).then(|| Fit {
                alpha: dm / dp,
                beta: 0.0,
                gamma: c[0].3 - dm / dp * c[0].1,
            })
        })
        .unwrap_or_else(|| proportional(c[0].1, c[0].3));
    table.seconds = started.elapsed().as_secs_f64();
    note(&format!(
        "latency table: {} convs, the original {:.2} ms a run at batch {batch}; fit {:.2}·convs + {:.2} ms in blocks + {:.2} ms ({:.0} s)",
        table.convs.len(),
        c[0].3,
        table.fit.alpha,
        table.fit.beta * table.blocks.iter().map(|b| b.elements).sum::<f64>(),
        table.fit.gamma,
        table.seconds
    ));
    Ok(table)
}

/// Every conv of `gated` timed alone at the widths its axis allows.
fn probe_convs(
    gated: &Graph,
    plan: &Plan,
    facts: &shape::Facts,
    batch: usize,
    ort: &runtime::Options,
    note: &mut impl FnMut(&str),
) -> Result<Vec<ConvTimes>> {
    let axes = axes(gated, plan);
    // convs of the same geometry and attributes share their times
    let mut seen: HashMap<String, Vec<f64>> = HashMap::new();
    let mut convs = Vec::new();
    let conv_nodes: Vec<&Node> = gated.nodes.iter().filter(|n| n.op_type == "Conv").collect();
    for (k, n) in conv_nodes.iter().enumerate() {
        let name = &n.outputs[0];
        let w = n
            .input(1)
            .and_then(|w| gated.initializers.get(w))
            .map(|t| t.shape())
            .ok_or_else(|| {
                Error::Graph(format!(
                    "conv `{}` has no weight initializer",
                    n.display_name()
                ))
            })?;
        let input = facts
            .shape(&n.inputs[0])
            .map(|s| s.to_vec())
            .ok_or_else(|| {
                Error::Graph(format!(
                    "no shape for the input of conv `{}`",
                    n.display_name()
                ))
            })?;
        if input.len() != 4 || w.len() != 4 {
            return Err(Error::Graph(format!(
                "conv `{}`: a latency table needs 2-D convolutions",
                n.display_name()
            )));
        }
        let groups = n.attr_int_or("group", 1)?.max(1) as usize;
        let (cout, cin) = (w[0], w[1] * groups);
        let axis = axes.get(name).copied().unwrap_or(Axis::Fixed);
        let (a, b) = match axis {
            Axis::Fixed => (vec![cin], vec![cout]),
            Axis::In => (widths(cin), vec![cout]),
            Axis::Out => (vec![cin], widths(cout)),
            Axis::Both => (widths(cin), widths(cout)),
            Axis::Groups => (widths(groups), vec![cout]),
        };
        let key = format!("{input:?}|{w:?}|{:?}|{axis:?}", n.attrs);
        let ms = match seen.get(&key) {
            Some(ms) => ms.clone(),
            None => {
                let mut ms = Vec::with_capacity(a.len() * b.len());
                for &x in &a {
                    for &y in &b {
                        // a grouped conv keeps its channels per group
                        let (ci, co, gr) = match axis {
                            Axis::Groups => (cin / groups * x, cout / groups * x, x),
                            _ => (x, y, groups),
                        };
                        let mut shp = input.clone();
                        shp[1] = ci;
                        let probe = single_conv(n, &shp, co, gr, &w[2..]);
                        let label = format!("conv `{}` probe", n.display_name());
                        ms.push(time_graph(&probe, batch, &label, ort)?);
                    }
                }
                note(&format!(
                    "latency table: conv {}/{} `{}` at {} widths",
                    k + 1,
                    conv_nodes.len(),
                    n.display_name(),
                    ms.len()
                ));
                seen.insert(key, ms.clone());
                ms
            }
        };
        convs.push(ConvTimes {
            conv: name.clone(),
            cin,
            cout,
            groups,
            axis,
            a,
            b,
            ms,
        });
    }
    Ok(convs)
}

/// The three whole models of the fit, each pruned for real and timed
/// interleaved with the original (pairs: more sessions at once make their
/// thread pools fight): (what, Σ probe ms, Σ block elements, measured ms).
fn calibrate(
    gated: &Graph,
    table: &LatencyTable,
    batch: usize,
    ort: &runtime::Options,
) -> Result<Vec<(String, f64, f64, f64)>> {
    let gates = crate::gate::find(gated)?;
    let mut blocks_seen = 0;
    let mut half = gated.clone();
    let mut fewer = gated.clone();
    for gt in &gates {
        if gt.kind == crate::structure::GateKind::Block {
            if blocks_seen % 2 == 0 {
                crate::gate::set_factors(&mut fewer, gt, &vec![0.0; gt.count])?;
            }
            blocks_seen += 1;
        } else {
            let kept = gt.count.div_ceil(2);
            let v: Vec<f32> = (0..gt.count).map(|i| (i < kept) as u8 as f32).collect();
            crate::gate::set_factors(&mut half, gt, &v)?;
        }
    }
    let open = |g: &Graph| -> Result<(Graph, (f64, f64))> {
        let p = crate::prune::plan::plan(g)?;
        let terms = table.terms(&crate::prune::predict::conv_shapes(g, &p));
        Ok((crate::prune::prune(g)?.0, terms))
    };
    let (original, t0) = open(gated)?;
    let mut out = vec![("original".to_string(), t0.0, t0.1, 0.0)];
    let mut originals = Vec::new();
    for (what, g) in [
        ("branches at half width", &half),
        ("every other block deleted", &fewer),
    ] {
        let (pruned, t) = open(g)?;
        let mut sessions = Vec::new();
        for (label, m) in [("the original", &original), (what, &pruned)] {
            sessions.push((
                label.to_string(),
                0,
                runtime::open_graph(m, Path::new(label), ort)?,
                inputs::random_inputs(m, batch, 3)?,
            ));
        }
        let r = crate::measure::bench::interleaved(
            &mut sessions,
            batch,
            2,
            40,
            Some(Duration::from_secs(10)),
        )?;
        originals.push(r[0].p50_ms);
        out.push((what.to_string(), t.0, t.1, r[1].p50_ms / r[0].p50_ms));
    }
    // the pairs' ratios on the original's mean time
    let m0 = originals.iter().sum::<f64>() / originals.len() as f64;
    out[0].3 = m0;
    for o in out.iter_mut().skip(1) {
        o.3 *= m0;
    }
    Ok(out)
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
