//! A branch in which some conv keeps no channel computes, from there on, a
//! value that no longer depends on the input. When that value is the same at
//! every position (per channel), the branch is replaced by that constant;
//! when it is zero, the block is deleted.

use crate::graph::{Graph, Node};
use ndarray::ArrayD;

fn f32s(g: &Graph, name: Option<&str>) -> Option<Vec<f32>> {
    Some(g.constant(name?)?.to_f32()?.iter().copied().collect())
}

/// Per-channel value after `node` given a per-channel, position-independent
/// input `v`; `None` when the output would vary with position.
pub fn step(g: &Graph, node: &Node, v: &[f32]) -> Option<Vec<f32>> {
    // the registry says which ops carry a constant; the arithmetic is here
    if !crate::graph::ops::info(node)?.collapses {
        return None;
    }
    match node.op_type.as_str() {
        "Relu" => Some(v.iter().map(|x| x.max(0.0)).collect()),
        "Identity" => Some(v.to_vec()),
        "LeakyRelu" => {
            let a = node.attr_float_or("alpha", 0.01).ok()?;
            Some(v.iter().map(|&x| if x < 0.0 { a * x } else { x }).collect())
        }
        "Clip" => {
            let lo = f32s(g, node.input(1))
                .and_then(|t| t.first().copied())
                .unwrap_or(f32::MIN);
            let hi = f32s(g, node.input(2))
                .and_then(|t| t.first().copied())
                .unwrap_or(f32::MAX);
            Some(v.iter().map(|x| x.clamp(lo, hi)).collect())
        }
        "Mul" => {
            let k = node.inputs.iter().find_map(|i| g.constant(i))?.to_f32()?;
            let k: Vec<f32> = k.iter().copied().collect();
            Some(
                v.iter()
                    .enumerate()
                    .map(|(c, x)| x * if k.len() == 1 { k[0] } else { k[c] })
                    .collect(),
            )
        }
        "BatchNormalization" => {
            let eps = node.attr_float_or("epsilon", 1e-5).ok()?;
            let (s, b) = (f32s(g, node.input(1))?, f32s(g, node.input(2))?);
            let (m, var) = (f32s(g, node.input(3))?, f32s(g, node.input(4))?);
            Some(
                (0..v.len())
                    .map(|c| s[c] * (v[c] - m[c]) / (var[c] + eps).sqrt() + b[c])
                    .collect(),
            )
        }
        "Conv" => {
            let w: ArrayD<f32> = g.constant(node.input(1)?)?.to_f32()?;
            let bias = f32s(g, node.input(2));
            let (cout, cin_g) = (w.shape()[0], w.shape()[1]);
            let groups = node.attr_int_or("group", 1).ok()?.max(1) as usize;
            let zero = v.iter().all(|&x| x == 0.0);
            let pads = node
                .attr_ints("pads")
                .ok()?
                .map(|p| p.iter().all(|&x| x == 0))
                .unwrap_or(true);
            let one_by_one = w.shape()[2..].iter().all(|&k| k == 1) && pads;
            // zero input: every position sees zeros (padding included);
            // a 1×1 conv without padding maps a constant map to a constant map
            if !zero && !one_by_one {
                return None;
            }
            let per_out = cout / groups;
            let kernel: usize = w.shape()[2..].iter().product();
            let flat = w.as_standard_layout();
            let flat = flat.as_slice()?;
            Some(
                (0..cout)
                    .map(|o| {
                        let gi = o / per_out;
                        let mut acc = bias.as_ref().map(|b| b[o]).unwrap_or(0.0);
                        if !zero {
                            for i in 0..cin_g {
                                acc += flat[(o * cin_g + i) * kernel] * v[gi * cin_g + i];
                            }
                        }
                        acc
                    })
                    .collect(),
            )
        }
        _ => None,
    }
}

/// Runs `path` (node indices, in order) on a per-channel constant `start`.
pub fn constant_through(g: &Graph, path: &[usize], start: Vec<f32>) -> Option<Vec<f32>> {
    path.iter()
        .try_fold(start, |v, &i| step(g, &g.nodes[i], &v))
}
