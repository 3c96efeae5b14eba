//! Normalizations exported as arithmetic: below opset 17 a LayerNorm is
//! `(x − mean(x)) / sqrt(mean((x − mean(x))²) + ε) · γ + β`, a dozen
//! elementwise and reduce nodes that read `x` and constants alone. Block
//! detection walks through such a unit as through one op. Only weightless
//! ops qualify, so a unit never swallows a conv, a linear layer or a block.

use crate::graph::Graph;
use std::collections::{HashMap, HashSet};

/// Ops a unit may hold.
const UNIT_OPS: &[&str] = &[
    "ReduceMean",
    "Sub",
    "Pow",
    "Sqrt",
    "Div",
    "Add",
    "Mul",
    "Reciprocal",
];

/// Nodes a unit may hold at most.
const MAX_UNIT: usize = 16;

/// The nodes computing `v` backwards through unit ops, not expanding past
/// `stop`, at most `limit`: the nodes and the values read from outside.
fn collect(
    g: &Graph,
    prod: &HashMap<&str, usize>,
    v: &str,
    stop: Option<&str>,
    limit: usize,
) -> Option<(HashSet<usize>, HashSet<String>)> {
    let (mut nodes, mut outside) = (HashSet::new(), HashSet::new());
    let mut todo = vec![v.to_string()];
    while let Some(v) = todo.pop() {
        if v.is_empty() || g.is_constant(&v) {
            continue;
        }
        let inside = prod.get(v.as_str()).copied().filter(|&p| {
            let n = &g.nodes[p];
            stop != Some(v.as_str()) && n.is_onnx() && UNIT_OPS.contains(&n.op_type.as_str())
        });
        match inside {
            Some(p) => {
                if nodes.insert(p) {
                    if nodes.len() > limit {
                        return None;
                    }
                    todo.extend(g.nodes[p].inputs.iter().cloned());
                }
            }
            None => {
                outside.insert(v);
            }
        }
    }
    Some((nodes, outside))
}

/// When value `v` is computed from one non-constant value `x` by a unit
/// that takes a mean over it (a LayerNorm, RMSNorm): `x` and the unit's
/// node indices in graph order. `x` is what the first mean reads: the
/// block input before it may itself be a residual Add, arithmetic too.
pub fn unit(g: &Graph, prod: &HashMap<&str, usize>, v: &str) -> Option<(String, Vec<usize>)> {
    let (reach, _) = collect(g, prod, v, None, 4 * MAX_UNIT)?;
    let first_mean = reach
        .iter()
        .copied()
        .filter(|&i| g.nodes[i].op_type == "ReduceMean")
        .min()?;
    let x = g.nodes[first_mean].inputs.first()?.clone();
    let (nodes, outside) = collect(g, prod, v, Some(&x), MAX_UNIT)?;
    if outside.len() != 1 || !outside.contains(&x) {
        return None;
    }
    let mut nodes: Vec<usize> = nodes.into_iter().collect();
    nodes.sort_unstable();
    Some((x, nodes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::build::Builder;

    #[test]
    fn a_decomposed_layer_norm_is_one_unit_a_residual_sum_is_not() {
        let mut b = Builder::new("x", &[-1, 4, 4, 8], 0);
        let m = b.node("ReduceMean", &["x"], vec![]);
        let d = b.node("Sub", &["x", &m], vec![]);
        let sq = b.node("Mul", &[&d, &d], vec![]);
        let v = b.node("ReduceMean", &[&sq], vec![]);
        let s = b.node("Sqrt", &[&v], vec![]);
        let y = b.node("Div", &[&d, &s], vec![]);
        let r = b.relu(&y);
        let p = b.node("Mul", &["x", "x"], vec![]);
        let z = b.node("Add", &[&r, &p], vec![]);
        let g = b.finish(&z);
        let prod = g.producers();
        let (x, nodes) = unit(&g, &prod, &y).unwrap();
        assert_eq!((x.as_str(), nodes.len()), ("x", 6));
        // the sum reads the unit's output through a Relu and x: two
        // sources; a product without a mean is no unit
        assert!(unit(&g, &prod, &z).is_none());
        assert!(unit(&g, &prod, &p).is_none());
    }
}
