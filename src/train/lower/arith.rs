//! Broadcasting arithmetic: Add, Sum, Sub, Mul (a per-channel or scalar
//! factor such as a gate runs as the channel-scale kernel), Div, Pow by a
//! constant.

use super::{scales_channels, Cx, Lowering};
use crate::error::Result;
use crate::train::kernels::channel::ChannelScale;
use candle_core::Tensor;

pub(super) const LOWERINGS: &[Lowering] = &[
    Lowering {
        op: "Add",
        run: sum,
    },
    Lowering {
        op: "Sum",
        run: sum,
    },
    Lowering {
        op: "Sub",
        run: sub,
    },
    Lowering {
        op: "Mul",
        run: mul,
    },
    Lowering {
        op: "Div",
        run: div,
    },
    Lowering {
        op: "Pow",
        run: pow,
    },
];

/// `x ^ e` for a constant scalar exponent (a decomposed LayerNorm's
/// variance squares).
fn pow(cx: &mut Cx) -> Result<Tensor> {
    let x = cx.input(0)?;
    let scalar = cx.input(1)?.elem_count() == 1;
    match cx.first_value(1)? {
        Some(e) if scalar && e == 2.0 => Ok(x.sqr()?),
        Some(e) if scalar && e == 3.0 => Ok((x.sqr()? * &x)?),
        Some(e) if scalar && e == 0.5 => Ok(x.sqrt()?),
        _ => Err(cx.err("Pow trains with a constant scalar exponent of 2, 3 or 0.5 only")),
    }
}

fn sum(cx: &mut Cx) -> Result<Tensor> {
    let mut acc = cx.input(0)?;
    for i in 1..cx.node.inputs.len() {
        acc = acc.broadcast_add(&cx.input(i)?)?;
    }
    Ok(acc)
}

fn sub(cx: &mut Cx) -> Result<Tensor> {
    Ok(cx.input(0)?.broadcast_sub(&cx.input(1)?)?)
}

fn mul(cx: &mut Cx) -> Result<Tensor> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    match channel_operand(&a, &b) {
        Some((x, s)) if cx.fused() => {
            let s = s.flatten_all()?;
            Ok(x.contiguous().and_then(|x| cx.op2(&x, &s, ChannelScale))?)
        }
        _ => Ok(a.broadcast_mul(&b)?),
    }
}

fn div(cx: &mut Cx) -> Result<Tensor> {
    Ok(cx.input(0)?.broadcast_div(&cx.input(1)?)?)
}

/// For `a · b`: the [N, C, ...] operand and the per-channel ([1, C, 1, 1],
/// [C, 1, 1]), per-sample-and-channel ([N, C, 1, 1]: a squeeze-and-
/// excitation's factors) or scalar one, when the product has that form.
fn channel_operand(a: &Tensor, b: &Tensor) -> Option<(Tensor, Tensor)> {
    let per_sample = |xd: &[usize], sd: &[usize]| {
        xd.len() == sd.len()
            && xd.len() > 2
            && sd[..2] == xd[..2]
            && sd[2..].iter().all(|&d| d == 1)
    };
    let fits = |x: &Tensor, s: &Tensor| {
        s.elem_count() > 0
            && (scales_channels(x.dims(), s.dims()) || per_sample(x.dims(), s.dims()))
    };
    if fits(a, b) && a.elem_count() >= b.elem_count() {
        Some((a.clone(), b.clone()))
    } else if fits(b, a) && b.elem_count() > a.elem_count() {
        Some((b.clone(), a.clone()))
    } else {
        None
    }
}
