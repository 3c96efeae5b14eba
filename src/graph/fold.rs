//! Constant folding of the small subgraphs exporters leave around layers:
//! a raw dynamo export builds every conv bias from `Shape`/`Expand`/
//! `CastLike` of constants, legacy exports compute Pad and Reshape
//! arguments with `Unsqueeze`/`Concat`. Folded into initializers, the graph
//! has the structure the analysis recognises and that other tools'
//! shape inference can follow.

use super::shape::{self, Facts};
use super::{Graph, Tensor};
use crate::error::Result;
use std::collections::HashSet;

/// Ops whose outputs may be replaced by their values. Only cheap,
/// deterministic ops; values exist only for small tensors (`MAX_FOLD`).
const FOLDABLE: &[&str] = &[
    "Constant",
    "Shape",
    "Cast",
    "CastLike",
    "Expand",
    "Concat",
    "Unsqueeze",
    "Squeeze",
    "Reshape",
    "Transpose",
    "Flatten",
    "Gather",
    "Slice",
    "Range",
    "ConstantOfShape",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Identity",
];

/// Inputs whose *value* an op reads: `Shape` reads only its input's shape
/// (constant when the input is), `CastLike` only its second input's type.
fn value_inputs(op: &str, inputs: &[String]) -> Vec<String> {
    match op {
        "CastLike" => inputs.iter().take(1).cloned().collect(),
        _ => inputs.iter().filter(|s| !s.is_empty()).cloned().collect(),
    }
}

/// Replaces every node that computes a constant (from initializers and
/// `Constant`s only, never from the data inputs) by initializers holding
/// its outputs; returns how many nodes were folded.
pub fn fold_constants(g: &mut Graph) -> Result<usize> {
    // before IR 4 every initializer must also be listed as a graph input
    if g.ir_version < 4 || g.data_inputs().any(|v| v.shape.is_none()) {
        return Ok(0);
    }
    let facts: Facts = shape::infer(g, &shape::input_shapes(g, 1)?);
    let mut constant: HashSet<String> = g.initializers.keys().cloned().collect();
    let mut folded: Vec<(usize, Vec<(String, Tensor)>)> = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if !n.is_onnx() || !FOLDABLE.contains(&n.op_type.as_str()) {
            continue;
        }
        if n.outputs.iter().any(|o| g.is_graph_output(o)) {
            continue;
        }
        if !value_inputs(&n.op_type, &n.inputs)
            .iter()
            .all(|v| constant.contains(v))
        {
            continue;
        }
        let values: Option<Vec<(String, Tensor)>> = match weight_layout(g, n) {
            Some(t) => Some(vec![(n.outputs[0].clone(), t)]),
            None => n
                .outputs
                .iter()
                .filter(|o| !o.is_empty())
                .map(|o| {
                    facts
                        .get(o)
                        .and_then(|f| f.value.clone())
                        .map(|v| (o.clone(), v))
                })
                .collect(),
        };
        let Some(values) = values else { continue };
        for (o, _) in &values {
            constant.insert(o.clone());
        }
        folded.push((i, values));
    }
    let count = folded.len();
    let drop: HashSet<usize> = folded.iter().map(|(i, _)| *i).collect();
    for (_, values) in folded {
        for (name, t) in values {
            g.initializers.insert(name, t);
        }
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        let keep = !drop.contains(&i);
        i += 1;
        keep
    });
    // values that became initializers need no shape records of their own
    let inits = &g.initializers;
    g.value_info.retain(|v| !inits.contains_key(&v.name));
    g.remove_dead();
    Ok(count)
}

/// A weight's layout change at run time, whatever its size: `Transpose` of
/// a float initializer (a Linear's weight in an export without constant
/// folding), or `Identity` of one (an exporter's shared copy of an equal
/// tensor, which pruning must see as a tensor of its own).
fn weight_layout(g: &Graph, n: &super::Node) -> Option<Tensor> {
    let x = g.initializers.get(n.inputs.first()?)?.as_f32()?;
    match n.op_type.as_str() {
        "Identity" => Some(Tensor::F32(x.clone())),
        "Transpose" => {
            let perm: Vec<usize> = match n.attr_ints("perm").ok()? {
                Some(p) => p
                    .iter()
                    .map(|&a| usize::try_from(a).ok())
                    .collect::<Option<_>>()?,
                None => (0..x.ndim()).rev().collect(),
            };
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            (sorted == (0..x.ndim()).collect::<Vec<_>>()).then(|| {
                Tensor::F32(
                    x.clone()
                        .permuted_axes(ndarray::IxDyn(&perm))
                        .as_standard_layout()
                        .into_owned(),
                )
            })
        }
        _ => None,
    }
}
