//! Blocks without a shortcut: a depthwise conv between pointwise convs
//! (MobileNetV2's blocks that change width or resolution: expand 1×1 →
//! depthwise k×k → project 1×1, with their BNs and activations). Such a
//! block cannot be deleted whole, but its expansion channels can, exactly
//! as in a residual one.

use super::blocks::{branch_convs, data_input};
use super::self_gate::through;
use super::{Block, Shortcut};
use crate::graph::{Graph, Node};
use std::collections::{HashMap, HashSet};

/// Whether `n` is a depthwise conv (one filter per channel).
fn is_depthwise(g: &Graph, n: &Node) -> bool {
    if n.op_type != "Conv" {
        return false;
    }
    let groups = n.attr_int_or("group", 1).unwrap_or(1).max(1) as usize;
    let shape = n
        .input(1)
        .and_then(|w| g.initializers.get(w))
        .map(|w| w.shape().to_vec())
        .unwrap_or_default();
    groups > 1 && shape.get(1) == Some(&1) && shape.first() == Some(&groups)
}

/// The one node through which `v`'s data goes on: its only reader, or a
/// self-gated product whose side computation holds every other reader.
fn next_reader(
    g: &Graph,
    prod: &HashMap<&str, usize>,
    cons: &HashMap<&str, Vec<usize>>,
    v: &str,
) -> Option<usize> {
    if g.is_graph_output(v) {
        return None;
    }
    match cons.get(v)?.as_slice() {
        [r] => Some(*r),
        readers => through(g, prod, readers, v).map(|(m, _)| m),
    }
}

/// From value `v`, the single-reader path of elementwise ops up to the
/// next Conv reading it as its data input: the nodes passed and the conv.
fn forward_to_conv(
    g: &Graph,
    prod: &HashMap<&str, usize>,
    cons: &HashMap<&str, Vec<usize>>,
    mut v: String,
) -> Option<(Vec<usize>, usize)> {
    let mut path = Vec::new();
    for _ in 0..16 {
        let r = next_reader(g, prod, cons, &v)?;
        let n = &g.nodes[r];
        if n.op_type == "Conv" {
            return (n.inputs.first() == Some(&v)).then_some((path, r));
        }
        data_input(g, prod, n).filter(|&i| n.inputs[i] == v)?;
        path.push(r);
        v = n.outputs.first()?.clone();
    }
    None
}

/// Back from the depthwise conv's input over single-reader elementwise ops
/// to a plain conv (the expansion): the nodes passed and the conv.
fn back_to_conv(
    g: &Graph,
    prod: &HashMap<&str, usize>,
    cons: &HashMap<&str, Vec<usize>>,
    mut v: String,
) -> Option<(Vec<usize>, usize)> {
    let mut path = Vec::new();
    for _ in 0..16 {
        next_reader(g, prod, cons, &v)?;
        let &p = prod.get(v.as_str())?;
        let n = &g.nodes[p];
        if n.op_type == "Conv" {
            let groups = n.attr_int_or("group", 1).unwrap_or(1);
            return (groups == 1).then_some((path, p));
        }
        let i = data_input(g, prod, n)?;
        path.push(p);
        v = n.inputs[i].clone();
    }
    None
}

/// The blocks without a shortcut around every depthwise conv not already
/// in a residual block's branch (`taken`, by conv output).
pub(super) fn find(g: &Graph, taken: &HashSet<String>) -> Vec<Block> {
    let prod = g.producers();
    let cons = g.consumers();
    let mut out = Vec::new();
    for (d, n) in g.nodes.iter().enumerate() {
        if !n.is_onnx() || !is_depthwise(g, n) || taken.contains(&n.outputs[0]) {
            continue;
        }
        // depthwise → (BN, activation) → project conv
        let Some((after, p)) = forward_to_conv(g, &prod, &cons, n.outputs[0].clone()) else {
            continue;
        };
        let project = &g.nodes[p];
        if project.attr_int_or("group", 1).unwrap_or(1) != 1 {
            continue;
        }
        // the project conv's BN, when it has one read only by it
        let bn = cons
            .get(project.outputs[0].as_str())
            .and_then(|c| match c.as_slice() {
                [b] if g.nodes[*b].op_type == "BatchNormalization" => Some(*b),
                _ => None,
            });
        // expand conv → (BN, activation) → depthwise, when there is one
        let before = n
            .inputs
            .first()
            .and_then(|x| back_to_conv(g, &prod, &cons, x.clone()));
        let mut path: Vec<usize> = Vec::new();
        let input = match &before {
            Some((between, e)) => {
                path.push(*e);
                path.extend(between.iter().rev());
                g.nodes[*e].inputs.first().cloned().unwrap_or_default()
            }
            None => n.inputs.first().cloned().unwrap_or_default(),
        };
        path.push(d);
        path.extend(&after);
        path.push(p);
        path.extend(bn);
        let output = g.nodes[*path.last().unwrap_or(&p)].outputs[0].clone();
        let convs = branch_convs(g, &path, &cons);
        out.push(Block {
            id: 0,
            stage: 0,
            add: output.clone(),
            add_name: project.display_name(),
            input,
            branch_output: output,
            shortcut: Shortcut::Absent,
            out_channels: convs.last().map(|c| c.out_channels).unwrap_or(0),
            convs,
            post_relu: None,
            squeezes: vec![],
        });
    }
    out
}
