//! Elementwise activations.

use super::{Cx, Lowering};
use crate::error::Result;
use crate::train::kernels::channel::{Clamp, Relu};
use candle_core::Tensor;

pub(super) const LOWERINGS: &[Lowering] = &[
    Lowering {
        op: "Relu",
        run: relu,
    },
    Lowering {
        op: "Clip",
        run: clip,
    },
    Lowering {
        op: "LeakyRelu",
        run: leaky_relu,
    },
    Lowering {
        op: "Identity",
        run: identity,
    },
    Lowering {
        op: "Dropout",
        run: identity,
    },
    Lowering {
        op: "Sigmoid",
        run: sigmoid,
    },
    Lowering {
        op: "HardSigmoid",
        run: hard_sigmoid,
    },
    Lowering {
        op: "HardSwish",
        run: hard_swish,
    },
    Lowering {
        op: "Gelu",
        run: gelu,
    },
    Lowering {
        op: "Erf",
        run: erf,
    },
    Lowering {
        op: "Sqrt",
        run: sqrt,
    },
    Lowering {
        op: "Tanh",
        run: tanh,
    },
    Lowering {
        op: "Softmax",
        run: softmax,
    },
];

/// Softmax over `axis` (attention scores): exp(x − max) / Σ, the max
/// held constant (it cancels). Before opset 13 the op flattens from
/// `axis` on (default 1); from 13 it is one axis (default −1).
fn softmax(cx: &mut Cx) -> Result<Tensor> {
    let x = cx.input(0)?;
    let rank = x.rank() as i64;
    let opset = cx.model.graph.onnx_opset();
    let axis = cx
        .node
        .attr_int_or("axis", if opset >= 13 { -1 } else { 1 })?;
    let a = if axis < 0 { axis + rank } else { axis };
    if !(0..rank).contains(&a) {
        return Err(cx.err(format!("axis {axis} out of range for rank {rank}")));
    }
    let a = a as usize;
    let one_axis = |x: &Tensor, a: usize| -> candle_core::Result<Tensor> {
        let m = x.max_keepdim(a)?.detach();
        let e = x.broadcast_sub(&m)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(a)?)
    };
    if opset >= 13 || a + 1 == x.rank() {
        return Ok(one_axis(&x, a)?);
    }
    let dims = x.dims().to_vec();
    let outer: usize = dims[..a].iter().product();
    let flat = x.reshape((outer, dims[a..].iter().product::<usize>()))?;
    Ok(one_axis(&flat, 1)?.reshape(dims)?)
}

/// GELU (opset 20): exact, `x · Φ(x)`, or its tanh approximation.
fn gelu(cx: &mut Cx) -> Result<Tensor> {
    let x = cx.input(0)?;
    match cx.node.attr_string("approximate")?.as_deref() {
        None | Some("none") => Ok(x.gelu_erf()?),
        Some("tanh") => Ok(x.gelu()?),
        Some(other) => Err(cx.err(format!("unknown GELU approximation `{other}`"))),
    }
}

/// Erf, as GELU's exports spell it out: `x · (erf(x / √2) + 1) / 2`.
fn erf(cx: &mut Cx) -> Result<Tensor> {
    Ok(cx.input(0)?.erf()?)
}

fn sqrt(cx: &mut Cx) -> Result<Tensor> {
    Ok(cx.input(0)?.sqrt()?)
}

fn tanh(cx: &mut Cx) -> Result<Tensor> {
    Ok(cx.input(0)?.tanh()?)
}

fn relu(cx: &mut Cx) -> Result<Tensor> {
    let x = cx.input(0)?;
    if cx.fused() {
        return Ok(x.contiguous().and_then(|x| cx.op1(&x, Relu))?);
    }
    Ok(x.relu()?)
}

fn clip(cx: &mut Cx) -> Result<Tensor> {
    let bound = |i: usize, attr: &str, d: f32| -> Result<f32> {
        match cx.node.input(i) {
            Some(_) => cx
                .first_value(i)?
                .ok_or_else(|| cx.err(format!("Clip bound (input {i}) is empty"))),
            None => cx.node.attr_float_or(attr, d),
        }
    };
    let (lo, hi) = (bound(1, "min", f32::MIN)?, bound(2, "max", f32::MAX)?);
    let x = cx.input(0)?;
    if cx.fused() {
        let op = Clamp {
            lo: lo as f64,
            hi: hi as f64,
        };
        return Ok(x.contiguous().and_then(|x| cx.op1(&x, op))?);
    }
    Ok(x.clamp(lo, hi)?)
}

fn leaky_relu(cx: &mut Cx) -> Result<Tensor> {
    let a = cx.node.attr_float_or("alpha", 0.01)? as f64;
    let x = cx.input(0)?;
    Ok((x.relu()? - (x.neg()?.relu()? * a)?)?)
}

/// Identity, and Dropout (training a pruned net without it: the export's
/// Dropout is inference-mode).
fn identity(cx: &mut Cx) -> Result<Tensor> {
    cx.input(0)
}

/// 1 / (1 + e^−x): the SE gate of EfficientNet and, times x, SiLU.
fn sigmoid(cx: &mut Cx) -> Result<Tensor> {
    Ok((cx.input(0)?.neg()?.exp()? + 1.0)?.recip()?)
}

/// max(0, min(1, αx + β)), α = 0.2 and β = 0.5 unless the node says
/// (PyTorch exports α = 1/6).
fn hard_sigmoid(cx: &mut Cx) -> Result<Tensor> {
    let alpha = cx.node.attr_float_or("alpha", 0.2)? as f64;
    let beta = cx.node.attr_float_or("beta", 0.5)? as f64;
    Ok(cx.input(0)?.affine(alpha, beta)?.clamp(0f32, 1f32)?)
}

/// x · max(0, min(1, x/6 + 1/2)) (MobileNetV3).
fn hard_swish(cx: &mut Cx) -> Result<Tensor> {
    let x = cx.input(0)?;
    let gate = x.affine(1.0 / 6.0, 0.5)?.clamp(0f32, 1f32)?;
    Ok((x * gate)?)
}
