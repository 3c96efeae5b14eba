//! Builds a latency table (`cost::latency`) by timing in ONNX Runtime:
//! every conv and linear layer alone at the widths pruning may leave it, then three whole
//! models (the original, its branches at half width, every other block
//! deleted) to fit the table's coefficients.

use super::latency::*;
use crate::error::{Error, Result};
use crate::graph::build::Builder;
use crate::graph::{shape, Attr, Graph, Node};
use crate::measure::inputs;
use crate::prune::plan::Plan;
use crate::runtime::{self, time_runs};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

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

/// A graph of a linear layer alone (MatMul by an `[cin, cout]` weight, its
/// bias Add, and the GELU after it when `gelu`, which shrinks with its
/// outputs) on an input of `input`'s shape, channels last.
fn single_linear(input: &[usize], cout: usize, gelu: bool) -> Graph {
    let dims: Vec<i64> = input.iter().map(|&d| d as i64).collect();
    let cin = input.last().copied().unwrap_or(1);
    let mut b = Builder::new("x", &dims, 7);
    let w = b.weight("w", &[cin, cout], (1.0 / cin.max(1) as f32).sqrt());
    let bias = b.weight("b", &[cout], 0.1);
    let y = b.node("MatMul", &["x", &w], vec![]);
    let mut z = b.node("Add", &[&y, &bias], vec![]);
    if gelu {
        // x · (erf(x/√2) + 1) · 0.5, as exports write it (runtimes fuse it)
        let scalar = |b: &mut Builder, name: &str, v: f32| {
            let t = b.weight(name, &[], 1.0);
            if let Some(crate::graph::Tensor::F32(a)) = b.graph.initializers.get_mut(&t) {
                a.fill(v);
            }
            t
        };
        let (r2, one, half) = (
            scalar(&mut b, "sqrt2", std::f32::consts::SQRT_2),
            scalar(&mut b, "one", 1.0),
            scalar(&mut b, "half", 0.5),
        );
        let d = b.node("Div", &[&z, &r2], vec![]);
        let e = b.node("Erf", &[&d], vec![]);
        let e = b.node("Add", &[&e, &one], vec![]);
        let m = b.node("Mul", &[&z, &e], vec![]);
        z = b.node("Mul", &[&m, &half], vec![]);
    }
    let mut g = b.finish(&z);
    g.outputs[0].shape = None;
    g
}

/// Whether a GELU (the op, or its erf form) follows linear layer `n`,
/// after its bias Add when it has one.
fn gelu_after(g: &Graph, cons: &HashMap<&str, Vec<usize>>, n: &Node) -> bool {
    let sole = |v: &str| match cons.get(v).map(|c| c.as_slice()) {
        Some([r]) => Some(&g.nodes[*r]),
        _ => None,
    };
    let readers = |v: &str| cons.get(v).map(|c| c.len()).unwrap_or(0);
    let mut v = n.outputs[0].as_str();
    if let Some(add) = sole(v).filter(|a| a.op_type == "Add") {
        v = add.outputs[0].as_str();
    }
    match cons.get(v).map(|c| c.as_slice()) {
        Some([r]) => g.nodes[*r].op_type == "Gelu",
        // x/√2 → Erf, and the product reading x
        Some(rs) if readers(v) == 2 => rs.iter().any(|&r| {
            g.nodes[r].op_type == "Div"
                && sole(&g.nodes[r].outputs[0]).is_some_and(|e| e.op_type == "Erf")
        }),
        _ => false,
    }
}

/// Whether `n` is a linear layer (a MatMul by a constant 2-D weight).
fn is_linear(g: &Graph, n: &Node) -> bool {
    n.op_type == "MatMul"
        && n.input(1)
            .and_then(|w| g.initializers.get(w))
            .is_some_and(|w| w.shape().len() == 2)
}

/// Share of the MACs in matrix products the table does not time, above
/// which its predictions cannot follow the model.
const MAX_UNTIMED: f64 = 0.05;

/// An error when much of `g`'s work is in matrix products the table does
/// not time (attention's products of two computed values, Gemm layers):
/// deleting a block that holds them saves time the table cannot see, so
/// a latency target would be overshot. A classifier's Gemm head is far
/// below the bound.
fn untimed_share(g: &Graph, facts: &shape::Facts) -> Result<()> {
    let cost = crate::graph::counts::count(g, facts);
    let untimed: u64 = g
        .nodes
        .iter()
        .zip(&cost.per_node)
        .filter(|(n, _)| matches!(n.op_type.as_str(), "MatMul" | "Gemm") && !is_linear(g, n))
        .map(|(_, c)| c.macs)
        .sum();
    let share = untimed as f64 / cost.macs.max(1) as f64;
    if share > MAX_UNTIMED {
        return Err(Error::Invalid(format!(
            "the latency table times convolutions and linear layers (MatMul by a weight); {:.0} % of this model's MACs are in other matrix products (attention scores and values, Gemm layers), whose time it cannot attribute, so a latency target would miss: use --target-macs",
            share * 100.0
        )));
    }
    Ok(())
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
    untimed_share(gated, &facts)?;
    let convs = probe_convs(gated, &plan, &facts, batch, &ort, &mut note)?;
    let blocks: Vec<BlockRest> = plan
        .blocks
        .iter()
        .filter(|bp| bp.block.shortcut != crate::structure::Shortcut::Absent)
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
        fit: Coefficients {
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
            (dp > 1e-9 && dm > 0.0 && c[0].3 - dm / dp * c[0].1 >= 0.0).then(|| Coefficients {
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
    let cons = gated.consumers();
    let conv_nodes: Vec<&Node> = gated
        .nodes
        .iter()
        .filter(|n| n.op_type == "Conv" || is_linear(gated, n))
        .collect();
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
        let linear = n.op_type == "MatMul";
        if !linear && (input.len() != 4 || w.len() != 4) {
            return Err(Error::Graph(format!(
                "conv `{}`: a latency table needs 2-D convolutions",
                n.display_name()
            )));
        }
        let groups = n.attr_int_or("group", 1)?.max(1) as usize;
        let (cout, cin) = if linear {
            (w[1], w[0])
        } else {
            (w[0], w[1] * groups)
        };
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
                        let probe = if linear {
                            if let Some(last) = shp.last_mut() {
                                *last = ci;
                            }
                            single_linear(&shp, co, gelu_after(gated, &cons, n))
                        } else {
                            shp[1] = ci;
                            single_conv(n, &shp, co, gr, &w[2..])
                        };
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
