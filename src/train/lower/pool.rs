//! Pooling: MaxPool (its own CPU kernel; candle's max_pool2d has the wrong
//! gradient), AveragePool with kernel = stride, GlobalAveragePool.

use super::{geometry, usize_attr, Cx, Lowering};
use crate::error::Result;
use crate::graph::ops::conv::Window;
use crate::train::kernels::maxpool::{max_pool_generic, MaxPool};
use candle_core::{Tensor, D};

pub(super) const LOWERINGS: &[Lowering] = &[
    Lowering {
        op: "MaxPool",
        run: max_pool,
    },
    Lowering {
        op: "AveragePool",
        run: average_pool,
    },
    Lowering {
        op: "GlobalAveragePool",
        run: global_average_pool,
    },
];

fn max_pool(cx: &mut Cx) -> Result<Tensor> {
    let x = cx.input(0)?;
    let xs = x.dims().to_vec();
    let k = usize_attr(cx.node, "kernel_shape")?;
    let ceil = cx.node.attr_int_or("ceil_mode", 0)? != 0;
    let (w, _) = Window::from_node(&cx.rule_cx(), k, &xs[2..], ceil)?;
    let os = cx.out_shape()?;
    let mut geo = geometry(&xs, &w)?;
    geo.oh = os[2];
    geo.ow = os[3];
    if cx.fused() {
        Ok(x.contiguous().and_then(|x| cx.op1(&x, MaxPool(geo)))?)
    } else {
        Ok(max_pool_generic(&x, &geo)?)
    }
}

fn average_pool(cx: &mut Cx) -> Result<Tensor> {
    let x = cx.input(0)?;
    let k = usize_attr(cx.node, "kernel_shape")?;
    let s: Vec<usize> = match cx.node.attr_ints("strides")? {
        Some(s) => s.iter().map(|&v| v as usize).collect(),
        None => k.clone(),
    };
    let no_pad = cx
        .node
        .attr_ints("pads")?
        .is_none_or(|p| p.iter().all(|&v| v == 0));
    if k.len() != 2 || k != s || !no_pad {
        return Err(
            cx.err("training supports AveragePool only with kernel = stride and no padding")
        );
    }
    Ok(x.avg_pool2d((k[0], k[1]))?)
}

fn global_average_pool(cx: &mut Cx) -> Result<Tensor> {
    Ok(cx
        .input(0)?
        .mean_keepdim(D::Minus1)
        .and_then(|t| t.mean_keepdim(D::Minus2))?)
}
