//! Inserts SSS's scale factors λ = 1 as `Mul` nodes whose second operand is
//! an initializer named `sss_gate/<kind>/<id>`:
//!
//! * channel: `[1, C, 1, 1]`, one factor per output channel of a conv inside
//!   a residual branch, after its BN (or the conv when BN was folded), before
//!   its activation; `[C]` for a linear layer's outputs (channels last),
//!   after its bias;
//! * group: `[1, C, 1, 1]` holding one factor per group, repeated over the
//!   group's C/G channels (a plain broadcast Mul keeps the file simple for
//!   every runtime; training ties the repeats and the pruner checks them);
//! * block: `[1]`, one factor on the branch output before the Add (never on
//!   the shortcut);
//! * a squeeze-and-excitation's reduced channels: a channel gate on its
//!   reduce conv's output (`sss_gate/channel/b<k>se<i>`).
//!
//! With every λ = 1 the gated model computes exactly what the original does.

use crate::error::{Error, Result};
use crate::graph::{Graph, Node, Tensor};
use crate::structure::{self, Analysis, GateKind, Gateable};
use ndarray::{ArrayD, IxDyn};
use serde::Serialize;

pub use crate::structure::GATE_PREFIX;

/// One gate in a gated graph.
#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    /// The initializer holding λ.
    pub name: String,
    pub kind: GateKind,
    pub block: usize,
    /// The gated value (the Mul's data input) and the Mul's output.
    pub input: String,
    pub output: String,
    /// Number of independent factors (channels, groups, or 1).
    pub count: usize,
    /// Channels each factor covers.
    pub span: usize,
}

/// The gate name for a structure: `sss_gate/channel/b3c0` (block 3, first
/// conv), `sss_gate/group/b1c1`, `sss_gate/block/b4`.
/// A squeeze-and-excitation's reduced channels: `sss_gate/channel/b2se0`.
fn gate_name(a: &Analysis, s: &Gateable) -> String {
    let b = &a.blocks[s.block];
    let conv = s.conv.as_ref();
    let conv_index = conv
        .and_then(|c| b.convs.iter().position(|x| &x.conv == c))
        .unwrap_or(0);
    let squeeze = conv.and_then(|c| b.squeezes.iter().position(|q| &q.reduce.conv == c));
    match (s.kind, squeeze) {
        (GateKind::Block, _) => format!("{GATE_PREFIX}block/b{}", s.block),
        (k, Some(q)) => format!("{GATE_PREFIX}{}/b{}se{q}", k.as_str(), s.block),
        (k, None) => format!("{GATE_PREFIX}{}/b{}c{conv_index}", k.as_str(), s.block),
    }
}

/// Inserts gates on the structures of the chosen kinds. Errors if the graph
/// already has gates.
pub fn insert(g: &Graph, kinds: &[GateKind]) -> Result<(Graph, Vec<Gate>)> {
    if g.initializers.keys().any(|k| k.starts_with(GATE_PREFIX)) {
        return Err(Error::Invalid("the model already has sss gates".into()));
    }
    let analysis = structure::analyse(g);
    let mut out = g.clone();
    let mut gates = Vec::new();
    for s in analysis.gateable.iter().filter(|s| kinds.contains(&s.kind)) {
        let name = gate_name(&analysis, s);
        let shape: Vec<usize> = match s.kind {
            GateKind::Block => vec![1],
            _ if channels_last(&analysis, s) => vec![s.channels],
            _ => vec![1, s.channels, 1, 1],
        };
        out.initializers.insert(
            name.clone(),
            Tensor::F32(ArrayD::from_elem(IxDyn(&shape), 1.0)),
        );
        let gated = out.fresh_name(&format!("{}/sss_gated", s.at));
        // every reader of the structure's output now reads the gated value
        for n in out.nodes.iter_mut() {
            for i in n.inputs.iter_mut() {
                if *i == s.at {
                    *i = gated.clone();
                }
            }
        }
        let mul = Node::new("Mul", &format!("{name}/mul"), &[&s.at, &name], &[&gated]);
        out.nodes.push(mul);
        gates.push(Gate {
            name,
            kind: s.kind,
            block: s.block,
            input: s.at.clone(),
            output: gated,
            count: s.count,
            span: s.channels / s.count.max(1),
        });
    }
    out.sort()?;
    Ok((out, gates))
}

/// Whether the gated structure's channels are on the last axis (a linear
/// layer's outputs): its gate is `[C]`, not `[1, C, 1, 1]`.
fn channels_last(a: &Analysis, s: &Gateable) -> bool {
    a.blocks[s.block]
        .convs
        .iter()
        .any(|c| c.linear && Some(&c.conv) == s.conv.as_ref())
}

