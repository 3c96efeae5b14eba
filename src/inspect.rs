//! What `inspect` reports about a model: ops, inputs and outputs, cost,
//! residual blocks per stage, gateable structures and what was left out.

use crate::graph::counts::{self, NodeCost};
use crate::graph::shape::{self, Facts};
use crate::graph::{Dim, Graph};
use crate::structure::{self, Analysis, GateKind};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Serialize)]
pub struct ValueSummary {
    pub name: String,
    pub elem_type: i32,
    pub shape: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub opset: i64,
    pub ir_version: i64,
    pub producer: String,
    pub nodes: usize,
    pub ops: BTreeMap<String, usize>,
    pub inputs: Vec<ValueSummary>,
    pub outputs: Vec<ValueSummary>,
    pub batch: usize,
    pub macs: u64,
    pub params: u64,
    pub gates: BTreeMap<&'static str, usize>,
    pub analysis: Analysis,
    pub unknown_ops: Vec<String>,
    pub shape_failures: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_node: Option<Vec<NodeCost>>,
}

fn dims(d: &Option<Vec<Dim>>) -> Vec<String> {
    d.as_ref()
        .map(|v| {
            v.iter()
                .map(|d| match d {
                    Dim::Fixed(x) => x.to_string(),
                    Dim::Param(p) => p.clone(),
                    Dim::Unknown => "?".into(),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn inspect(g: &Graph, batch: usize, per_node: bool) -> Inspection {
    let facts = shape::input_shapes(g, batch)
        .map(|s| shape::infer(g, &s))
        .unwrap_or_else(|e| Facts {
            failures: vec![("<inputs>".into(), e.to_string())],
            ..Default::default()
        });
    let cost = counts::count(g, &facts);
    let mut ops = BTreeMap::new();
    for n in &g.nodes {
        *ops.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    let analysis = structure::analyse(g);
    let gates = [GateKind::Channel, GateKind::Group, GateKind::Block]
        .into_iter()
        .map(|k| (k.as_str(), analysis.count(k)))
        .collect();
    let summary = |v: &crate::graph::ValueInfo| ValueSummary {
        name: v.name.clone(),
        elem_type: v.elem_type,
        shape: dims(&v.shape),
    };
    Inspection {
        opset: g.onnx_opset(),
        ir_version: g.ir_version,
        producer: format!("{} {}", g.producer_name, g.producer_version)
            .trim()
            .to_string(),
        nodes: g.nodes.len(),
        ops,
        inputs: g.data_inputs().map(summary).collect(),
        outputs: g.outputs.iter().map(summary).collect(),
        batch,
        macs: cost.macs,
        params: cost.params,
        gates,
        analysis,
        unknown_ops: facts.unknown_ops,
        shape_failures: facts.failures,
        per_node: per_node.then_some(cost.per_node),
    }
}
