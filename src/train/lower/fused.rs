//! The fused train-mode kernels `model::fusion` finds: BN (or a conv's
//! bias) with its gate and ReLU, and a residual Add with its ReLU.

use super::conv::conv2d;
use super::norm::{batch_statistics, bn_params};
use super::{scales_channels, Cx};
use crate::error::Result;
use crate::train::kernels::bn_chain::{BnChain, Norm};
use crate::train::kernels::channel::{AddRelu, Silu};
use crate::train::model::fusion::Chain;
use candle_core::Tensor;

/// Train-mode BN (or a conv's bias) with its gate and ReLU as one kernel;
/// None when the gate's shape is not per-channel or scalar (then the nodes
/// run apart).
pub(crate) fn bn_chain(cx: &mut Cx, chain: &Chain) -> Result<Option<Tensor>> {
    let gate = match &chain.gate {
        Some(name) => {
            let g = cx.value(name)?;
            let fits = cx
                .facts
                .shape(&cx.node.outputs[0])
                .is_some_and(|xd| scales_channels(xd, g.dims()));
            if !fits {
                return Ok(None);
            }
            g.flatten_all()?
        }
        None => Tensor::ones(1, cx.dtype(), cx.device())?,
    };
    let relu = chain.relu;
    if cx.node.op_type == "Conv" {
        // the conv without its bias; the bias is the chain's shift
        let x = conv2d(cx, &cx.input(0)?, &cx.input(1)?, None)?;
        let b = cx.input(2)?;
        let p = b.reshape((1, b.elem_count()))?;
        let op = BnChain {
            norm: Norm::Bias,
            relu,
        };
        return Ok(cx.op3(&x, &p, &gate, op).map(Some)?);
    }
    let x = cx.input(0)?;
    let eps = cx.node.attr_float_or("epsilon", 1e-5)? as f64;
    let params = bn_params(cx)?;
    let packed = batch_statistics(cx, &x, &params)?;
    let op = BnChain {
        norm: Norm::Batch { eps },
        relu,
    };
    Ok(x.contiguous()
        .and_then(|x| cx.op3(&x, &packed, &gate, op))
        .map(Some)?)
}

/// `Relu(a + b)` as one kernel; None when the operands' shapes differ
/// (a broadcasting Add runs apart).
pub(crate) fn add_relu(cx: &mut Cx) -> Result<Option<Tensor>> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    if a.dims() != b.dims() {
        return Ok(None);
    }
    let y = a
        .contiguous()
        .and_then(|a| cx.op2(&a, &b.contiguous()?, AddRelu))
        .map_err(|err| crate::error::Error::Candle(err).at_node(cx.node))?;
    Ok(Some(y))
}

/// SiLU as exported (`x · Sigmoid(x)`, at the Sigmoid node; the Mul is
/// fused away): one pass forward, one gradient backward.
pub(crate) fn silu(cx: &mut Cx) -> Result<Tensor> {
    let x = cx.input(0)?;
    x.contiguous()
        .and_then(|x| cx.op1(&x, Silu))
        .map_err(|err| crate::error::Error::Candle(err).at_node(cx.node))
}
