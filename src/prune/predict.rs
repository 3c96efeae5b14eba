//! What pruning will leave, computed from the gated graph's shapes and the
//! zero pattern alone (channel arithmetic per conv), so the rewrite can be
//! checked against an independent prediction.

use super::plan::{BlockFate, Plan};
use crate::graph::shape::Facts;
use crate::graph::{Graph, Tensor};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub macs: u64,
    pub params: u64,
}

/// A conv's channels and groups after pruning, or that it goes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub cout: usize,
    pub cin: usize,
    pub groups: usize,
    pub removed: bool,
}

/// Every conv's geometry after pruning, by the conv's output name.
pub fn conv_shapes<'g>(g: &'g Graph, plan: &Plan) -> HashMap<&'g str, ConvShape> {
    // start from every conv's own geometry, then apply the plan
    let mut convs: HashMap<&str, ConvShape> = HashMap::new();
    // linear layers (MatMul by a constant [in, out] weight) as 1×1 convs
    for n in g.nodes.iter().filter(|n| n.op_type == "MatMul") {
        let Some(w) = n.input(1).and_then(|w| g.initializers.get(w)) else {
            continue;
        };
        if let &[cin, cout] = w.shape().as_slice() {
            convs.insert(
                n.outputs[0].as_str(),
                ConvShape {
                    cout,
                    cin,
                    groups: 1,
                    removed: false,
                },
            );
        }
    }
    for n in g.nodes.iter().filter(|n| n.op_type == "Conv") {
        let w = n
            .input(1)
            .and_then(|w| g.initializers.get(w))
            .map(|t| t.shape())
            .unwrap_or_default();
        let groups = n.attr_int_or("group", 1).unwrap_or(1).max(1) as usize;
        convs.insert(
            n.outputs[0].as_str(),
            ConvShape {
                cout: w.first().copied().unwrap_or(0),
                cin: w.get(1).copied().unwrap_or(0) * groups,
                groups,
                removed: false,
            },
        );
    }
    let (prod, cons) = (g.producers(), g.consumers());
    for bp in &plan.blocks {
        let b = &bp.block;
        match bp.fate {
            BlockFate::Deleted | BlockFate::Constant => {
                for c in &b.convs {
                    if let Some(x) = convs.get_mut(c.conv.as_str()) {
                        x.removed = true;
                    }
                }
                // and the squeeze-and-excitation convs on the branch
                for &i in &crate::structure::branch_path(g, b) {
                    let Some(sg) = crate::structure::self_gate::self_gate(g, &prod, &g.nodes[i])
                    else {
                        continue;
                    };
                    for c in sg.reads.iter().chain(&sg.gives) {
                        if let Some(x) = convs.get_mut(c.as_str()) {
                            x.removed = true;
                        }
                    }
                }
            }
            BlockFate::Kept => {
                for (q, cg) in b.squeezes.iter().zip(&bp.squeezes) {
                    let Some(cg) = cg else { continue };
                    let kept = cg.keep.iter().filter(|&&k| k).count();
                    if let Some(x) = convs.get_mut(q.reduce.conv.as_str()) {
                        x.cout = kept;
                    }
                    if let Some(x) = convs.get_mut(q.excite.as_str()) {
                        x.cin = kept;
                    }
                }
                for (i, cg) in bp.convs.iter().enumerate() {
                    let Some(cg) = cg else { continue };
                    // the plan's decision (a channel it keeps zeroed counts)
                    let kept = cg.keep.iter().filter(|&&k| k).count();
                    let this = b.convs[i].conv.as_str();
                    let next = b.convs.get(i + 1).map(|c| c.conv.as_str());
                    // squeeze-and-excitation convs between follow the channels
                    if let Some(n) = next {
                        let gate_at = b.convs[i].gate_at.as_str();
                        for sg in
                            crate::structure::path::self_gates_between(g, &prod, &cons, gate_at, n)
                        {
                            let width = if cg.is_group() { kept * cg.span } else { kept };
                            for c in &sg.reads {
                                if let Some(x) = convs.get_mut(c.as_str()) {
                                    x.cin = width;
                                }
                            }
                            for c in &sg.gives {
                                if let Some(x) = convs.get_mut(c.as_str()) {
                                    x.cout = width;
                                }
                            }
                        }
                    }
                    if !cg.is_group() {
                        if let Some(x) = convs.get_mut(this) {
                            x.cout = kept;
                        }
                        if let Some(x) = next.and_then(|n| convs.get_mut(n)) {
                            x.cin = kept;
                        }
                    } else {
                        let per_in = convs[this].cin / cg.factors.len();
                        if let Some(x) = convs.get_mut(this) {
                            x.cout = kept * cg.span;
                            x.cin = kept * per_in;
                            x.groups = kept;
                        }
                        if let Some(prev) = i.checked_sub(1).map(|p| b.convs[p].conv.as_str()) {
                            if let Some(x) = convs.get_mut(prev) {
                                x.cout = kept * per_in;
                            }
                        }
                        if let Some(x) = next.and_then(|n| convs.get_mut(n)) {
                            x.cin = kept * cg.span;
                        }
                    }
                }
            }
        }
    }
    convs
}

