//! Residual-block detection by walking back from every Add.

use super::{Block, BranchConv, Shortcut, Skipped};
use crate::graph::{Graph, Node};
use std::collections::HashMap;

/// Ops a branch or shortcut may pass through, with the input that carries
/// the data. Mul/Div/Add only with a constant other operand (gates, scales)
/// or, for Mul, a factor computed from the data alone (SiLU, SE).
pub(super) fn data_input(g: &Graph, prod: &HashMap<&str, usize>, n: &Node) -> Option<usize> {
    use crate::graph::ops::{self, PathRole};
    if let Some(sg) = super::self_gate::self_gate(g, prod, n) {
        return Some(sg.data);
    }
    let is_const = |i: usize| n.input(i).is_some_and(|v| g.is_constant(v));
    match ops::info(n)?.path {
        PathRole::Stop => None,
        PathRole::First => Some(0),
        PathRole::ConvInput => is_const(1).then_some(0),
        PathRole::ConstOperand { commutes } if n.inputs.len() == 2 => {
            match (is_const(0), is_const(1)) {
                (false, true) => Some(0),
                (true, false) if commutes => Some(1),
                _ => None,
            }
        }
        PathRole::ConstOperand { .. } => None,
    }
}

struct Walk {
    /// Where the walk stopped: a fork (several readers) or a non-path op.
    stop: String,
    /// Nodes from the stop value forward to the Add input.
    path: Vec<usize>,
}

fn walk_back(
    g: &Graph,
    prod: &HashMap<&str, usize>,
    cons: &HashMap<&str, Vec<usize>>,
    start: &str,
) -> Walk {
    let mut v = start.to_string();
    let mut path = Vec::new();
    let mut last: Vec<usize> = Vec::new();
    loop {
        // a Shape node reads the value's shape, not its data
        let readers: Vec<usize> = cons
            .get(v.as_str())
            .map(|c| c.as_slice())
            .unwrap_or(&[])
            .iter()
            .copied()
            .filter(|&r| g.nodes[r].op_type != "Shape")
            .collect();
        let readers = readers.as_slice();
        // a value read by a self-gated product and its side computation
        // alone, or by the unit just walked through alone, goes on as if
        // read once
        let single = readers.len() == 1
            || (readers.len() > 1 && readers.iter().all(|r| last.contains(r)))
            || (readers.len() > 1 && super::self_gate::through(g, prod, readers, &v).is_some());
        if !single || g.is_graph_output(&v) {
            break;
        }
        let Some((from, nodes)) = step_back(g, prod, &v) else {
            break;
        };
        path.extend(nodes.iter().rev());
        last = nodes;
        v = from;
    }
    path.reverse();
    Walk { stop: v, path }
}

/// One step back from value `v` along a path: the value its producer's
/// data comes from and the nodes passed (one op, or a normalization unit
/// in graph order).
fn step_back(g: &Graph, prod: &HashMap<&str, usize>, v: &str) -> Option<(String, Vec<usize>)> {
    let &p = prod.get(v)?;
    let n = &g.nodes[p];
    match data_input(g, prod, n).or_else(|| branch_layout(g, n)) {
        Some(i) => Some((n.inputs[i].clone(), vec![p])),
        None => super::unit::unit(g, prod, v).or_else(|| super::unit::attention(g, prod, v)),
    }
}

/// Inside a branch, ops a transformer's sub-block passes its tokens
/// through: a reshape of the data (input 0; the target may be computed
/// from shapes), and a Gemm by a constant weight (a linear layer on
/// flattened tokens).
fn branch_layout(g: &Graph, n: &Node) -> Option<usize> {
    if !n.is_onnx() {
        return None;
    }
    match n.op_type.as_str() {
        "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => Some(0),
        "Gemm" if n.attr_int_or("transA", 0).ok()? == 0 && g.is_constant(n.input(1)?) => Some(0),
        _ => None,
    }
}

enum Side {
    Shortcut(Shortcut),
    Branch,
    Other(String),
}

fn classify(g: &Graph, path: &[usize]) -> Side {
    let ops: Vec<&str> = path.iter().map(|&i| g.nodes[i].op_type.as_str()).collect();
    let convs: Vec<usize> = path
        .iter()
        .copied()
        .filter(|&i| g.nodes[i].op_type == "Conv")
        .collect();
    if path.is_empty() {
        return Side::Shortcut(Shortcut::Identity);
    }
    // a linear layer (MatMul by a constant weight) makes a branch as a
    // conv does: channels-last and transformer blocks
    if convs.is_empty() && ops.contains(&"MatMul") {
        return Side::Branch;
    }
    if convs.is_empty() {
        if ops.contains(&"Pad")
            && ops
                .iter()
                .all(|o| matches!(*o, "Slice" | "Pad" | "Identity"))
        {
            return Side::Shortcut(Shortcut::SubsamplePad);
        }
        return Side::Other(format!("a path of {ops:?} without convolution"));
    }
    if convs.len() == 1 {
        let w = g.nodes[convs[0]]
            .input(1)
            .and_then(|w| g.initializers.get(w));
        let one_by_one = w.is_some_and(|w| w.shape().iter().skip(2).all(|&k| k == 1));
        if one_by_one
            && ops.iter().all(|o| {
                matches!(
                    *o,
                    "Conv" | "BatchNormalization" | "Identity" | "AveragePool"
                )
            })
        {
            return Side::Shortcut(Shortcut::Projection);
        }
    }
    Side::Branch
}

