//! Fully connected layers: Gemm (transposes, α, β) and MatMul.

use super::{Cx, Lowering};
use crate::error::Result;
use candle_core::Tensor;

pub(super) const LOWERINGS: &[Lowering] = &[
    Lowering {
        op: "Gemm",
        run: gemm,
    },
    Lowering {
        op: "MatMul",
        run: matmul,
    },
];

fn gemm(cx: &mut Cx) -> Result<Tensor> {
    let (mut a, mut b) = (cx.input(0)?, cx.input(1)?);
    if cx.node.attr_int_or("transA", 0)? != 0 {
        a = a.t()?;
    }
    if cx.node.attr_int_or("transB", 0)? != 0 {
        b = b.t()?;
    }
    let alpha = cx.node.attr_float_or("alpha", 1.0)? as f64;
    let beta = cx.node.attr_float_or("beta", 1.0)? as f64;
    let mut y = (a.matmul(&b)? * alpha)?;
    if cx.has_input(2) {
        y = y.broadcast_add(&(cx.input(2)? * beta)?)?;
    }
    Ok(y)
}

fn matmul(cx: &mut Cx) -> Result<Tensor> {
    Ok(cx.input(0)?.broadcast_matmul(&cx.input(1)?)?)
}
