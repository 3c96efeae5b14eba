//! The path rule every channel pattern shares: a channel (or group) of
//! conv *i* can be deleted exactly when, with its gate at 0, everything
//! between conv *i* and conv *i+1* maps 0 to 0 (Relu, Relu6-style Clip,
//! LeakyRelu, constant Mul) and conv *i+1* reads it as an ordinary input.

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
pub(super) fn between(g: &Graph, from: &str, to_conv: &str) -> Result<(), String> {
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
