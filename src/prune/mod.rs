//! The pruning rewrite: delete every channel, group and block whose gate is
//! exactly 0, fold the other gates into the neighbouring BN or conv, remove
//! the gate nodes and whatever became dead. With λ = 0 a structure
//! contributes exactly nothing, so the pruned model computes what the gated
//! one computes, up to float rounding.

pub mod collapse;
pub mod plan;
pub mod predict;
mod surgery;

use crate::error::{Error, Result};
use crate::gate::Gate;
use crate::gate::GATE_PREFIX;
use crate::graph::{counts, shape, Attr, Dim, Graph, Node, Tensor};
use crate::structure::{BranchConv, Shortcut, Squeeze};
use ndarray::{ArrayD, IxDyn};
use plan::{BlockFate, BlockPlan, ConvGate, Plan};
use predict::Counts;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, Default)]
pub struct StageSummary {
    pub stage: usize,
    pub blocks: usize,
    pub blocks_removed: usize,
    pub channels: usize,
    pub channels_removed: usize,
    pub groups: usize,
    pub groups_removed: usize,
}

/// One residual block before and after pruning: the channels of its gated
/// convs (groups counted in channels), and whether it is gone.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BlockSummary {
    pub block: usize,
    pub stage: usize,
    /// Channels of the block's gated convs (its output channels when only
    /// the block itself is gated).
    pub width: usize,
    /// Of those, kept (0 when the block is gone).
    pub kept: usize,
    /// Deleted, or replaced by a per-channel constant.
    pub removed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub gates: usize,
    pub blocks_removed: Vec<usize>,
    pub blocks_replaced_by_constant: Vec<usize>,
    pub channels_removed: usize,
    pub groups_removed: usize,
    pub relus_removed: usize,
    pub stages: Vec<StageSummary>,
    /// Every residual block, in order.
    pub blocks: Vec<BlockSummary>,
    /// Counts at batch 1: the gated model, the prediction from the zero
    /// pattern, and the pruned model as written.
    pub before: Counts,
    pub predicted: Counts,
    pub after: Counts,
    pub notes: Vec<String>,
}

fn counts(g: &Graph) -> Result<Counts> {
    let facts = shape::infer_strict(g, 1)?;
    let c = counts::count(g, &facts);
    Ok(Counts {
        macs: c.macs,
        params: c.params,
    })
}

/// Prunes a gated graph (the gate values as trained).
pub fn prune(gated: &Graph) -> Result<(Graph, PruneReport)> {
    let plan = plan::plan(gated)?;
    let facts = shape::infer_strict(gated, 1)?;
    let predicted = predict::predict(gated, &facts, &plan);
    // the gated model's counts without the gates themselves
    let mut before = counts(gated)?;
    before.params -= plan
        .gates
        .iter()
        .filter_map(|gt| gated.initializers.get(&gt.name).map(|t| t.len() as u64))
        .sum::<u64>();

    let mut g = gated.clone();
    let mut report = PruneReport {
        gates: plan.gates.len(),
        blocks_removed: vec![],
        blocks_replaced_by_constant: vec![],
        channels_removed: 0,
        groups_removed: 0,
        relus_removed: 0,
        stages: vec![],
        blocks: vec![],
        before,
        predicted,
        after: before,
        notes: vec![],
    };
    for bp in &plan.blocks {
        apply_block(&mut g, bp, &mut report)?;
    }
    // every remaining gate Mul now multiplies by 1 in effect (its factors
    // were folded): bypass it
    for gt in &plan.gates {
        // a block factor that could not be folded reads a constant now
        let kept = g
            .nodes
            .iter()
            .any(|n| n.outputs.first() == Some(&gt.output) && !n.inputs.contains(&gt.name));
        if !kept {
            bypass(&mut g, &gt.output, &gt.input);
        }
    }
    g.remove_dead();
    if let Some(k) = g.initializers.keys().find(|k| k.starts_with(GATE_PREFIX)) {
        return Err(Error::Graph(format!("gate `{k}` survived pruning")));
    }
    g.sort()?;
    refresh_value_info(&mut g)?;
    report.after = counts(&g)?;
    report.stages = stages(&plan, &report);
    report.blocks = blocks(&plan, &report);
    g.metadata.retain(|(k, _)| k != "sss_onnx");
    g.metadata.push((
        "sss_onnx".into(),
        format!(
            "pruned: {} blocks, {} channels, {} groups removed; MACs {} -> {}",
            report.blocks_removed.len() + report.blocks_replaced_by_constant.len(),
            report.channels_removed,
            report.groups_removed,
            report.before.macs,
            report.after.macs
        ),
    ));
    Ok((g, report))
}

