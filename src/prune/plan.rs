//! What happens to each block, decided from the gate values alone:
//! deleted (block gate 0, or the branch computes exactly 0), replaced by a
//! per-channel constant (some conv keeps no channel, and what follows maps
//! the resulting constant to a constant), or kept with its zero-gated
//! channels and groups removed.

use super::collapse::constant_through;
use crate::error::{Error, Result};
use crate::gate::{self, Gate};
use crate::graph::Graph;
use crate::structure::{self, Block, GateKind};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ConvGate {
    pub gate: Gate,
    /// One factor per channel (channel gate) or per group (group gate).
    pub factors: Vec<f32>,
    /// Which channels/groups stay.
    pub keep: Vec<bool>,
    /// Channels per factor.
    pub span: usize,
}

impl ConvGate {
    /// A group gate: deleting a factor deletes a group of the conv, with
    /// the input channels it reads (a depthwise conv's groups are single
    /// channels, so `span` alone cannot tell).
    pub fn is_group(&self) -> bool {
        self.gate.kind == GateKind::Group
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockFate {
    Kept,
    Deleted,
    Constant,
}

#[derive(Debug, Clone)]
pub struct BlockPlan {
    pub block: Block,
    pub fate: BlockFate,
    pub block_gate: Option<(Gate, f32)>,
    /// Per branch conv, its channel or group gate.
    pub convs: Vec<Option<ConvGate>>,
    /// Per squeeze-and-excitation of the block, its reduced channels' gate.
    pub squeezes: Vec<Option<ConvGate>>,
    /// The branch's value when it is replaced by a constant.
    pub constant: Option<Vec<f32>>,
    pub note: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub blocks: Vec<BlockPlan>,
    pub gates: Vec<Gate>,
}

pub fn plan(g: &Graph) -> Result<Plan> {
    let gates = gate::find(g)?;
    if gates.is_empty() {
        return Err(Error::Invalid(
            "the model has no sss gates (initializers named sss_gate/...): gate it first with `sss-onnx gate`".into(),
        ));
    }
    let analysis = structure::analyse(g);
    let mut blocks = Vec::new();
    for b in &analysis.blocks {
        let mut bp = BlockPlan {
            block: b.clone(),
            fate: BlockFate::Kept,
            block_gate: None,
            convs: vec![None; b.convs.len()],
            squeezes: vec![None; b.squeezes.len()],
            constant: None,
            note: None,
        };
        for gt in gates.iter().filter(|x| x.block == b.id) {
            let f = gate::factors(g, gt)?;
            match gt.kind {
                GateKind::Block => bp.block_gate = Some((gt.clone(), f[0])),
                _ => {
                    let keep: Vec<bool> = f.iter().map(|&x| x != 0.0).collect();
                    let mut cg = ConvGate {
                        gate: gt.clone(),
                        factors: f,
                        keep,
                        span: gt.span,
                    };
                    if let Some(i) = b.convs.iter().position(|c| c.gate_at == gt.input) {
                        bp.convs[i] = Some(cg);
                    } else if let Some(k) =
                        b.squeezes.iter().position(|q| q.reduce.gate_at == gt.input)
                    {
                        if cg.keep.iter().all(|k| !k) {
                            // the excitation then reads its bias alone; one
                            // zeroed channel keeps the convs valid and exact
                            cg.keep[0] = true;
                            bp.note = Some(format!(
                                "block {}: squeeze-and-excitation `{}` has every factor 0; one zeroed channel kept",
                                b.id, b.squeezes[k].reduce.conv_name
                            ));
                        }
                        bp.squeezes[k] = Some(cg);
                    } else {
                        return Err(Error::tensor(
                            &gt.name,
                            "does not follow a conv of its block",
                        ));
                    }
                }
            }
        }
        if bp.block_gate.as_ref().is_some_and(|(_, v)| *v == 0.0) {
            bp.fate = BlockFate::Deleted;
        } else if let Some(i) = bp
            .convs
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.keep.iter().all(|k| !k)))
        {
            decide_collapse(g, b, i, &mut bp);
        }
        blocks.push(bp);
    }
    Ok(Plan { blocks, gates })
}

/// Conv `i` of block `b` keeps nothing: what does the branch compute?
fn decide_collapse(g: &Graph, b: &Block, i: usize, bp: &mut BlockPlan) {
    let path = structure::branch_path(g, b);
    let gate_out = bp.convs[i]
        .as_ref()
        .map(|c| c.gate.output.clone())
        .unwrap_or_default();
    let after = path
        .iter()
        .position(|&n| g.nodes[n].outputs[0] == gate_out)
        .map(|p| p + 1);
    // without a shortcut the block's output is the network's path: it
    // cannot go, whatever it computes
    let constant = after
        .filter(|_| b.shortcut != structure::Shortcut::Absent)
        .and_then(|a| constant_through(g, &path[a..], vec![0.0; b.convs[i].out_channels]));
    match constant {
        Some(c) if c.iter().all(|&v| v == 0.0) => bp.fate = BlockFate::Deleted,
        Some(c) => {
            bp.fate = BlockFate::Constant;
            bp.constant = Some(c);
        }
        None => {
            // what follows is position dependent: keep one (zeroed) channel
            // so the graph stays valid and exact
            if let Some(cg) = bp.convs[i].as_mut() {
                cg.keep[0] = true;
            }
            bp.note = Some(format!(
                "block {}: conv `{}` has every factor 0 but the block cannot go (no shortcut) or what follows is position-dependent; one zeroed {} kept",
                b.id,
                b.convs[i].conv_name,
                if bp.convs[i].as_ref().is_some_and(|c| c.is_group()) { "group" } else { "channel" }
            ));
        }
    }
}
