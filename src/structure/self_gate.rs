//! Self-gated products `x · f(x)`: SiLU as exported (`x · Sigmoid(x)`),
//! and squeeze-and-excitation (`x · σ(conv(act(conv(pool(x)))))`). The
//! data flows through `x`; `f(x)` is a side computation that reads only
//! `x` and constants. Block detection and the channel path rule walk
//! through such a product as through an activation (0 · f(0) = 0), and
//! deleting a channel of `x` deletes the input channel of the side's first
//! conv and the output channel of its last.

use super::Squeeze;
use crate::graph::{Graph, Node};
use std::collections::{HashMap, HashSet};

/// The side computation of a self-gated product: its nodes, and the convs
/// whose channels follow the product's (first: reads the pooled `x`, by
/// input channel; last: gives the per-channel factor, by output channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfGate {
    /// Which input of the Mul carries the data.
    pub data: usize,
    /// Node indices of the side computation.
    pub side: Vec<usize>,
    /// Convs of the side reading `x`'s channels (pool → conv): by their
    /// output value.
    pub reads: Vec<String>,
    /// Convs of the side giving one factor per channel of `x`.
    pub gives: Vec<String>,
}

/// The squeeze-and-excitations among the nodes `path` (a block's branch):
/// each self-gated product with one reduce conv and one excite conv.
pub fn squeezes(g: &Graph, path: &[usize]) -> Vec<Squeeze> {
    let (prod, cons) = (g.producers(), g.consumers());
    let conv = |out: &str| {
        g.nodes
            .iter()
            .find(|n| n.outputs.first().map(|s| s.as_str()) == Some(out))
    };
    let mut out = Vec::new();
    for &i in path {
        let Some(sg) = self_gate(g, &prod, &g.nodes[i]) else {
            continue;
        };
        let ([r], [e]) = (sg.reads.as_slice(), sg.gives.as_slice()) else {
            continue;
        };
        let (Some(rn), Some(en)) = (conv(r), conv(e)) else {
            continue;
        };
        // a BN read only by the reduce conv's output is its BN (restored
        // after a BN-folded export)
        let bn = match cons.get(r.as_str()).map(|c| c.as_slice()) {
            Some([b]) if g.nodes[*b].op_type == "BatchNormalization" => {
                Some(g.nodes[*b].outputs[0].clone())
            }
            _ => None,
        };
        out.push(Squeeze {
            reduce: super::blocks::conv_layer(g, rn, bn),
            excite: e.clone(),
            excite_name: en.display_name(),
        });
    }
    out
}

/// Nodes a side computation may hold at most (SE: pool, conv, act, conv,
/// σ; a few more for decomposed exports).
const MAX_SIDE: usize = 12;

/// Whether Mul node `m` is `x · f(x)`, and its side computation.
pub fn self_gate(g: &Graph, prod: &HashMap<&str, usize>, m: &Node) -> Option<SelfGate> {
    if m.op_type != "Mul" || m.inputs.len() != 2 || !m.is_onnx() {
        return None;
    }
    if m.inputs.iter().any(|i| g.is_constant(i)) {
        return None;
    }
    (0..2).find_map(|data| {
        let x = &m.inputs[data];
        let side = side_of(g, prod, &m.inputs[1 - data], x)?;
        let (mut reads, mut gives) = (vec![], vec![]);
        for &i in &side {
            let n = &g.nodes[i];
            if n.op_type != "Conv" {
                continue;
            }
            let from_pool = n
                .inputs
                .first()
                .and_then(|v| prod.get(v.as_str()))
                .is_some_and(|&p| {
                    matches!(
                        g.nodes[p].op_type.as_str(),
                        "GlobalAveragePool" | "ReduceMean"
                    ) && g.nodes[p].inputs.first() == Some(x)
                });
            if from_pool {
                reads.push(n.outputs[0].clone());
            } else {
                gives.push(n.outputs[0].clone());
            }
        }
        // SiLU: no convs; SE: one conv each way
        (reads.len() == gives.len() && reads.len() <= 1).then_some(SelfGate {
            data,
            side,
            reads,
            gives,
        })
    })
}

