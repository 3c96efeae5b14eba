//! Conv: the CPU kernels (`kernels::conv`, recorded on the tape) or
//! candle's conv2d on other devices.

use super::{geometry, Cx, Lowering};
use crate::error::Result;
use crate::graph::ops::conv::{groups, Window};
use crate::train::kernels::channel::ChannelBias;
use crate::train::kernels::conv::Conv2d;
use candle_core::Tensor;

pub(super) const LOWERINGS: &[Lowering] = &[Lowering {
    op: "Conv",
    run: conv,
}];

fn conv(cx: &mut Cx) -> Result<Tensor> {
    let b = cx.has_input(2).then(|| cx.input(2)).transpose()?;
    conv2d(cx, &cx.input(0)?, &cx.input(1)?, b)
}

/// A 2-D convolution of `x` by `w` (+ bias `b`) with the node's window.
pub(crate) fn conv2d(cx: &Cx, x: &Tensor, w: &Tensor, b: Option<Tensor>) -> Result<Tensor> {
    let xs = x.dims().to_vec();
    let ws = w.dims().to_vec();
    if xs.len() != 4 {
        return Err(cx.err(format!("training supports 2-D convolutions (input {xs:?})")));
    }
    let groups = groups(cx.node)?;
    let (win, _) = Window::from_node(&cx.rule_cx(), ws[2..].to_vec(), &xs[2..], false)?;
    let cout = ws[0];
    let y = if cx.fused() {
        let op = Conv2d {
            g: geometry(&xs, &win)?,
            groups,
            cout,
        };
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        cx.model.conv_op(&x, &w, op)?
    } else {
        let sym =
            win.pads[0] == win.pads[2] && win.pads[1] == win.pads[3] && win.pads[0] == win.pads[1];
        let xp = if sym {
            x.clone()
        } else {
            x.pad_with_zeros(2, win.pads[0], win.pads[2])
                .and_then(|t| t.pad_with_zeros(3, win.pads[1], win.pads[3]))?
        };
        let p = if sym { win.pads[0] } else { 0 };
        if win.strides[0] != win.strides[1] || win.dilations[0] != win.dilations[1] {
            return Err(cx.err("non-square strides/dilations need the CPU path"));
        }
        xp.conv2d(w, p, win.strides[0], win.dilations[0], groups)?
    };
    match b {
        Some(b) if cx.fused() => Ok(cx.op2(&y, &b.flatten_all()?, ChannelBias)?),
        Some(b) => Ok(y.broadcast_add(&b.reshape((1, cout, 1, 1))?)?),
        None => Ok(y),
    }
}