fn stages(plan: &Plan, r: &PruneReport) -> Vec<StageSummary> {
    let mut out: Vec<StageSummary> = Vec::new();
    for bp in &plan.blocks {
        let s = bp.block.stage;
        while out.len() <= s {
            out.push(StageSummary {
                stage: out.len(),
                ..Default::default()
            });
        }
        let st = &mut out[s];
        // blocks that could go: those with a shortcut
        st.blocks += (bp.block.shortcut != Shortcut::Absent) as usize;
        let gone = r.blocks_removed.contains(&bp.block.id)
            || r.blocks_replaced_by_constant.contains(&bp.block.id);
        st.blocks_removed += gone as usize;
        for cg in bp.convs.iter().chain(&bp.squeezes).flatten() {
            let removed = if gone {
                cg.keep.len()
            } else {
                cg.keep.iter().filter(|k| !**k).count()
            };
            if cg.is_group() {
                st.groups += cg.keep.len();
                st.groups_removed += removed;
            } else {
                st.channels += cg.keep.len();
                st.channels_removed += removed;
            }
        }
    }
    out
}

fn blocks(plan: &Plan, r: &PruneReport) -> Vec<BlockSummary> {
    plan.blocks
        .iter()
        .map(|bp| {
            let removed = r.blocks_removed.contains(&bp.block.id)
                || r.blocks_replaced_by_constant.contains(&bp.block.id);
            let convs: Vec<_> = bp.convs.iter().flatten().collect();
            let (width, kept) = if convs.is_empty() {
                (bp.block.out_channels, bp.block.out_channels)
            } else {
                convs.iter().fold((0, 0), |(w, k), cg| {
                    (
                        w + cg.keep.len() * cg.span,
                        k + cg.keep.iter().filter(|&&x| x).count() * cg.span,
                    )
                })
            };
            BlockSummary {
                block: bp.block.id,
                stage: bp.block.stage,
                width,
                kept: if removed { 0 } else { kept },
                removed,
            }
        })
        .collect()
}

/// Makes every reader of `from` read `to` instead.
fn bypass(g: &mut Graph, from: &str, to: &str) {
    for n in g.nodes.iter_mut() {
        for i in n.inputs.iter_mut() {
            if i == from {
                *i = to.to_string();
            }
        }
    }
}

fn node_index(g: &Graph, output: &str) -> Result<usize> {
    g.nodes
        .iter()
        .position(|n| n.outputs.first().map(|s| s.as_str()) == Some(output))
        .ok_or_else(|| Error::Graph(format!("no node produces `{output}`")))
}

fn apply_block(g: &mut Graph, bp: &BlockPlan, r: &mut PruneReport) -> Result<()> {
    let b = &bp.block;
    if let Some(n) = &bp.note {
        r.notes.push(n.clone());
    }
    match bp.fate {
        BlockFate::Deleted => {
            r.relus_removed += remove_branch(g, bp, None)? as usize;
            r.blocks_removed.push(b.id);
            return Ok(());
        }
        BlockFate::Constant => {
            let c = bp.constant.clone().unwrap_or_default();
            r.relus_removed += remove_branch(g, bp, Some(c))? as usize;
            r.blocks_replaced_by_constant.push(b.id);
            return Ok(());
        }
        BlockFate::Kept => {}
    }
    for (i, cg) in bp.convs.iter().enumerate() {
        let Some(cg) = cg else { continue };
        let next = b.convs.get(i + 1);
        let prev = i.checked_sub(1).map(|p| &b.convs[p]);
        prune_conv(g, &b.convs[i], prev, next, cg, r)?;
    }
    for (q, cg) in b.squeezes.iter().zip(&bp.squeezes) {
        if let Some(cg) = cg {
            prune_squeeze(g, q, cg, r)?;
        }
    }
    if let Some((gt, v)) = &bp.block_gate {
        fold_block_gate(g, b, gt, *v)?;
    }
    Ok(())
}

