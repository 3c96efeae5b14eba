//! Shape inference with concrete dimensions: given the input shapes (the
//! batch chosen by the caller), every value gets its shape, and the small
//! integer tensors of shape arithmetic get their values, so that Reshape,
//! Slice and Pad arguments computed at run time by legacy exports resolve.

use super::ops::{self, Ctx};
use super::{Dim, Graph, Tensor};
use crate::error::{Error, Result};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    pub dtype: i32,
    pub shape: Vec<usize>,
    pub value: Option<Tensor>,
}

impl Fact {
    pub fn of_tensor(t: &Tensor) -> Fact {
        Fact {
            dtype: t.dtype(),
            shape: t.shape(),
            value: (t.len() <= ops::util::MAX_FOLD).then(|| t.clone()),
        }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

/// Facts per value, plus the ops that had no rule (kept opaque) and the
/// nodes whose inference failed, each with the reason.
#[derive(Debug, Default)]
pub struct Facts {
    pub values: HashMap<String, Fact>,
    pub unknown_ops: Vec<String>,
    pub failures: Vec<(String, String)>,
}

impl Facts {
    pub fn get(&self, name: &str) -> Option<&Fact> {
        self.values.get(name)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.values.get(name).map(|f| f.shape.as_slice())
    }
}

/// Concrete input shapes from the graph's declared inputs: symbolic or
/// unknown dimensions become `batch` when first, an error elsewhere.
pub fn input_shapes(g: &Graph, batch: usize) -> Result<HashMap<String, Vec<usize>>> {
    let mut m = HashMap::new();
    for v in g.data_inputs() {
        let Some(dims) = &v.shape else {
            return Err(Error::Graph(format!(
                "input `{}` declares no shape",
                v.name
            )));
        };
        let mut shape = Vec::new();
        for (i, d) in dims.iter().enumerate() {
            shape.push(match d {
                Dim::Fixed(x) if *x >= 0 => *x as usize,
                _ if i == 0 => batch,
                _ => {
                    return Err(Error::Graph(format!(
                        "input `{}` has a symbolic dimension {i} other than the batch",
                        v.name
                    )))
                }
            });
        }
        m.insert(v.name.clone(), shape);
    }
    Ok(m)
}

/// Infers every value's fact. Unknown ops and failures do not stop the
/// pass: their outputs stay unknown and they are listed in the result.
pub fn infer(g: &Graph, inputs: &HashMap<String, Vec<usize>>) -> Facts {
    infer_varying(g, inputs, &|_| false)
}

/// Like `infer`, with the initializers `varies` names known by shape and
/// type only (tensors training changes: nothing computed from them is a
/// constant).
pub fn infer_varying(
    g: &Graph,
    inputs: &HashMap<String, Vec<usize>>,
    varies: &dyn Fn(&str) -> bool,
) -> Facts {
    let mut facts = Facts::default();
    for (name, t) in &g.initializers {
        let mut f = Fact::of_tensor(t);
        if varies(name) {
            f.value = None;
        }
        facts.values.insert(name.clone(), f);
    }
    for v in g.data_inputs() {
        if let Some(shape) = inputs.get(&v.name) {
            facts.values.insert(
                v.name.clone(),
                Fact {
                    dtype: v.elem_type,
                    shape: shape.clone(),
                    value: None,
                },
            );
        }
    }
    let opset = g.onnx_opset();
    for node in &g.nodes {
        let Some(rule) = ops::lookup(node) else {
            facts.unknown_ops.push(node.display_name());
            continue;
        };
        let cx = Ctx {
            node,
            inputs: node.inputs.iter().map(|i| facts.values.get(i)).collect(),
            opset,
        };
        match rule.infer(&cx) {
            Ok(outs) => {
                for (name, f) in node.outputs.iter().zip(outs) {
                    if !name.is_empty() {
                        facts.values.insert(name.clone(), f);
                    }
                }
            }
            Err(e) => facts.failures.push((node.display_name(), e.to_string())),
        }
    }
    facts
}

/// Like `infer`, but any failure is an error (for stages that need every
/// shape: gating, pruning, training).
pub fn infer_strict(g: &Graph, batch: usize) -> Result<Facts> {
    infer_strict_varying(g, batch, &|_| false)
}

/// `infer_strict` with `infer_varying`'s initializers.
pub fn infer_strict_varying(
    g: &Graph,
    batch: usize,
    varies: &dyn Fn(&str) -> bool,
) -> Result<Facts> {
    let facts = infer_varying(g, &input_shapes(g, batch)?, varies);
    if let Some((node, reason)) = facts.failures.first() {
        return Err(Error::Graph(format!(
            "shape inference failed at node `{node}`: {reason}"
        )));
    }
    Ok(facts)
}

/// Inputs of `node` as facts (for the cost and structure passes).
pub fn node_ctx<'a>(g: &Graph, facts: &'a Facts, node: &'a super::Node) -> Ctx<'a> {
    Ctx {
        node,
        inputs: node.inputs.iter().map(|i| facts.values.get(i)).collect(),
        opset: g.onnx_opset(),
    }
}