/// The nodes computing `v` from `x` and constants alone, if it is so
/// computed within `MAX_SIDE` nodes.
fn side_of(g: &Graph, prod: &HashMap<&str, usize>, v: &str, x: &str) -> Option<Vec<usize>> {
    let mut side = Vec::new();
    let mut seen = HashSet::new();
    let mut todo = vec![v.to_string()];
    while let Some(v) = todo.pop() {
        if v == x || v.is_empty() || g.is_constant(&v) || !seen.insert(v.clone()) {
            continue;
        }
        let &p = prod.get(v.as_str())?;
        side.push(p);
        if side.len() > MAX_SIDE {
            return None;
        }
        todo.extend(g.nodes[p].inputs.iter().cloned());
    }
    // it must read x somewhere: a constant factor is another case
    side.iter()
        .any(|&i| g.nodes[i].inputs.iter().any(|s| s == x))
        .then(|| {
            side.sort_unstable();
            side
        })
}

/// For value `v` with several readers: the one self-gated product through
/// which its data goes on, when every other reader belongs to that
/// product's side computation.
pub fn through(
    g: &Graph,
    prod: &HashMap<&str, usize>,
    readers: &[usize],
    v: &str,
) -> Option<(usize, SelfGate)> {
    readers.iter().find_map(|&r| {
        let sg = self_gate(g, prod, &g.nodes[r])?;
        let data_is_v = g.nodes[r].inputs[sg.data] == v;
        let others_in_side = readers.iter().all(|&o| o == r || sg.side.contains(&o));
        (data_is_v && others_in_side).then_some((r, sg))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::build::Builder;

    #[test]
    fn silu_and_squeeze_excitation_are_self_gated_a_scaled_sum_is_not() {
        let mut b = Builder::new("x", &[-1, 8, 4, 4], 0);
        // SiLU
        let s = b.node("Sigmoid", &["x"], vec![]);
        let y = b.node("Mul", &["x", &s], vec![]);
        // SE on y
        let p = b.node("GlobalAveragePool", &[&y], vec![]);
        let r = b.conv(&p, 8, 2, 1, 1);
        let r = b.relu(&r);
        let e = b.conv(&r, 2, 8, 1, 1);
        let e = b.node("Sigmoid", &[&e], vec![]);
        let z = b.node("Mul", &[&e, &y], vec![]);
        // a product of two different values is not
        let w = b.node("Relu", &["x"], vec![]);
        let q = b.node("Mul", &[&z, &w], vec![]);
        let g = b.finish(&q);
        let prod = g.producers();
        let node = |out: &str| &g.nodes[prod[out]];
        let silu = self_gate(&g, &prod, node(&y)).unwrap();
        assert_eq!((silu.data, silu.side.len(), silu.reads.len()), (0, 1, 0));
        let se = self_gate(&g, &prod, node(&z)).unwrap();
        assert_eq!((se.data, se.side.len()), (1, 5));
        assert_eq!(
            (se.reads, se.gives),
            (vec![r_conv(&g, &p)], vec![e_conv(&g, &e)])
        );
        assert!(self_gate(&g, &prod, node(&q)).is_none());
        // y's readers: the SE's pool and the product: the data goes on
        let cons = g.consumers();
        let (m, _) = through(&g, &prod, &cons[y.as_str()], &y).unwrap();
        assert_eq!(g.nodes[m].outputs[0], z);
    }

    fn r_conv(g: &Graph, pooled: &str) -> String {
        g.nodes
            .iter()
            .find(|n| n.op_type == "Conv" && n.inputs[0] == pooled)
            .map(|n| n.outputs[0].clone())
            .unwrap()
    }

    fn e_conv(g: &Graph, sigmoid_out: &str) -> String {
        let s = g
            .nodes
            .iter()
            .find(|n| n.outputs[0] == sigmoid_out)
            .unwrap();
        s.inputs[0].clone()
    }
}