/// Folds a kept block's gate value into what produces the branch output:
/// the last conv (or its BN), or a constant scale (ConvNeXt's layer scale).
fn fold_block_gate(g: &mut Graph, b: &crate::structure::Block, gt: &Gate, v: f32) -> Result<()> {
    match block_fold(g, b, gt) {
        Some(BlockFold::Layer(last)) => fold(g, &last, &vec![v; last.out_channels]),
        Some(BlockFold::Scale(scale)) => match g.initializers.get_mut(&scale) {
            Some(Tensor::F32(t)) => {
                t.mapv_inplace(|x| x * v);
                Ok(())
            }
            _ => Err(Error::tensor(
                &scale,
                "a block's scale is not a float tensor",
            )),
        },
        // the branch ends in a nonlinearity (YOLO's SiLU after its last
        // conv): λ·f(z) is not f of scaled weights, so the factor stays,
        // a constant multiply of the branch output
        None => keep_factor(g, gt, v),
    }
}

/// Where a kept block's factor folds.
enum BlockFold {
    /// The branch's last conv (or its BN), or its last linear layer
    /// through reshapes and transposes.
    Layer(BranchConv),
    /// A constant scale read by the branch output's Mul alone (ConvNeXt's
    /// layer scale).
    Scale(String),
}

fn block_fold(g: &Graph, b: &crate::structure::Block, gt: &Gate) -> Option<BlockFold> {
    if let Some(last) = b.convs.last().filter(|c| c.gate_at == gt.input) {
        return Some(BlockFold::Layer(last.clone()));
    }
    // a scalar passes through reshapes and transposes: an attention
    // branch's out-projection on flattened tokens, reshaped back
    if let Some(last) = b
        .convs
        .last()
        .filter(|c| c.linear && through_layout(g, &gt.input) == c.gate_at)
    {
        return Some(BlockFold::Layer(last.clone()));
    }
    let n = &g.nodes[node_index(g, &gt.input).ok()?];
    let readers = g.consumers();
    (n.op_type == "Mul" && n.inputs.len() == 2)
        .then(|| {
            n.inputs.iter().find(|i| {
                g.initializers.contains_key(i.as_str())
                    && !i.starts_with(GATE_PREFIX)
                    && readers.get(i.as_str()).map(|r| r.len()) == Some(1)
            })
        })
        .flatten()
        .map(|s| BlockFold::Scale(s.clone()))
}

/// Whether a kept block's factor folds into the weights (else it stays a
/// constant multiply, one value per gate element).
pub(crate) fn block_factor_folds(g: &Graph, b: &crate::structure::Block, gt: &Gate) -> bool {
    block_fold(g, b, gt).is_some()
}

/// Makes the gate Mul of `gt` multiply by the constant `v` (a fresh
/// initializer of the gate's shape, outside the gate prefix, so the gate
/// is not bypassed and nothing of it survives).
fn keep_factor(g: &mut Graph, gt: &Gate, v: f32) -> Result<()> {
    let shape = g
        .initializers
        .get(&gt.name)
        .map(|t| t.shape())
        .ok_or_else(|| Error::tensor(&gt.name, "gate tensor missing"))?;
    let name = g.fresh_name(&gt.name.replacen(GATE_PREFIX, "sss_scale/", 1));
    let value = ndarray::ArrayD::from_elem(ndarray::IxDyn(&shape), v);
    g.initializers.insert(name.clone(), Tensor::F32(value));
    let n = node_index(g, &gt.output)?;
    for i in g.nodes[n].inputs.iter_mut().filter(|i| **i == gt.name) {
        *i = name.clone();
    }
    Ok(())
}

/// The value `v` is a reshape or transpose of, through ops read once.
fn through_layout(g: &Graph, v: &str) -> String {
    let prod = g.producers();
    let readers = g.consumers();
    let mut v = v.to_string();
    while let Some(&p) = prod.get(v.as_str()) {
        let n = &g.nodes[p];
        let layout = matches!(
            n.op_type.as_str(),
            "Reshape" | "Transpose" | "Flatten" | "Squeeze" | "Unsqueeze" | "Identity"
        );
        let Some(x) = n.input(0).filter(|_| layout && n.is_onnx()) else {
            break;
        };
        let data_readers = readers.get(x).map_or(0, |r| {
            r.iter().filter(|&&i| g.nodes[i].op_type != "Shape").count()
        });
        if data_readers != 1 {
            break;
        }
        v = x.to_string();
    }
    v
}