/// Finds the blocks of `g` in graph order, with stages: residual blocks,
/// and depthwise convs between two pointwise convs without a shortcut
/// (`Shortcut::Absent`: MobileNets' blocks that change width or
/// resolution).
pub fn find_blocks(g: &Graph) -> (Vec<Block>, Vec<Skipped>) {
    let (mut blocks, skipped) = residual_blocks(g);
    let taken: std::collections::HashSet<String> = blocks
        .iter()
        .flat_map(|b| b.convs.iter().map(|c| c.conv.clone()))
        .collect();
    blocks.extend(super::chains::find(g, &taken));
    // graph order: by the position of the node producing each block's output
    let position: HashMap<&str, usize> = g
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect();
    blocks.sort_by_key(|b| position.get(b.add.as_str()).copied().unwrap_or(usize::MAX));
    for i in 0..blocks.len() {
        blocks[i].id = i;
        // a stage is a run of blocks at one resolution and width: a new one
        // starts at a shortcut that changes them (or a block without one),
        // or where the block does not read the previous block's output
        blocks[i].stage = match i.checked_sub(1).map(|p| &blocks[p]) {
            None => 0,
            Some(prev)
                if blocks[i].shortcut != Shortcut::Identity
                    || (prev.add != blocks[i].input
                        && prev.post_relu.as_ref() != Some(&blocks[i].input)) =>
            {
                prev.stage + 1
            }
            Some(prev) => prev.stage,
        };
        let path = branch_path(g, &blocks[i]);
        blocks[i].squeezes = super::self_gate::squeezes(g, &path);
    }
    (blocks, skipped)
}

/// The residual blocks: every Add whose inputs meet at one value, one side
/// a convolutional branch, the other a shortcut.
fn residual_blocks(g: &Graph) -> (Vec<Block>, Vec<Skipped>) {
    let prod = g.producers();
    let cons = g.consumers();
    let mut blocks: Vec<Block> = Vec::new();
    let mut skipped = Vec::new();
    for n in &g.nodes {
        if !(n.op_type == "Add" || n.op_type == "Sum") || n.inputs.len() != 2 || !n.is_onnx() {
            continue;
        }
        if n.inputs.iter().any(|i| g.is_constant(i)) {
            continue; // a bias add, not a merge
        }
        let what = format!("{} `{}`", n.op_type, n.display_name());
        let walks = [
            walk_back(g, &prod, &cons, &n.inputs[0]),
            walk_back(g, &prod, &cons, &n.inputs[1]),
        ];
        if walks[0].stop != walks[1].stop {
            skipped.push(Skipped {
                what,
                reason: format!(
                    "its inputs do not meet at one block input (they reach `{}` and `{}`)",
                    walks[0].stop, walks[1].stop
                ),
            });
            continue;
        }
        let sides = [classify(g, &walks[0].path), classify(g, &walks[1].path)];
        let (bi, shortcut) = match (&sides[0], &sides[1]) {
            (Side::Branch, Side::Shortcut(s)) => (0, s.clone()),
            (Side::Shortcut(s), Side::Branch) => (1, s.clone()),
            (Side::Other(r), _) | (_, Side::Other(r)) => {
                skipped.push(Skipped {
                    what,
                    reason: format!("one input comes through {r}"),
                });
                continue;
            }
            _ => {
                skipped.push(Skipped {
                    what,
                    reason: "cannot tell branch from shortcut (both or neither are convolutional branches)".into(),
                });
                continue;
            }
        };
        let path = &walks[bi].path;
        let convs = branch_convs(g, path, &cons);
        let out_channels = convs.last().map(|c| c.out_channels).unwrap_or(0);
        let add_out = n.outputs[0].clone();
        let post_relu = cons.get(add_out.as_str()).and_then(|c| match c.as_slice() {
            [r] if g.nodes[*r].op_type == "Relu" => Some(g.nodes[*r].outputs[0].clone()),
            _ => None,
        });
        blocks.push(Block {
            id: blocks.len(),
            stage: 0,
            add: add_out,
            add_name: n.display_name(),
            input: walks[bi].stop.clone(),
            branch_output: n.inputs[bi].clone(),
            shortcut,
            convs,
            out_channels,
            post_relu,
            squeezes: vec![],
        });
    }
    (blocks, skipped)
}

