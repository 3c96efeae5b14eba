//! MAC and parameter counting, per node and in total.

use super::ops;
use super::shape::{node_ctx, Facts};
use super::tensor::dtype;
use super::Graph;
use serde::Serialize;
use std::collections::HashSet;

#[derive(Debug, Clone, Serialize)]
pub struct NodeCost {
    pub node: String,
    pub op: String,
    pub macs: u64,
    pub params: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Cost {
    pub macs: u64,
    pub params: u64,
    pub per_node: Vec<NodeCost>,
}

/// Counts MACs (convolutions and fully connected layers, as published ResNet
/// figures do) and learned parameters (weights, biases, BN scale and shift;
/// not BN running statistics), each initializer counted once.
pub fn count(g: &Graph, facts: &Facts) -> Cost {
    let mut cost = Cost::default();
    let mut seen: HashSet<&str> = HashSet::new();
    for node in &g.nodes {
        let cx = node_ctx(g, facts, node);
        let rule = ops::lookup(node);
        let outs: Vec<_> = node
            .outputs
            .iter()
            .filter_map(|o| facts.get(o).cloned())
            .collect();
        let macs = rule.map(|r| r.macs(&cx, &outs)).unwrap_or(0);
        let mut params = 0u64;
        let allowed = rule.and_then(|r| r.param_inputs());
        for (i, name) in node.inputs.iter().enumerate() {
            if allowed.is_some_and(|a| !a.contains(&i)) {
                continue;
            }
            if let Some(t) = g.initializers.get(name) {
                if t.dtype() == dtype::FLOAT && seen.insert(name.as_str()) {
                    params += t.len() as u64;
                }
            }
        }
        cost.macs += macs;
        cost.params += params;
        cost.per_node.push(NodeCost {
            node: node.display_name(),
            op: node.op_type.clone(),
            macs,
            params,
        });
    }
    cost
}
