//! `Constant`: its value from whichever attribute holds it.

use super::{Ctx, OpRule};
use crate::error::{Error, Result};
use crate::graph::shape::Fact;
use crate::graph::{Attr, Node, Tensor};
use ndarray::{ArrayD, IxDyn};

pub struct Constant;

pub fn value(node: &Node) -> Result<Tensor> {
    for (name, a) in &node.attrs {
        let t = match (name.as_str(), a) {
            ("value", Attr::Tensor(t)) => t.clone(),
            ("value_float", Attr::Float(f)) => Tensor::F32(ArrayD::from_elem(IxDyn(&[]), *f)),
            ("value_floats", Attr::Floats(f)) => Tensor::F32(
                ArrayD::from_shape_vec(IxDyn(&[f.len()]), f.clone())
                    .map_err(|e| Error::node(node, e.to_string()))?,
            ),
            ("value_int", Attr::Int(i)) => Tensor::I64(ArrayD::from_elem(IxDyn(&[]), *i)),
            ("value_ints", Attr::Ints(i)) => Tensor::I64(
                ArrayD::from_shape_vec(IxDyn(&[i.len()]), i.clone())
                    .map_err(|e| Error::node(node, e.to_string()))?,
            ),
            _ => continue,
        };
        return Ok(t);
    }
    Err(Error::node(
        node,
        "Constant without a supported value attribute",
    ))
}

impl OpRule for Constant {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let t = value(cx.node)?;
        Ok(vec![Fact {
            dtype: t.dtype(),
            shape: t.shape(),
            value: Some(t),
        }])
    }
}