/// Multiplies the output channels of `c` (through its BN when it has one).
fn fold(g: &mut Graph, c: &BranchConv, s: &[f32]) -> Result<()> {
    if c.linear {
        for (t, axis) in linear_outputs(g, c)? {
            surgery::scale(g, &t, axis, s)?;
        }
        return Ok(());
    }
    let target = node_index(g, c.bn.as_deref().unwrap_or(&c.conv))?;
    let n = g.nodes[target].clone();
    // BN: scale and bias (inputs 1, 2); conv: weight rows and bias
    for i in 1..=2 {
        if let Some(name) = n.input(i) {
            surgery::scale(g, name, 0, s)?;
        }
    }
    Ok(())
}

/// The tensors holding a linear layer's output channels, with the axis they
/// are on: its weight `[in, out]` (columns) and its bias `[out]`.
fn linear_outputs(g: &Graph, c: &BranchConv) -> Result<Vec<(String, usize)>> {
    let n = &g.nodes[node_index(g, &c.conv)?];
    let w = n.input(1).ok_or_else(|| Error::node(n, "no weight"))?;
    if c.gemm {
        // weight [out, in] with transB, else [in, out]; bias input 2
        let axis = if n.attr_int_or("transB", 0)? != 0 {
            0
        } else {
            1
        };
        let mut out = vec![(w.to_string(), axis)];
        out.extend(
            n.input(2)
                .filter(|b| g.initializers.contains_key(*b))
                .map(|b| (b.to_string(), 0)),
        );
        return Ok(out);
    }
    let mut out = vec![(w.to_string(), 1)];
    if let Some(add) = &c.bn {
        let a = &g.nodes[node_index(g, add)?];
        out.extend(
            a.inputs
                .iter()
                .find(|i| g.initializers.contains_key(i.as_str()))
                .map(|b| (b.clone(), 0)),
        );
    }
    Ok(out)
}

/// Keeps output channels `keep` of conv `c` (weights, bias, BN entries).
fn keep_outputs(g: &mut Graph, c: &BranchConv, keep: &[usize]) -> Result<()> {
    if c.linear {
        for (t, axis) in linear_outputs(g, c)? {
            surgery::select(g, &t, axis, keep)?;
        }
        return Ok(());
    }
    let conv = g.nodes[node_index(g, &c.conv)?].clone();
    for i in 1..=2 {
        if let Some(name) = conv.input(i) {
            surgery::select(g, name, 0, keep)?;
        }
    }
    if let Some(bn) = &c.bn {
        let bn = g.nodes[node_index(g, bn)?].clone();
        for i in 1..=4 {
            let name = bn
                .input(i)
                .ok_or_else(|| Error::node(&bn, "missing BN parameter"))?;
            surgery::select(g, name, 0, keep)?;
        }
    }
    Ok(())
}

fn keep_inputs(g: &mut Graph, c: &BranchConv, keep: &[usize]) -> Result<()> {
    let conv = g.nodes[node_index(g, &c.conv)?].clone();
    let w = conv
        .input(1)
        .ok_or_else(|| Error::node(&conv, "no weight"))?;
    // a conv's weight is [out, in, ...], a linear layer's [in, out]
    surgery::select(g, w, if c.linear { 0 } else { 1 }, keep)
}

