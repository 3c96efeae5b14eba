//! The IR the program works on: named values, nodes with typed attributes,
//! initializers as ndarray tensors. Only `convert` touches protobuf.

pub mod attr;
pub mod batch;
pub mod build;
pub mod counts;
pub mod fold;
pub mod io;
mod node_error;
pub mod ops;
pub mod shape;
pub mod tensor;
mod topo;
pub mod untangle;

pub use attr::Attr;
pub use tensor::Tensor;

use indexmap::IndexMap;
use std::collections::HashMap;

/// Bytes of a protobuf message the IR does not model but must give back on
/// export (doc strings, metadata, functions, training info, ...).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preserved(pub(crate) Vec<u8>);

#[derive(Debug, Clone, PartialEq)]
pub enum Dim {
    Fixed(i64),
    Param(String),
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    /// ONNX element type; 0 for values that are not tensors.
    pub elem_type: i32,
    pub shape: Option<Vec<Dim>>,
    pub(crate) preserved: Preserved,
}

impl ValueInfo {
    pub fn tensor(name: &str, elem_type: i32, shape: Vec<Dim>) -> Self {
        ValueInfo {
            name: name.to_string(),
            elem_type,
            shape: Some(shape),
            preserved: Preserved::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: Vec<(String, Attr)>,
    pub(crate) preserved: Preserved,
}

impl Node {
    pub fn new(op_type: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> Self {
        Node {
            name: name.to_string(),
            op_type: op_type.to_string(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attrs: Vec::new(),
            preserved: Preserved::default(),
        }
    }

    pub fn with_attr(mut self, name: &str, value: Attr) -> Self {
        self.set_attr(name, value);
        self
    }

    pub fn set_attr(&mut self, name: &str, value: Attr) {
        match self.attrs.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.attrs.push((name.to_string(), value)),
        }
    }

    /// The name used in messages: the node's name, or its first output when
    /// the exporter left the name empty.
    pub fn display_name(&self) -> String {
        if !self.name.is_empty() {
            self.name.clone()
        } else {
            self.outputs
                .first()
                .map(|o| format!("<unnamed, output {o}>"))
                .unwrap_or_else(|| "<unnamed>".into())
        }
    }

    /// Whether the op is from the default ONNX domain.
    pub fn is_onnx(&self) -> bool {
        self.domain.is_empty() || self.domain == "ai.onnx"
    }

    /// The `i`-th input name, `None` when absent or empty (optional input).
    pub fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Opset {
    pub domain: String,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub name: String,
    /// In topological order (checked on import, kept by every rewrite).
    pub nodes: Vec<Node>,
    /// As in the file: may list initializers too (IR < 4 files do).
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    pub value_info: Vec<ValueInfo>,
    pub initializers: IndexMap<String, Tensor>,
    pub opsets: Vec<Opset>,
    pub ir_version: i64,
    pub producer_name: String,
    pub producer_version: String,
    pub metadata: Vec<(String, String)>,
    pub(crate) shell: Preserved,
}

impl Graph {
    /// The inputs a caller feeds: graph inputs that are not initializers.
    pub fn data_inputs(&self) -> impl Iterator<Item = &ValueInfo> {
        self.inputs
            .iter()
            .filter(|v| !self.initializers.contains_key(&v.name))
    }

    /// Value name → index of the node producing it.
    pub fn producers(&self) -> HashMap<&str, usize> {
        let mut m = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for o in &n.outputs {
                if !o.is_empty() {
                    m.insert(o.as_str(), i);
                }
            }
        }
        m
    }

    /// Value name → indices of the nodes reading it.
    pub fn consumers(&self) -> HashMap<&str, Vec<usize>> {
        let mut m: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for inp in &n.inputs {
                if !inp.is_empty() {
                    let v = m.entry(inp.as_str()).or_default();
                    if v.last() != Some(&i) {
                        v.push(i);
                    }
                }
            }
        }
        m
    }

    pub fn is_graph_output(&self, name: &str) -> bool {
        self.outputs.iter().any(|o| o.name == name)
    }

    /// Whether `name` is a constant (an initializer or a `Constant` node's
    /// output), without copying its value: the structure walks ask this of
    /// every operand they pass, weights included.
    pub fn is_constant(&self, name: &str) -> bool {
        self.initializers.contains_key(name)
            || self.nodes.iter().any(|n| {
                n.op_type == "Constant" && n.outputs.first().map(|s| s.as_str()) == Some(name)
            })
    }

    /// A constant value: an initializer or the output of a `Constant` node.
    pub fn constant(&self, name: &str) -> Option<Tensor> {
        if let Some(t) = self.initializers.get(name) {
            return Some(t.clone());
        }
        let node = self.nodes.iter().find(|n| {
            n.op_type == "Constant" && n.outputs.first().map(|s| s.as_str()) == Some(name)
        })?;
        ops::constant::value(node).ok()
    }

    /// The default-domain opset version (the one op semantics depend on).
    pub fn onnx_opset(&self) -> i64 {
        self.opsets
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .unwrap_or(1)
    }

    /// Re-establishes topological order after a rewrite and checks that every
    /// input has a source.
    pub fn sort(&mut self) -> crate::Result<()> {
        topo::sort(self)
    }

    /// A value name not yet used in the graph, derived from `base`.
    pub fn fresh_name(&self, base: &str) -> String {
        let used = |s: &str| {
            self.initializers.contains_key(s)
                || self.inputs.iter().any(|v| v.name == s)
                || self
                    .nodes
                    .iter()
                    .any(|n| n.outputs.iter().any(|o| o == s) || n.name == s)
        };
        if !used(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|s| !used(s))
            .unwrap_or_else(|| base.to_string())
    }

    /// Removes nodes whose outputs nobody reads and initializers nobody uses.
    pub fn remove_dead(&mut self) {
        loop {
            let consumers: std::collections::HashSet<String> =
                self.consumers().keys().map(|k| k.to_string()).collect();
            let before = self.nodes.len();
            let outputs: Vec<String> = self.outputs.iter().map(|o| o.name.clone()).collect();
            self.nodes.retain(|n| {
                n.outputs
                    .iter()
                    .any(|o| !o.is_empty() && (consumers.contains(o) || outputs.contains(o)))
            });
            if self.nodes.len() == before {
                break;
            }
        }
        let used: std::collections::HashSet<String> = self
            .nodes
            .iter()
            .flat_map(|n| n.inputs.iter().cloned())
            .chain(self.outputs.iter().map(|o| o.name.clone()))
            .collect();
        let was_init: std::collections::HashSet<String> =
            self.initializers.keys().cloned().collect();
        self.initializers.retain(|k, _| used.contains(k));
        // Data inputs are the model's interface and stay; inputs that only
        // listed a now-removed initializer go with it.
        let inits = &self.initializers;
        self.inputs
            .retain(|v| !was_init.contains(&v.name) || inits.contains_key(&v.name));
        let live: std::collections::HashSet<&str> = self
            .nodes
            .iter()
            .flat_map(|n| n.outputs.iter().map(|s| s.as_str()))
            .collect();
        self.value_info.retain(|v| live.contains(v.name.as_str()));
    }
}
