//! BatchNormalization: train mode on batch statistics (the fused CPU kernel
//! with its closed-form backward, or candle's ops), eval mode on the running
//! statistics; the running averages' update. LayerNormalization.

use super::{Cx, Lowering};
use crate::error::Result;
use crate::train::kernels::batchnorm::{BatchNormTrain, ChannelStats};
use candle_core::Tensor;

pub(super) const LOWERINGS: &[Lowering] = &[
    Lowering {
        op: "BatchNormalization",
        run: batch_norm,
    },
    Lowering {
        op: "LayerNormalization",
        run: layer_norm,
    },
];

/// LayerNormalization over the axes from `axis` on: the same in training
/// and inference (no running statistics).
fn layer_norm(cx: &mut Cx) -> Result<Tensor> {
    let x = cx.input(0)?;
    let a = crate::graph::ops::norm::layer_norm_axis(cx.node, x.rank())?;
    let eps = cx.node.attr_float_or("epsilon", 1e-5)? as f64;
    let axes: Vec<usize> = (a..x.rank()).collect();
    let mut m = x.clone();
    for &d in &axes {
        m = m.mean_keepdim(d)?;
    }
    let xc = x.broadcast_sub(&m)?;
    let mut v = xc.sqr()?;
    for &d in &axes {
        v = v.mean_keepdim(d)?;
    }
    let mut y = xc.broadcast_div(&(v + eps)?.sqrt()?)?;
    if cx.has_input(1) {
        y = y.broadcast_mul(&cx.input(1)?)?;
    }
    if cx.has_input(2) {
        y = y.broadcast_add(&cx.input(2)?)?;
    }
    Ok(y)
}

/// Scale, bias, running mean, running variance.
pub(crate) fn bn_params(cx: &Cx) -> Result<[Tensor; 4]> {
    Ok([cx.input(1)?, cx.input(2)?, cx.input(3)?, cx.input(4)?])
}

fn batch_norm(cx: &mut Cx) -> Result<Tensor> {
    let x = cx.input(0)?;
    let p = bn_params(cx)?;
    let eps = cx.node.attr_float_or("epsilon", 1e-5)? as f64;
    if cx.train && cx.fused() {
        // fused kernels: statistics for the running averages, then the
        // normalisation with its closed-form backward
        let packed = batch_statistics(cx, &x, &p)?;
        return Ok(x
            .contiguous()
            .and_then(|x| cx.op2(&x, &packed, BatchNormTrain { eps }))?);
    }
    let c = p[0].dims()[0];
    let shape = (1, c, 1, 1);
    let [scale, bias, mean, var] = p.map(|t| t.reshape(shape));
    let (scale, bias, mean, var) = (scale?, bias?, mean?, var?);
    let (m, v) = if cx.train {
        let m = x.mean_keepdim((0, 2, 3))?;
        let xc = x.broadcast_sub(&m)?;
        let v = xc.sqr().and_then(|t| t.mean_keepdim((0, 2, 3)))?;
        let (bm, bv) = (m.flatten_all()?, v.flatten_all()?);
        running_update(cx, &bm, &bv, x.elem_count() / c, &mean, &var)?;
        (m, v)
    } else {
        (mean, var)
    };
    let inv = (v + eps).and_then(|t| t.sqrt()).and_then(|t| t.recip())?;
    let k = scale.broadcast_mul(&inv)?;
    let shift = bias.broadcast_sub(&m.broadcast_mul(&k)?)?;
    Ok(x.broadcast_mul(&k).and_then(|t| t.broadcast_add(&shift))?)
}

/// Train-mode BN's batch statistics, computed once: queued as running
/// statistic updates, and returned packed with scale and bias as the
/// [4, C] operand of the fused BN kernels. `p`: scale, bias, running
/// mean, running variance.
pub(crate) fn batch_statistics(cx: &mut Cx, x: &Tensor, p: &[Tensor; 4]) -> Result<Tensor> {
    let c = p[0].elem_count();
    let st = x
        .contiguous()
        .and_then(|x| x.apply_op1_no_bwd(&ChannelStats))?;
    let (bm, bv) = (st.get(0)?, st.get(1)?);
    let shape = (1, c, 1, 1);
    let (mean, var) = (p[2].reshape(shape)?, p[3].reshape(shape)?);
    running_update(cx, &bm, &bv, x.elem_count() / c, &mean, &var)?;
    let flat = |t: &Tensor| t.flatten_all();
    Ok(Tensor::stack(&[flat(&p[0])?, flat(&p[1])?, bm, bv], 0)?)
}

/// New running statistics: the node's momentum (or the recalibration's
/// running average), unbiased variance.
fn running_update(
    cx: &mut Cx,
    bm: &Tensor,
    bv: &Tensor,
    count: usize,
    mean: &Tensor,
    var: &Tensor,
) -> Result<()> {
    let momentum = match cx.model.stat_momentum {
        Some(m) => m,
        None => cx.node.attr_float_or("momentum", 0.9)? as f64,
    };
    let count = count as f64;
    let unbiased = (bv.detach() * (count / (count - 1.0).max(1.0)))?;
    let old_m = mean.flatten_all()?;
    let old_v = var.flatten_all()?;
    let new_mean = ((old_m * momentum)? + (bm.detach() * (1.0 - momentum))?)?;
    let new_var = ((old_v * momentum)? + (unbiased * (1.0 - momentum))?)?;
    if let (Some(mn), Some(vn)) = (cx.node.input(3), cx.node.input(4)) {
        cx.updates.push((mn.to_string(), new_mean));
        cx.updates.push((vn.to_string(), new_var));
    }
    Ok(())
}