pub(super) fn branch_convs(
    g: &Graph,
    path: &[usize],
    cons: &HashMap<&str, Vec<usize>>,
) -> Vec<BranchConv> {
    let mut out = Vec::new();
    for (k, &i) in path.iter().enumerate() {
        let n = &g.nodes[i];
        if n.op_type == "MatMul" {
            out.extend(linear(g, path, k, cons));
            continue;
        }
        if n.op_type == "Gemm" {
            out.extend(gemm_layer(g, n));
            continue;
        }
        if n.op_type != "Conv" {
            continue;
        }
        // a BN directly after the conv (and read only by the path) is its BN
        let bn = path.get(k + 1).map(|&j| &g.nodes[j]).filter(|m| {
            m.op_type == "BatchNormalization"
                && cons.get(n.outputs[0].as_str()).map(|c| c.len()) == Some(1)
        });
        out.push(conv_layer(g, n, bn.map(|b| b.outputs[0].clone())));
    }
    out
}

/// Conv node `n` as a `BranchConv`, with its BN's output when it has one.
pub(super) fn conv_layer(g: &Graph, n: &Node, bn: Option<String>) -> BranchConv {
    let shape = n
        .input(1)
        .and_then(|w| g.initializers.get(w))
        .map(|w| w.shape())
        .unwrap_or_default();
    let groups = n.attr_int_or("group", 1).unwrap_or(1).max(1) as usize;
    let cout = shape.first().copied().unwrap_or(0);
    let cin_per_group = shape.get(1).copied().unwrap_or(0);
    BranchConv {
        conv: n.outputs[0].clone(),
        conv_name: n.display_name(),
        gate_at: bn.clone().unwrap_or_else(|| n.outputs[0].clone()),
        bn,
        out_channels: cout,
        groups,
        depthwise: groups > 1 && cin_per_group == 1 && cout == groups,
        linear: false,
        gemm: false,
    }
}

/// A Gemm by a constant weight on a branch's path (transA 0: what
/// `branch_layout` steps through).
fn gemm_layer(g: &Graph, n: &Node) -> Option<BranchConv> {
    let w = g.constant(n.input(1)?)?;
    let &[r, c] = w.shape().as_slice() else {
        return None;
    };
    let cout = if n.attr_int_or("transB", 0).ok()? != 0 {
        r
    } else {
        c
    };
    let out = n.outputs[0].clone();
    Some(BranchConv {
        conv: out.clone(),
        conv_name: n.display_name(),
        bn: None,
        gate_at: out,
        out_channels: cout,
        groups: 1,
        depthwise: false,
        linear: true,
        gemm: true,
    })
}

/// The linear layer at `path[k]` (a MatMul by a constant 2-D weight), with
/// its bias Add (a constant `[out]` operand) when one follows.
fn linear(
    g: &Graph,
    path: &[usize],
    k: usize,
    cons: &HashMap<&str, Vec<usize>>,
) -> Option<BranchConv> {
    let n = &g.nodes[path[k]];
    let w = g.constant(n.input(1)?)?;
    let &[_, cout] = w.shape().as_slice() else {
        return None;
    };
    let single = cons.get(n.outputs[0].as_str()).map(|c| c.len()) == Some(1);
    let bias = path.get(k + 1).map(|&j| &g.nodes[j]).filter(|m| {
        single
            && m.op_type == "Add"
            && m.inputs.len() == 2
            && m.inputs.iter().any(|i| {
                g.initializers
                    .get(i.as_str())
                    .is_some_and(|t| t.shape() == [cout])
            })
    });
    let out = n.outputs[0].clone();
    Some(BranchConv {
        conv: out.clone(),
        conv_name: n.display_name(),
        bn: bias.map(|b| b.outputs[0].clone()),
        gate_at: bias.map(|b| b.outputs[0].clone()).unwrap_or(out),
        out_channels: cout,
        groups: 1,
        depthwise: false,
        linear: true,
        gemm: false,
    })
}

/// The nodes of a block's branch in order, from the block input to the
/// branch output (the Add's branch-side input).
pub fn branch_path(g: &Graph, b: &Block) -> Vec<usize> {
    let prod = g.producers();
    let mut path = Vec::new();
    let mut v = b.branch_output.clone();
    while v != b.input {
        let Some((from, nodes)) = step_back(g, &prod, &v) else {
            break;
        };
        path.extend(nodes.iter().rev());
        v = from;
    }
    path.reverse();
    path
}