/// The gates of a gated graph: every Mul reading an `sss_gate/` initializer.
/// Checks what a malformed or edited file could get wrong.
pub fn find(g: &Graph) -> Result<Vec<Gate>> {
    let analysis = structure::analyse(g);
    let mut gates = Vec::new();
    for n in &g.nodes {
        let Some(pos) = n.inputs.iter().position(|i| i.starts_with(GATE_PREFIX)) else {
            continue;
        };
        let name = n.inputs[pos].clone();
        if n.op_type != "Mul" || n.inputs.len() != 2 {
            return Err(Error::node(
                n,
                format!(
                    "gate `{name}` feeds a {} node, expected a two-input Mul",
                    n.op_type
                ),
            ));
        }
        let t = g
            .initializers
            .get(&name)
            .and_then(|t| t.as_f32())
            .ok_or_else(|| Error::node(n, format!("gate `{name}` is not a float initializer")))?;
        let kind = match name[GATE_PREFIX.len()..].split('/').next() {
            Some("channel") => GateKind::Channel,
            Some("group") => GateKind::Group,
            Some("block") => GateKind::Block,
            _ => return Err(Error::node(n, format!("`{name}` is not a known gate kind"))),
        };
        let input = n.inputs[1 - pos].clone();
        let output = n.outputs[0].clone();
        let (block, count, span) = match kind {
            GateKind::Block => {
                let b = analysis
                    .blocks
                    .iter()
                    .find(|b| b.branch_output == output)
                    .ok_or_else(|| Error::node(n, format!("block gate `{name}` does not feed the branch input of a residual Add")))?;
                if t.len() != 1 {
                    return Err(Error::node(
                        n,
                        format!(
                            "block gate `{name}` has shape {:?}, expected [1]",
                            t.shape()
                        ),
                    ));
                }
                (b.id, 1, b.out_channels)
            }
            _ => {
                let (b, c) = analysis
                    .blocks
                    .iter()
                    .find_map(|b| {
                        b.convs
                            .iter()
                            .chain(b.squeezes.iter().map(|q| &q.reduce))
                            .find(|c| c.gate_at == input)
                            .map(|c| (b, c))
                    })
                    .ok_or_else(|| {
                        Error::node(
                            n,
                            format!(
                                "gate `{name}` does not follow a conv inside a residual branch"
                            ),
                        )
                    })?;
                let expected = if c.linear {
                    vec![c.out_channels]
                } else {
                    vec![1, c.out_channels, 1, 1]
                };
                if t.shape() != expected.as_slice() {
                    return Err(Error::node(
                        n,
                        format!(
                            "gate `{name}` has shape {:?}, expected {expected:?}",
                            t.shape(),
                        ),
                    ));
                }
                let groups = if kind == GateKind::Group {
                    c.groups
                } else {
                    c.out_channels
                };
                if kind == GateKind::Group && groups < 2 {
                    return Err(Error::node(
                        n,
                        format!("group gate `{name}` on a conv with group=1"),
                    ));
                }
                (b.id, groups, c.out_channels / groups)
            }
        };
        gates.push(Gate {
            name,
            kind,
            block,
            input,
            output,
            count,
            span,
        });
    }
    Ok(gates)
}

/// The factors of a gate: one per channel/group/block.
pub fn factors(g: &Graph, gate: &Gate) -> Result<Vec<f32>> {
    let t = g
        .initializers
        .get(&gate.name)
        .and_then(|t| t.as_f32())
        .ok_or_else(|| Error::tensor(&gate.name, "gate initializer missing"))?;
    let v: Vec<f32> = t.iter().copied().collect();
    if gate.kind != GateKind::Group {
        return Ok(v);
    }
    // a group's channels share one factor
    let mut out = Vec::with_capacity(gate.count);
    for chunk in v.chunks(gate.span.max(1)) {
        if chunk.iter().any(|&x| x.to_bits() != chunk[0].to_bits()) {
            return Err(Error::tensor(
                &gate.name,
                "the channels of a group carry different factors",
            ));
        }
        out.push(chunk[0]);
    }
    Ok(out)
}

/// Writes factors (one per channel/group/block) into a gate's initializer.
pub fn set_factors(g: &mut Graph, gate: &Gate, values: &[f32]) -> Result<()> {
    if values.len() != gate.count {
        return Err(Error::tensor(
            &gate.name,
            format!("{} factors for {} structures", values.len(), gate.count),
        ));
    }
    let t = match g.initializers.get_mut(&gate.name) {
        Some(Tensor::F32(a)) => a,
        _ => return Err(Error::tensor(&gate.name, "gate initializer missing")),
    };
    let span = if gate.kind == GateKind::Group {
        gate.span
    } else {
        1
    };
    for (i, v) in t.iter_mut().enumerate() {
        *v = values[(i / span).min(values.len() - 1)];
    }
    Ok(())
}
