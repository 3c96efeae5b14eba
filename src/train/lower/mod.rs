//! One lowering function per op: how training computes a node with candle
//! (and the CPU kernels). Each family file lists what it lowers in its own
//! `LOWERINGS`; an op can be trained exactly when one of those lists names
//! it, so adding an op's training is one entry beside its function.
//! `graph::ops::OPS` says what the op is (shapes, MACs, path role); this
//! table says how it is trained.

mod activation;
mod arith;
mod conv;
pub(crate) mod fused;
mod layout;
mod linear;
pub(crate) mod norm;
mod pool;
mod reduce;

use super::kernels::Geometry;
use super::model::{convert::to_candle, Model, StatUpdates};
use crate::error::{Error, Result};
use crate::graph::ops::conv::Window;
use crate::graph::ops::Ctx;
use crate::graph::shape::{node_ctx, Facts};
use crate::graph::Node;
use candle_core::{CustomOp1, CustomOp2, CustomOp3, DType, Device, Tensor};
use std::collections::HashMap;

/// Computes one node's (first) output.
pub type LowerFn = fn(&mut Cx) -> Result<Tensor>;

/// An op's training lowering.
pub struct Lowering {
    pub op: &'static str,
    pub run: LowerFn,
}

/// Every family's list; an op appears in at most one.
const FAMILIES: &[&[Lowering]] = &[
    conv::LOWERINGS,
    norm::LOWERINGS,
    activation::LOWERINGS,
    arith::LOWERINGS,
    pool::LOWERINGS,
    reduce::LOWERINGS,
    linear::LOWERINGS,
    layout::LOWERINGS,
];

/// The lowering of an op of the default domain, if training has one.
pub fn find(op: &str) -> Option<&'static Lowering> {
    FAMILIES.iter().flat_map(|f| f.iter()).find(|l| l.op == op)
}

/// The ops training lowers.
pub fn ops() -> impl Iterator<Item = &'static str> {
    FAMILIES.iter().flat_map(|f| f.iter()).map(|l| l.op)
}

/// What a lowering sees: the node, the values computed so far, the shapes
/// at the batch in use, and the model (device, kernels, the tape).
pub struct Cx<'a> {
    pub(crate) model: &'a Model,
    pub node: &'a Node,
    pub(crate) env: &'a HashMap<&'a str, Tensor>,
    pub facts: &'a Facts,
    /// Train mode: BN on batch statistics, running statistics updated.
    pub train: bool,
    /// Running-statistics updates a train-mode pass queues.
    pub updates: &'a mut StatUpdates,
}

impl<'a> Cx<'a> {
    /// The value of input `i` (an activation, a learned tensor, a constant
    /// or a value shape inference knows).
    pub fn input(&self, i: usize) -> Result<Tensor> {
        let name = self
            .node
            .input(i)
            .ok_or_else(|| Error::node(self.node, format!("input {i} missing")))?;
        self.value(name)
    }

    pub fn has_input(&self, i: usize) -> bool {
        self.node.input(i).is_some()
    }

    pub(crate) fn value(&self, name: &str) -> Result<Tensor> {
        let m = self.model;
        if let Some(t) = self.env.get(name) {
            return Ok(t.clone());
        }
        if let Some(v) = m.vars.get(name) {
            return Ok(v.as_tensor().clone());
        }
        if let Some(t) = m.stats.get(name).or_else(|| m.consts.get(name)) {
            return Ok(t.clone());
        }
        let known = self
            .facts
            .get(name)
            .and_then(|f| f.value.as_ref())
            .and_then(|v| v.to_f32());
        match known {
            Some(a) => {
                to_candle(&a, &m.device, m.dtype).map_err(|e| Error::Candle(e).at_node(self.node))
            }
            None => Err(Error::node(
                self.node,
                format!("input `{name}` has no value"),
            )),
        }
    }

    /// The first value of input `i` (a scalar operand such as a bound);
    /// `None` when the tensor is empty.
    pub fn first_value(&self, i: usize) -> Result<Option<f32>> {
        let v = self
            .input(i)?
            .flatten_all()
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec1::<f32>())?;
        Ok(v.first().copied())
    }

    /// The first output's shape at the batch in use.
    pub fn out_shape(&self) -> Result<Vec<usize>> {
        self.facts
            .shape(&self.node.outputs[0])
            .map(|s| s.to_vec())
            .ok_or_else(|| Error::node(self.node, "output shape unknown"))
    }

    /// What the op's shape rule sees (attributes resolved against inputs).
    pub fn rule_cx(&self) -> Ctx<'a> {
        node_ctx(&self.model.graph, self.facts, self.node)
    }

    /// Whether the CPU kernels run (false: candle's own ops, the path
    /// every other device takes).
    pub fn fused(&self) -> bool {
        self.model.fused
    }

    pub fn device(&self) -> &Device {
        &self.model.device
    }

    pub fn dtype(&self) -> DType {
        self.model.dtype
    }

    pub fn err(&self, reason: impl Into<String>) -> Error {
        Error::node(self.node, reason)
    }

    /// Applies a CPU kernel, recorded when a tape is being made.
    pub fn op1<O>(&self, x: &Tensor, op: O) -> candle_core::Result<Tensor>
    where
        O: CustomOp1 + Send + Sync + 'static,
    {
        self.model.op1(x, op)
    }

    pub fn op2<O>(&self, a: &Tensor, b: &Tensor, op: O) -> candle_core::Result<Tensor>
    where
        O: CustomOp2 + Send + Sync + 'static,
    {
        self.model.op2(a, b, op)
    }

    pub fn op3<O>(&self, a: &Tensor, b: &Tensor, c: &Tensor, op: O) -> candle_core::Result<Tensor>
    where
        O: CustomOp3 + Send + Sync + 'static,
    {
        self.model.op3(a, b, c, op)
    }
}

/// Whether a tensor of dims `sd` is a per-channel ([1, C, 1, 1], [C, 1, 1])
/// or scalar factor for an [N, C, ...] tensor of dims `xd`.
pub(crate) fn scales_channels(xd: &[usize], sd: &[usize]) -> bool {
    if xd.len() < 2 || sd.len() > xd.len() {
        return false;
    }
    let c = xd[1];
    let n: usize = sd.iter().product();
    n == 1
        || (n == c && {
            // the C entries must sit on axis 1 once right-aligned
            let off = xd.len() - sd.len();
            sd.iter()
                .enumerate()
                .all(|(i, &d)| if i + off == 1 { d == c } else { d == 1 })
        })
}

/// A 2-D window over an NCHW input as the CPU kernels take it.
pub(crate) fn geometry(xs: &[usize], w: &Window) -> Result<Geometry> {
    if xs.len() != 4 || w.kernel.len() != 2 {
        return Err(Error::Invalid(
            "only 2-D windows are supported in training".into(),
        ));
    }
    Ok(Geometry::new(
        xs[1],
        xs[2],
        xs[3],
        [w.kernel[0], w.kernel[1]],
        [w.strides[0], w.strides[1]],
        [w.pads[0], w.pads[1], w.pads[2], w.pads[3]],
        [w.dilations[0], w.dilations[1]],
    ))
}

/// The `usize` values of an integer-list attribute (empty when absent).
pub(crate) fn usize_attr(node: &Node, name: &str) -> Result<Vec<usize>> {
    Ok(node
        .attr_ints(name)?
        .unwrap_or(&[])
        .iter()
        .map(|&v| v as usize)
        .collect())
}
