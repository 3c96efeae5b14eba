//! Which channels and groups inside one residual branch can be gated.
//!
//! A channel (or group) of conv *i* can be deleted exactly when, with its
//! gate at 0, everything between conv *i* and conv *i+1* maps 0 to 0 (Relu,
//! Relu6-style Clip, LeakyRelu, constant Mul) and conv *i+1* reads it as an
//! ordinary input channel (not inside a group that would become unbalanced).

use super::{Block, GateKind, Gateable, Skipped};
use crate::graph::Graph;

/// Whether `node` maps 0 to 0 elementwise.
fn keeps_zero(g: &Graph, node: &crate::graph::Node) -> bool {
    match node.op_type.as_str() {
        "Relu" | "LeakyRelu" | "Identity" => true,
        // a scalar scale, or one of our gates (per-channel, sliced with the
        // channels by the pruner); any other per-channel constant would need
        // slicing we do not do
        "Mul" => node.inputs.iter().any(|i| {
            i.starts_with(super::GATE_PREFIX) || g.constant(i).is_some_and(|t| t.len() == 1)
        }),
        "Clip" => {
            let bound = |attr: &str, input: usize| -> Option<f32> {
                if let Some(v) = node.input(input) {
                    g.constant(v)?.to_f32()?.iter().next().copied()
                } else {
                    node.attr_float_or(attr, if attr == "min" { f32::MIN } else { f32::MAX })
                        .ok()
                }
            };
            matches!((bound("min", 1), bound("max", 2)), (Some(lo), Some(hi)) if lo <= 0.0 && hi >= 0.0)
        }
        _ => false,
    }
}

/// Follows the single-reader chain from `from` to the conv producing `to`.
/// Err names the op in the way.
fn between(g: &Graph, from: &str, to_conv: &str) -> Result<(), String> {
    let cons = g.consumers();
    let mut v = from.to_string();
    for _ in 0..64 {
        let readers = cons.get(v.as_str()).cloned().unwrap_or_default();
        let [r] = readers.as_slice() else {
            return Err(format!("`{v}` has {} readers", readers.len()));
        };
        let n = &g.nodes[*r];
        if n.outputs.first().map(|s| s.as_str()) == Some(to_conv) {
            return if n.inputs.first().map(|s| s.as_str()) == Some(v.as_str()) {
                Ok(())
            } else {
                Err("the next conv reads it as a weight".into())
            };
        }
        if !keeps_zero(g, n) {
            return Err(format!(
                "{} `{}` does not map 0 to 0",
                n.op_type,
                n.display_name()
            ));
        }
        v = n.outputs[0].clone();
    }
    Err("the chain to the next conv is too long".into())
}

pub(super) fn gateable_in_block(
    g: &Graph,
    b: &Block,
    out: &mut Vec<Gateable>,
    skipped: &mut Vec<Skipped>,
) {
    if b.convs.is_empty() {
        return;
    }
    out.push(Gateable {
        kind: GateKind::Block,
        block: b.id,
        conv: None,
        at: b.branch_output.clone(),
        count: 1,
        channels: b.out_channels,
    });
    if b.convs.iter().any(|c| c.depthwise) {
        skipped.push(Skipped {
            what: format!("block {} channels", b.id),
            reason: "the branch has a depthwise conv (inverted residual); its channels are coupled through it".into(),
        });
        return;
    }
    for pair in b.convs.windows(2) {
        let (c, next) = (&pair[0], &pair[1]);
        let what = format!("block {} conv `{}` output", b.id, c.conv_name);
        if let Err(reason) = between(g, &c.gate_at, &next.conv) {
            skipped.push(Skipped { what, reason });
            continue;
        }
        if c.groups > 1 {
            // deleting a group frees its input channels too: they must come
            // from a conv of this branch that nothing else reads
            let prev = b
                .convs
                .iter()
                .position(|x| x.conv == c.conv)
                .and_then(|i| i.checked_sub(1));
            let fed = prev
                .map(|p| &b.convs[p])
                .filter(|p| p.groups == 1 && between(g, &p.gate_at, &c.conv).is_ok());
            if fed.is_none() {
                skipped.push(Skipped {
                    what,
                    reason: "grouped conv not fed by a plain conv of the same branch".into(),
                });
                continue;
            }
            if next.groups > 1 {
                skipped.push(Skipped {
                    what,
                    reason: "grouped conv feeding another grouped conv".into(),
                });
                continue;
            }
            out.push(Gateable {
                kind: GateKind::Group,
                block: b.id,
                conv: Some(c.conv.clone()),
                at: c.gate_at.clone(),
                count: c.groups,
                channels: c.out_channels,
            });
        } else if next.groups > 1 {
            skipped.push(Skipped {
                what,
                reason: format!(
                    "feeds grouped conv `{}` (group={}); deleting single channels would unbalance its groups (its group gates cover them)",
                    next.conv_name, next.groups
                ),
            });
        } else {
            out.push(Gateable {
                kind: GateKind::Channel,
                block: b.id,
                conv: Some(c.conv.clone()),
                at: c.gate_at.clone(),
                count: c.out_channels,
                channels: c.out_channels,
            });
        }
    }
}