fn prune_conv(
    g: &mut Graph,
    c: &BranchConv,
    prev: Option<&BranchConv>,
    next: Option<&BranchConv>,
    cg: &ConvGate,
    r: &mut PruneReport,
) -> Result<()> {
    let per_channel: Vec<f32> = (0..c.out_channels)
        .map(|ch| cg.factors[ch / cg.span])
        .collect();
    fold(g, c, &per_channel)?;
    if cg.keep.iter().all(|&k| k) {
        return Ok(());
    }
    let next =
        next.ok_or_else(|| Error::tensor(&cg.gate.name, "a gated conv must feed another conv"))?;
    let kept_units: Vec<usize> = (0..cg.keep.len()).filter(|&u| cg.keep[u]).collect();
    let keep_out: Vec<usize> = kept_units
        .iter()
        .flat_map(|&u| u * cg.span..(u + 1) * cg.span)
        .collect();
    if cg.is_group() {
        // a group: its filters, its input channels (the previous conv's
        // outputs) and the next conv's inputs go; `group` shrinks
        let prev = prev
            .ok_or_else(|| Error::tensor(&cg.gate.name, "grouped conv without a feeding conv"))?;
        let conv_i = node_index(g, &c.conv)?;
        let w = g.nodes[conv_i]
            .input(1)
            .map(|s| s.to_string())
            .unwrap_or_default();
        let per_in = g.initializers.get(&w).map(|t| t.shape()[1]).unwrap_or(0);
        let keep_in: Vec<usize> = kept_units
            .iter()
            .flat_map(|&u| u * per_in..(u + 1) * per_in)
            .collect();
        keep_outputs(g, c, &keep_out)?;
        keep_outputs(g, prev, &keep_in)?;
        g.nodes[conv_i].set_attr("group", Attr::Int(kept_units.len() as i64));
        r.groups_removed += cg.keep.len() - kept_units.len();
    } else {
        keep_outputs(g, c, &keep_out)?;
        r.channels_removed += cg.keep.len() - kept_units.len();
    }
    keep_inputs(g, next, &keep_out)?;
    follow_self_gates(g, c, next, &keep_out)?;
    // the gate's own tensor must match the new channel count until bypassed
    surgery::select(g, &cg.gate.name, if c.linear { 0 } else { 1 }, &keep_out)
}

/// Folds a squeeze-and-excitation's reduced-channel factors into its reduce
/// conv and deletes the zero ones with the excite conv's inputs.
fn prune_squeeze(g: &mut Graph, q: &Squeeze, cg: &ConvGate, r: &mut PruneReport) -> Result<()> {
    fold(g, &q.reduce, &cg.factors)?;
    let keep: Vec<usize> = (0..cg.keep.len()).filter(|&u| cg.keep[u]).collect();
    if keep.len() == cg.keep.len() {
        return Ok(());
    }
    keep_outputs(g, &q.reduce, &keep)?;
    let excite = g.nodes[node_index(g, &q.excite)?].clone();
    let w = excite
        .input(1)
        .ok_or_else(|| Error::node(&excite, "no weight"))?;
    surgery::select(g, w, 1, &keep)?;
    r.channels_removed += cg.keep.len() - keep.len();
    surgery::select(g, &cg.gate.name, 1, &keep)
}

/// The side convs of every squeeze-and-excitation between `c` and `next`
/// keep the channels `c` keeps: the first reads them (input channels), the
/// last gives one factor each (output channels and bias).
fn follow_self_gates(
    g: &mut Graph,
    c: &BranchConv,
    next: &BranchConv,
    keep: &[usize],
) -> Result<()> {
    let found = {
        let (prod, cons) = (g.producers(), g.consumers());
        crate::structure::path::self_gates_between(g, &prod, &cons, &c.gate_at, &next.conv)
    };
    for sg in found {
        for conv in &sg.reads {
            let n = g.nodes[node_index(g, conv)?].clone();
            let w = n.input(1).ok_or_else(|| Error::node(&n, "no weight"))?;
            surgery::select(g, w, 1, keep)?;
        }
        for conv in &sg.gives {
            let n = g.nodes[node_index(g, conv)?].clone();
            for i in 1..=2 {
                if let Some(name) = n.input(i) {
                    surgery::select(g, name, 0, keep)?;
                }
            }
            // a BatchNorm on the factors (restored after a BN-folded
            // export's conv) keeps the same channels
            let bns: Vec<Node> = sg
                .side
                .iter()
                .map(|&i| &g.nodes[i])
                .filter(|b| b.op_type == "BatchNormalization" && b.inputs.first() == Some(conv))
                .cloned()
                .collect();
            for bn in bns {
                for i in 1..=4 {
                    let name = bn
                        .input(i)
                        .ok_or_else(|| Error::node(&bn, "missing BN parameter"))?;
                    surgery::select(g, name, 0, keep)?;
                }
            }
        }
    }
    Ok(())
}

