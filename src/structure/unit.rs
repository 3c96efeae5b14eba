//! Multi-node units block detection walks through as through one op.
//! Normalizations exported as arithmetic: below opset 17 a LayerNorm is
//! `(x − mean(x)) / sqrt(mean((x − mean(x))²) + ε) · γ + β`, a dozen
//! elementwise and reduce nodes that read `x` and constants alone. And a
//! transformer's attention core: from the packed QKV projection's output
//! to the heads merged again, the heads split by Reshape/Transpose and
//! picked by Gather/Slice/Split, scores by MatMul of two computed values,
//! scaled, Softmax, and the MatMul with V. Only weightless ops qualify, so
//! a unit never swallows a conv, a linear layer or a block.

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

/// Ops an attention core may hold (a MatMul only of two computed values;
/// Shape and what computes on its result are the reshapes' targets).
const ATTENTION_OPS: &[&str] = &[
    "MatMul",
    "Softmax",
    "Transpose",
    "Reshape",
    "Gather",
    "Slice",
    "Split",
    "Squeeze",
    "Unsqueeze",
    "Mul",
    "Div",
    "Add",
    "Sqrt",
    "Cast",
    "Shape",
    "Concat",
    "Identity",
    "Mod",
    "Equal",
    "Where",
    "ConstantOfShape",
    "Expand",
];

/// Nodes an attention core may hold at most.
const MAX_ATTENTION: usize = 96;

/// When value `v` is an attention core's output computed from one
/// non-constant value (the packed QKV projection, bias included): that
/// value and the core's node indices in graph order. The values Shape
/// nodes read do not count as inputs: they give shapes, not data.
pub fn attention(g: &Graph, prod: &HashMap<&str, usize>, v: &str) -> Option<(String, Vec<usize>)> {
    let (mut nodes, mut outside) = (HashSet::new(), HashSet::new());
    // nodes reached through their data (not only through a Shape): their
    // inputs are data too, however they were first reached
    let mut through_data = HashSet::new();
    let mut todo = vec![(v.to_string(), false)];
    while let Some((v, shape_only)) = todo.pop() {
        if v.is_empty() || g.is_constant(&v) {
            continue;
        }
        let inside = prod.get(v.as_str()).copied().filter(|&p| {
            let n = &g.nodes[p];
            let computed = |i: usize| n.input(i).is_some_and(|x| !g.is_constant(x));
            n.is_onnx()
                && ATTENTION_OPS.contains(&n.op_type.as_str())
                && (n.op_type != "MatMul" || (computed(0) && computed(1)))
        });
        match inside {
            Some(p) => {
                let first = nodes.insert(p);
                let data_now = !shape_only && through_data.insert(p);
                if nodes.len() > MAX_ATTENTION {
                    return None;
                }
                if first || data_now {
                    let n = &g.nodes[p];
                    // a Shape reads no data; a reshape, slice or gather
                    // reads data at input 0 only (the rest are shapes,
                    // bounds, axes and indices)
                    let indexing = matches!(
                        n.op_type.as_str(),
                        "Reshape"
                            | "Expand"
                            | "Slice"
                            | "Squeeze"
                            | "Unsqueeze"
                            | "Gather"
                            | "Split"
                    );
                    todo.extend(n.inputs.iter().enumerate().map(|(k, i)| {
                        let reads_shape = shape_only || n.op_type == "Shape" || (indexing && k > 0);
                        (i.clone(), reads_shape)
                    }));
                }
            }
            None if shape_only => {}
            None => {
                outside.insert(v);
            }
        }
    }
    let scores = nodes
        .iter()
        .filter(|&&i| g.nodes[i].op_type == "MatMul")
        .count();
    let softmax = nodes.iter().any(|&i| g.nodes[i].op_type == "Softmax");
    if outside.len() != 1 || scores < 2 || !softmax {
        return None;
    }
    // every data value computed inside is read inside only (no side
    // output; a Shape node outside reads a shape, not data, and shape
    // arithmetic may be read anywhere)
    let readers = g.consumers();
    let out_node = prod.get(v).copied()?;
    for &i in &through_data {
        for o in &g.nodes[i].outputs {
            let inside = readers.get(o.as_str()).is_none_or(|r| {
                r.iter()
                    .all(|&x| nodes.contains(&x) || g.nodes[x].op_type == "Shape")
            });
            if i != out_node && (!inside || g.is_graph_output(o)) {
                return None;
            }
        }
    }
    let x = outside.into_iter().next()?;
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
