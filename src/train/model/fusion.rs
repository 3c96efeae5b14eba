//! Which nodes train mode on the CPU runs as one kernel: a BN (or a conv's
//! bias) with the gate and ReLU after it, a residual Add with its ReLU, and
//! SiLU as exported (`x · Sigmoid(x)`).
//! Found once per model; `lower::fused` runs them.

use crate::graph::{Graph, Node};
use std::collections::{HashMap, HashSet};

/// A BN (or a conv with a bias) whose output feeds only a gate `Mul` (by an
/// initializer), a ReLU, or a gate then a ReLU, none of them a graph output:
/// train mode on the CPU runs them as one kernel (`BnChain`; the conv itself
/// runs without its bias).
#[derive(Debug, Clone)]
pub(crate) struct Chain {
    /// The gate operand's name.
    pub gate: Option<String>,
    pub relu: bool,
    /// The output of the chain's last node: where the fused result goes.
    pub out: String,
    /// Outputs of the chain's other nodes (never computed).
    pub inner: Vec<String>,
}

/// Each value's consumers, to find nodes whose output feeds exactly one
/// other node (and is not a graph output): the fusable pairs.
pub(crate) struct Consumers<'g> {
    of: HashMap<&'g str, Vec<&'g Node>>,
    graph_outputs: HashSet<&'g str>,
}

impl<'g> Consumers<'g> {
    pub fn new(g: &'g Graph) -> Self {
        let mut of: HashMap<&str, Vec<&Node>> = HashMap::new();
        for n in &g.nodes {
            for i in n.inputs.iter().filter(|i| !i.is_empty()) {
                of.entry(i.as_str()).or_default().push(n);
            }
        }
        let graph_outputs = g.outputs.iter().map(|v| v.name.as_str()).collect();
        Consumers { of, graph_outputs }
    }

    /// The one node reading `name`, if exactly one does and it is not a
    /// graph output.
    fn sole(&self, name: &str) -> Option<&'g Node> {
        match self.of.get(name) {
            Some(v) if v.len() == 1 && !self.graph_outputs.contains(name) => Some(v[0]),
            _ => None,
        }
    }
}

/// The fusable chains, by the BN node's output name.
pub(crate) fn chains(g: &Graph, consumers: &Consumers) -> HashMap<String, Chain> {
    let sole = |name: &str| consumers.sole(name);
    let mut found = HashMap::new();
    let heads = g.nodes.iter().filter(|n| {
        n.op_type == "BatchNormalization"
            || (n.op_type == "Conv" && n.inputs.get(2).is_some_and(|b| !b.is_empty()))
    });
    for head in heads {
        let Some(start) = head.outputs.first() else {
            continue;
        };
        let (mut out, mut gate, mut relu) = (start.clone(), None, false);
        let mut inner = Vec::new();
        if let Some(m) = sole(&out).filter(|m| m.op_type == "Mul" && m.inputs.len() == 2) {
            let other = if m.inputs[0] == out {
                &m.inputs[1]
            } else {
                &m.inputs[0]
            };
            if g.initializers.contains_key(other) && other != &out {
                gate = Some(other.clone());
                out = m.outputs[0].clone();
                inner.push(out.clone());
            }
        }
        if let Some(r) = sole(&out).filter(|r| r.op_type == "Relu") {
            relu = true;
            out = r.outputs[0].clone();
            inner.push(out.clone());
        }
        if gate.is_some() || relu {
            inner.pop(); // the last is `out`
            found.insert(
                start.clone(),
                Chain {
                    gate,
                    relu,
                    out,
                    inner,
                },
            );
        }
    }
    found
}

/// Residual sums `Add(a, b)` whose only consumer is a ReLU (not a graph
/// output): add output → ReLU output. Train mode on the CPU runs each pair
/// as one `AddRelu`.
pub(crate) fn add_relus(g: &Graph, consumers: &Consumers) -> HashMap<String, String> {
    g.nodes
        .iter()
        .filter(|a| a.op_type == "Add" && a.inputs.len() == 2)
        .filter_map(|a| {
            let x = a.outputs.first()?;
            let r = consumers.sole(x).filter(|r| r.op_type == "Relu")?;
            Some((x.clone(), r.outputs.first()?.clone()))
        })
        .collect()
}

/// SiLU as exported, `Mul(x, Sigmoid(x))`, where the Sigmoid's only reader
/// is that Mul (not a graph output): Sigmoid output → Mul output. Train
/// mode on the CPU runs each pair as one `Silu`.
pub(crate) fn silus(g: &Graph, consumers: &Consumers) -> HashMap<String, String> {
    g.nodes
        .iter()
        .filter(|s| s.op_type == "Sigmoid" && s.inputs.len() == 1)
        .filter_map(|s| {
            let (x, y) = (s.inputs.first()?, s.outputs.first()?);
            let m = consumers.sole(y).filter(|m| {
                m.op_type == "Mul"
                    && m.inputs.len() == 2
                    && m.inputs.contains(x)
                    && m.inputs.contains(y)
            })?;
            Some((y.clone(), m.outputs.first()?.clone()))
        })
        .collect()
}