pub fn predict(g: &Graph, facts: &Facts, plan: &Plan) -> Counts {
    let convs = conv_shapes(g, plan);
    // a block replaced by a constant keeps one value per output channel
    let constants: u64 = plan
        .blocks
        .iter()
        .filter(|bp| bp.fate == BlockFate::Constant)
        .map(|bp| bp.block.out_channels as u64)
        .sum();
    let removed = removed_nodes(g, plan);
    let prod = g.producers();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut macs = 0u64;
    // a kept block factor that cannot fold stays, one value per element
    let kept_factors: u64 = plan
        .blocks
        .iter()
        .filter(|bp| bp.fate == BlockFate::Kept)
        .filter_map(|bp| bp.block_gate.as_ref().map(|(gt, _)| (bp, gt)))
        .filter(|(bp, gt)| !super::block_factor_folds(g, &bp.block, gt))
        .map(|(_, gt)| g.initializers.get(&gt.name).map_or(0, |t| t.len() as u64))
        .sum();
    let mut params = constants + kept_factors;
    for (idx, n) in g.nodes.iter().enumerate() {
        if removed.contains(&idx) {
            continue;
        }
        let out = n.outputs.first().map(|s| s.as_str()).unwrap_or("");
        match n.op_type.as_str() {
            "Conv" => {
                let c = convs[out];
                if c.removed {
                    continue;
                }
                let w = n
                    .input(1)
                    .and_then(|w| g.initializers.get(w))
                    .map(|t| t.shape())
                    .unwrap_or_default();
                let k: usize = w[2..].iter().product();
                let spatial: usize = facts
                    .shape(out)
                    .map(|s| s[0] * s[2..].iter().product::<usize>())
                    .unwrap_or(0);
                macs += (spatial * k * c.cout * (c.cin / c.groups.max(1))) as u64;
                params += (c.cout * (c.cin / c.groups.max(1)) * k) as u64;
                if n.input(2).is_some() {
                    params += c.cout as u64;
                }
            }
            "BatchNormalization" => {
                let from = convs.get(n.inputs[0].as_str()).copied();
                match from {
                    Some(c) if c.removed => {}
                    Some(c) => params += 2 * c.cout as u64,
                    None => {
                        params += n
                            .input(1)
                            .and_then(|s| g.initializers.get(s))
                            .map(|t| 2 * t.len() as u64)
                            .unwrap_or(0)
                    }
                }
            }
            // a linear layer: its rows times the pruned [in, out]
            "MatMul" if convs.contains_key(out) => {
                let c = convs[out];
                if c.removed {
                    continue;
                }
                let rows: usize = facts
                    .shape(out)
                    .map(|s| s[..s.len() - 1].iter().product())
                    .unwrap_or(0);
                macs += (rows * c.cin * c.cout) as u64;
                params += (c.cin * c.cout) as u64;
            }
            // a linear layer's bias keeps its layer's outputs
            "Add"
                if n.inputs
                    .iter()
                    .any(|i| linear_of(&prod, g, &convs, i).is_some()) =>
            {
                let c = n
                    .inputs
                    .iter()
                    .find_map(|i| linear_of(&prod, g, &convs, i))
                    .unwrap_or_default();
                let bias = n
                    .inputs
                    .iter()
                    .find(|i| g.initializers.contains_key(i.as_str()));
                match bias {
                    Some(b) if c.removed => {
                        seen.insert(b.as_str());
                    }
                    Some(b) if seen.insert(b.as_str()) => params += c.cout as u64,
                    _ => {}
                }
            }
            "Gemm" | "MatMul" => {
                let shape = |i: usize| {
                    facts
                        .shape(&n.inputs[i])
                        .map(|s| s.to_vec())
                        .unwrap_or_default()
                };
                let (a, bsh) = (shape(0), shape(1));
                if n.op_type == "Gemm" {
                    let ta = n.attr_int_or("transA", 0).unwrap_or(0) != 0;
                    let tb = n.attr_int_or("transB", 0).unwrap_or(0) != 0;
                    let (m, k) = if ta { (a[1], a[0]) } else { (a[0], a[1]) };
                    let nn = if tb { bsh[0] } else { bsh[1] };
                    macs += (m * k * nn) as u64;
                } else {
                    let rows: usize = a[..a.len() - 1].iter().product();
                    macs += (rows * a[a.len() - 1] * bsh[bsh.len() - 1]) as u64;
                }
                for i in &n.inputs {
                    if let Some(Tensor::F32(t)) = g.initializers.get(i) {
                        params += t.len() as u64;
                    }
                }
            }
            // every other op's learned constants (LayerNorm's scale and
            // bias, a layer scale), once each, but the gates
            _ => {
                let allowed = crate::graph::ops::lookup(n).and_then(|r| r.param_inputs());
                for (i, name) in n.inputs.iter().enumerate() {
                    if allowed.is_some_and(|a| !a.contains(&i))
                        || name.starts_with(crate::gate::GATE_PREFIX)
                    {
                        continue;
                    }
                    if let Some(Tensor::F32(t)) = g.initializers.get(name) {
                        if seen.insert(name.as_str()) {
                            params += t.len() as u64;
                        }
                    }
                }
            }
        }
    }
    Counts { macs, params }
}

/// The linear layer (by its shape after pruning) whose output `v` is.
fn linear_of(
    prod: &HashMap<&str, usize>,
    g: &Graph,
    convs: &HashMap<&str, ConvShape>,
    v: &str,
) -> Option<ConvShape> {
    let &p = prod.get(v)?;
    (g.nodes[p].op_type == "MatMul")
        .then(|| convs.get(v).copied())
        .flatten()
}

/// The nodes pruning deletes with the blocks that go: their branches and
/// the side computations on them.
fn removed_nodes(g: &Graph, plan: &Plan) -> HashSet<usize> {
    let prod = g.producers();
    let mut out = HashSet::new();
    for bp in plan.blocks.iter().filter(|bp| bp.fate != BlockFate::Kept) {
        for i in crate::structure::branch_path(g, &bp.block) {
            out.insert(i);
            if let Some(sg) = crate::structure::self_gate::self_gate(g, &prod, &g.nodes[i]) {
                out.extend(sg.side);
            }
        }
    }
    out
}
