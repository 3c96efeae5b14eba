//! Layout ops: reshapes to the inferred shape, Transpose, Concat, Slice
//! (strided slices as one CPU kernel), zero Pad, Gather by constant indices.

use super::{Cx, Lowering};
use crate::error::Result;
use crate::graph::ops::shape_ops;
use crate::train::kernels::slice::StridedSlice;
use candle_core::Tensor;

pub(super) const LOWERINGS: &[Lowering] = &[
    Lowering {
        op: "Flatten",
        run: reshape,
    },
    Lowering {
        op: "Reshape",
        run: reshape,
    },
    Lowering {
        op: "Squeeze",
        run: reshape,
    },
    Lowering {
        op: "Unsqueeze",
        run: reshape,
    },
    Lowering {
        op: "Transpose",
        run: transpose,
    },
    Lowering {
        op: "Concat",
        run: concat,
    },
    Lowering {
        op: "Slice",
        run: slice,
    },
    Lowering {
        op: "Pad",
        run: pad,
    },
    Lowering {
        op: "Gather",
        run: gather,
    },
    Lowering {
        op: "Expand",
        run: expand,
    },
    Lowering {
        op: "Cast",
        run: cast,
    },
];

/// Expand to the inferred shape (a class token given the batch).
fn expand(cx: &mut Cx) -> Result<Tensor> {
    let x = cx.input(0)?;
    let shape = cx.out_shape()?;
    // a lower rank is aligned to the right, as broadcasting does
    let mut dims = vec![1; shape.len().saturating_sub(x.rank())];
    dims.extend_from_slice(x.dims());
    Ok(x.reshape(dims)?.broadcast_as(shape)?.contiguous()?)
}

/// A cast to float of a value computed in float (an attention scale made
/// from a shape): the value itself at the training dtype. Other casts of
/// computed values are not part of a trainable path.
fn cast(cx: &mut Cx) -> Result<Tensor> {
    let to = cx.node.attr_int_or("to", 0)?;
    if to != crate::graph::tensor::dtype::FLOAT as i64 {
        return Err(cx.err(format!(
            "Cast to element type {to} of a computed value cannot be trained"
        )));
    }
    Ok(cx.input(0)?.to_dtype(cx.dtype())?)
}

/// Gather of the data by constant indices (an export's strided view spelled
/// as index arithmetic, a class token picked out): the indices are known
/// at the batch in use, so the gather is a fixed selection.
fn gather(cx: &mut Cx) -> Result<Tensor> {
    let x = cx.input(0)?;
    let rank = x.rank() as i64;
    let axis = cx.node.attr_int_or("axis", 0)?;
    let a = if axis < 0 { axis + rank } else { axis };
    if !(0..rank).contains(&a) {
        return Err(cx.err(format!("axis {axis} out of range for rank {rank}")));
    }
    let a = a as usize;
    let dim = x.dims()[a] as i64;
    let idx = cx.rule_cx().const_ints(1, "Gather indices")?;
    let flat: Vec<u32> = idx
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + dim } else { i };
            u32::try_from(j)
                .ok()
                .filter(|&j| (j as i64) < dim)
                .ok_or_else(|| cx.err(format!("index {i} out of range for {dim}")))
        })
        .collect::<Result<_>>()?;
    let n = flat.len();
    let t = Tensor::from_vec(flat, n, x.device())?;
    Ok(x.contiguous()?
        .index_select(&t, a)?
        .reshape(cx.out_shape()?)?)
}

/// Every reshape-like op: the shape inference already knows the result.
fn reshape(cx: &mut Cx) -> Result<Tensor> {
    Ok(cx.input(0)?.reshape(cx.out_shape()?)?)
}

fn transpose(cx: &mut Cx) -> Result<Tensor> {
    let x = cx.input(0)?;
    let perm: Vec<usize> = match cx.node.attr_ints("perm")? {
        Some(p) => p.iter().map(|&v| v as usize).collect(),
        None => (0..x.rank()).rev().collect(),
    };
    Ok(x.permute(perm)?)
}

fn concat(cx: &mut Cx) -> Result<Tensor> {
    let xs: Vec<Tensor> = (0..cx.node.inputs.len())
        .map(|i| cx.input(i))
        .collect::<Result<_>>()?;
    let r = xs[0].rank() as i64;
    let a = cx.node.attr_int_or("axis", 0)?;
    Ok(Tensor::cat(
        &xs,
        if a < 0 { (a + r) as usize } else { a as usize },
    )?)
}

fn slice(cx: &mut Cx) -> Result<Tensor> {
    let x = cx.input(0)?;
    let plan = shape_ops::slice_plan(&cx.rule_cx(), x.dims())?;
    let strided = plan.iter().any(|&(_, step, _)| step != 1);
    let one_op = (cx.fused() && strided)
        .then(|| StridedSlice::new(x.dims(), &plan))
        .flatten();
    if let Some(op) = one_op {
        return Ok(x.contiguous().and_then(|x| cx.op1(&x, op))?);
    }
    let mut t = x.clone();
    for (axis, &(start, step, len)) in plan.iter().enumerate() {
        if step == 1 && start == 0 && len == x.dims()[axis] {
            continue;
        }
        if step == 1 {
            t = t.narrow(axis, start as usize, len)?;
        } else {
            let idx: Vec<u32> = (0..len).map(|i| (start + i as i64 * step) as u32).collect();
            let idx = Tensor::new(idx.as_slice(), cx.device())?;
            t = t.index_select(&idx, axis)?;
        }
    }
    Ok(t)
}

fn pad(cx: &mut Cx) -> Result<Tensor> {
    let x = cx.input(0)?;
    let mode = cx
        .node
        .attr_string("mode")?
        .unwrap_or_else(|| "constant".into());
    // an empty constant_value is the default 0
    let value = match cx.has_input(2) {
        true => cx.first_value(2)?.unwrap_or(0.0),
        false => 0.0,
    };
    if mode != "constant" || value != 0.0 {
        return Err(cx.err("training supports only zero constant padding"));
    }
    let r = x.rank();
    let pads = shape_ops::pads(&cx.rule_cx(), r)?;
    let mut t = x;
    for a in 0..r {
        let (b, en) = (pads[a], pads[a + r]);
        if b < 0 || en < 0 {
            return Err(cx.err("negative pads are not supported in training"));
        }
        if b > 0 || en > 0 {
            t = t.pad_with_zeros(a, b as usize, en as usize)?;
        }
    }
    Ok(t)
}
