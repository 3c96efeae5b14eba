//! `BatchNormalization` (inference form: scale, bias, mean, var) and
//! `LayerNormalization` (over the trailing axes from `axis`).

use super::{Ctx, OpRule};
use crate::error::Result;
use crate::graph::shape::Fact;

pub struct BatchNorm;
pub struct LayerNorm;

impl OpRule for BatchNorm {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        if x.rank() < 2 {
            return Err(cx.err(format!("input shape {:?} has no channel axis", x.shape)));
        }
        let c = x.shape[1];
        for i in 1..5 {
            let p = cx.input(i)?;
            if p.shape != [c] {
                return Err(cx.err(format!(
                    "parameter input {i} has shape {:?}, expected [{c}]",
                    p.shape
                )));
            }
        }
        one_output_like(
            cx,
            x,
            "training-mode BatchNormalization (running-stat outputs) is not supported",
        )
    }

    /// Learned: scale and bias; the running mean and variance are statistics.
    fn param_inputs(&self) -> Option<&'static [usize]> {
        Some(&[1, 2])
    }
}

/// The first normalized axis of a LayerNormalization on a tensor of rank
/// `rank` (its `axis`, negative from the end).
pub fn layer_norm_axis(node: &crate::graph::Node, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let axis = node.attr_int_or("axis", -1)?;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..r).contains(&a) {
        return Err(crate::error::Error::node(
            node,
            format!("axis {axis} out of range for rank {r}"),
        ));
    }
    Ok(a as usize)
}

impl OpRule for LayerNorm {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let normalized = &x.shape[layer_norm_axis(cx.node, x.rank())?..];
        for i in 1..3 {
            if !cx.has_input(i) {
                continue;
            }
            let p = cx.input(i)?;
            if p.shape != normalized {
                return Err(cx.err(format!(
                    "input {i} has shape {:?}, expected the normalized shape {normalized:?}",
                    p.shape
                )));
            }
        }
        one_output_like(
            cx,
            x,
            "LayerNormalization's Mean and InvStdDev outputs are not supported",
        )
    }

    /// Learned: scale and bias.
    fn param_inputs(&self) -> Option<&'static [usize]> {
        Some(&[1, 2])
    }
}

/// A normalisation's one output, shaped like its input `x`; an extra
/// (statistics) output is refused with `why`.
fn one_output_like(cx: &Ctx, x: &Fact, why: &str) -> Result<Vec<Fact>> {
    if cx.node.outputs.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(cx.err(why));
    }
    Ok(vec![Fact {
        dtype: x.dtype,
        shape: x.shape.clone(),
        value: None,
    }])
}
