//! Reductions: ReduceMean over the node's axes.

use super::{Cx, Lowering};
use crate::error::Result;
use crate::graph::ops::reduce;
use candle_core::Tensor;

pub(super) const LOWERINGS: &[Lowering] = &[Lowering {
    op: "ReduceMean",
    run: reduce_mean,
}];

fn reduce_mean(cx: &mut Cx) -> Result<Tensor> {
    let x = cx.input(0)?;
    let axes = reduce::axes(&cx.rule_cx(), x.rank())?;
    let mut t = x;
    for &a in axes.iter().rev() {
        t = t.mean_keepdim(a)?;
    }
    Ok(t.reshape(cx.out_shape()?)?)
}