/// Deletes a block's branch: the Add reads only the shortcut (plus the
/// branch's constant value when it has one). Returns whether the Relu after
/// the Add went too.
fn remove_branch(g: &mut Graph, bp: &BlockPlan, constant: Option<Vec<f32>>) -> Result<bool> {
    let b = &bp.block;
    let add = node_index(g, &b.add)?;
    let shortcut = g.nodes[add]
        .inputs
        .iter()
        .find(|i| **i != b.branch_output)
        .cloned()
        .ok_or_else(|| Error::Graph(format!("block {}: the Add has no shortcut input", b.id)))?;
    if let Some(c) = constant {
        let name = g.fresh_name(&format!("{}/sss_branch_constant", b.add_name));
        let n = c.len();
        let t = ArrayD::from_shape_vec(IxDyn(&[1, n, 1, 1]), c)
            .map_err(|e| Error::Graph(e.to_string()))?;
        g.initializers.insert(name.clone(), Tensor::F32(t));
        g.nodes[add].inputs = vec![shortcut, name];
        return Ok(false);
    }
    if g.is_graph_output(&b.add) {
        let mut id = Node::new("Identity", &g.nodes[add].name, &[&shortcut], &[&b.add]);
        id.preserved = g.nodes[add].preserved.clone();
        g.nodes[add] = id;
        return Ok(false);
    }
    bypass(g, &b.add, &shortcut);
    // a Relu after the Add is redundant when the shortcut is already ≥ 0
    if let Some(relu_out) = &b.post_relu {
        if !g.is_graph_output(relu_out) && non_negative(g, &shortcut, 0) {
            bypass(g, relu_out, &shortcut);
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether `v` is ≥ 0 everywhere by construction.
fn non_negative(g: &Graph, v: &str, depth: usize) -> bool {
    if depth > 32 {
        return false;
    }
    let Some(n) = g.nodes.iter().find(|n| n.outputs.iter().any(|o| o == v)) else {
        return false;
    };
    match n.op_type.as_str() {
        "Relu" => true,
        "Clip" => n
            .input(1)
            .and_then(|m| g.constant(m))
            .and_then(|t| t.to_f32())
            .is_some_and(|t| t.iter().all(|&x| x >= 0.0)),
        "MaxPool" | "Identity" | "Slice" | "Reshape" | "Flatten" | "AveragePool" => {
            non_negative(g, &n.inputs[0], depth + 1)
        }
        "Pad" => {
            let mode_const = n
                .attr_string("mode")
                .ok()
                .flatten()
                .is_none_or(|m| m == "constant");
            let value_ok = n
                .input(2)
                .map(|c| {
                    g.constant(c)
                        .and_then(|t| t.to_f32())
                        .is_some_and(|t| t.iter().all(|&x| x >= 0.0))
                })
                .unwrap_or(true);
            mode_const && value_ok && non_negative(g, &n.inputs[0], depth + 1)
        }
        "Add" | "Sum" | "Max" => n.inputs.iter().all(|i| non_negative(g, i, depth + 1)),
        _ => false,
    }
}

/// Re-derives the shapes of the value_info entries that remain, from
/// shape inference at batches 1 and 2: a dimension that follows the batch
/// first is the batch symbol, one that does not change is fixed; an entry
/// whose batch sits elsewhere (sequence-first attention, batch merged with
/// tokens) cannot be written as a shape and is dropped, as is one no
/// longer computed. An exporter's entries can be wrong at other batches,
/// and a runtime that trusts them fails there.
fn refresh_value_info(g: &mut Graph) -> Result<()> {
    if g.value_info.is_empty() {
        return Ok(());
    }
    let one = shape::infer_strict(g, 1)?;
    let two = shape::infer_strict(g, 2)?;
    let batch = g
        .data_inputs()
        .next()
        .and_then(|v| v.shape.as_ref())
        .and_then(|s| s.first().cloned())
        .unwrap_or(Dim::Fixed(1));
    g.value_info.retain_mut(|vi| {
        let (Some(a), Some(b)) = (one.shape(&vi.name), two.shape(&vi.name)) else {
            return false;
        };
        if a.len() != b.len() {
            return false;
        }
        let mut dims = Vec::with_capacity(a.len());
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            if x == y {
                dims.push(Dim::Fixed(x as i64));
            } else if i == 0 && x == 1 && y == 2 {
                dims.push(batch.clone());
            } else {
                return false;
            }
        }
        vi.shape = Some(dims);
        true
    });
    Ok(())
}
