//! The path rule every channel pattern shares: a channel (or group) of
//! conv *i* can be deleted exactly when, with its gate at 0, everything
//! between conv *i* and conv *i+1* maps 0 to 0 (Relu, Relu6-style Clip,
//! LeakyRelu, constant Mul, a self-gated product such as SiLU or SE) and
//! conv *i+1* reads it as an ordinary input.

use super::self_gate::{self_gate, through, SelfGate};
use crate::graph::Graph;
use std::collections::HashMap;

/// Whether `node` maps 0 to 0 elementwise.
fn keeps_zero(g: &Graph, prod: &HashMap<&str, usize>, node: &crate::graph::Node) -> bool {
    if self_gate(g, prod, node).is_some() {
        // 0 · f(0) = 0
        return true;
    }
    match node.op_type.as_str() {
        "Relu" | "LeakyRelu" | "Identity" | "HardSwish" | "Gelu" => true,
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
    walk(g, from, to_conv).map(|_| ())
}

/// The self-gated products on the chain from `from` to the conv producing
/// `to_conv` (their side convs follow the channels), when the chain holds;
/// `prod` and `cons` are `g`'s producers and consumers.
pub fn self_gates_between(
    g: &Graph,
    prod: &HashMap<&str, usize>,
    cons: &HashMap<&str, Vec<usize>>,
    from: &str,
    to_conv: &str,
) -> Vec<SelfGate> {
    walk_in(g, prod, cons, from, to_conv).unwrap_or_default()
}

fn walk(g: &Graph, from: &str, to_conv: &str) -> Result<Vec<SelfGate>, String> {
    walk_in(g, &g.producers(), &g.consumers(), from, to_conv)
}

fn walk_in(
    g: &Graph,
    prod: &HashMap<&str, usize>,
    cons: &HashMap<&str, Vec<usize>>,
    from: &str,
    to_conv: &str,
) -> Result<Vec<SelfGate>, String> {
    let mut v = from.to_string();
    let mut gates = Vec::new();
    for _ in 0..64 {
        let readers = cons.get(v.as_str()).cloned().unwrap_or_default();
        let r = match readers.as_slice() {
            [r] => *r,
            _ => match through(g, prod, &readers, &v) {
                Some((m, _)) => m,
                None => return Err(format!("`{v}` has {} readers", readers.len())),
            },
        };
        let n = &g.nodes[r];
        if n.outputs.first().map(|s| s.as_str()) == Some(to_conv) {
            return if n.inputs.first().map(|s| s.as_str()) == Some(v.as_str()) {
                Ok(gates)
            } else {
                Err("the next conv reads it as a weight".into())
            };
        }
        if !keeps_zero(g, prod, n) {
            return Err(format!(
                "{} `{}` does not map 0 to 0",
                n.op_type,
                n.display_name()
            ));
        }
        if let Some(sg) = self_gate(g, prod, n) {
            gates.push(sg);
        }
        v = n.outputs[0].clone();
    }
    Err("the chain to the next conv is too long".into())
}
