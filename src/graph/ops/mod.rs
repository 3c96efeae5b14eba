//! One op, one place: each supported ONNX op registers a rule (shape and
//! constant inference, MAC count, which inputs are parameters) under its name.
//! Later stages (lowering, pruning) look ops up here as well.

pub mod constant;
pub mod conv;
mod elementwise;
mod linear;
mod norm;
mod pool;
pub mod reduce;
pub mod shape_ops;
pub mod util;

use super::shape::Fact;
use super::Node;
use crate::error::{Error, Result};

/// What a rule sees of one node: the node, the facts of its inputs (absent
/// for optional inputs and for values whose shape is unknown) and the opset.
pub struct Ctx<'a> {
    pub node: &'a Node,
    pub inputs: Vec<Option<&'a Fact>>,
    pub opset: i64,
}

impl<'a> Ctx<'a> {
    pub fn input(&self, i: usize) -> Result<&'a Fact> {
        self.inputs.get(i).copied().flatten().ok_or_else(|| {
            Error::node(
                self.node,
                format!("input {i} is missing or its shape is unknown"),
            )
        })
    }

    pub fn has_input(&self, i: usize) -> bool {
        self.node.input(i).is_some()
    }

    /// Integer contents of input `i`, which must be a known constant (an
    /// initializer, a Constant or computable shape arithmetic).
    pub fn const_ints(&self, i: usize, what: &str) -> Result<Vec<i64>> {
        let f = self.input(i)?;
        f.value
            .as_ref()
            .and_then(|v| v.to_i64())
            .map(|a| a.iter().copied().collect())
            .ok_or_else(|| {
                Error::node(
                    self.node,
                    format!("{what} (input {i}) must be a constant integer tensor"),
                )
            })
    }

    pub fn err(&self, reason: impl Into<String>) -> Error {
        Error::node(self.node, reason)
    }
}

pub trait OpRule: Sync {
    /// Output facts (shapes, and values where they are cheap and needed for
    /// shape arithmetic) from input facts.
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>>;

    /// Multiply-accumulates of one run, the convention of the published
    /// ResNet figures (convolutions and fully connected layers).
    fn macs(&self, _cx: &Ctx, _outputs: &[Fact]) -> u64 {
        0
    }

    /// Inputs whose initializers count as learned parameters; `None` = every
    /// float initializer input.
    fn param_inputs(&self) -> Option<&'static [usize]> {
        None
    }
}

/// The rule for an op of the default domain, `None` for ops the tool keeps
/// as opaque nodes.
pub fn lookup(node: &Node) -> Option<&'static dyn OpRule> {
    if !node.is_onnx() {
        return None;
    }
    Some(match node.op_type.as_str() {
        "Conv" => &conv::Conv,
        "BatchNormalization" => &norm::BatchNorm,
        "Relu" | "Clip" | "Sigmoid" | "LeakyRelu" | "Softmax" | "Neg" | "Sqrt" | "Exp"
        | "Dropout" | "Tanh" | "HardSigmoid" | "HardSwish" | "Erf" | "Abs" => &elementwise::Unary,
        "Identity" => &elementwise::Identity,
        "Add" | "Sub" | "Mul" | "Div" | "Sum" | "Pow" | "Max" | "Min" | "Equal" | "Where" => {
            &elementwise::Broadcast
        }
        "MaxPool" | "AveragePool" => &pool::Pool,
        "GlobalAveragePool" | "GlobalMaxPool" => &pool::GlobalPool,
        "ReduceMean" | "ReduceSum" | "ReduceMax" => &reduce::Reduce,
        "Gemm" => &linear::Gemm,
        "MatMul" => &linear::MatMul,
        "Flatten" => &shape_ops::Flatten,
        "Reshape" => &shape_ops::Reshape,
        "Squeeze" => &shape_ops::Squeeze,
        "Unsqueeze" => &shape_ops::Unsqueeze,
        "Transpose" => &shape_ops::Transpose,
        "Concat" => &shape_ops::Concat,
        "Slice" => &shape_ops::Slice,
        "Pad" => &shape_ops::Pad,
        "Gather" => &shape_ops::Gather,
        "Shape" => &shape_ops::Shape,
        "Cast" => &shape_ops::Cast,
        "CastLike" => &shape_ops::CastLike,
        "Expand" => &shape_ops::Expand,
        "Range" => &shape_ops::Range,
        "ConstantOfShape" => &shape_ops::ConstantOfShape,
        "Constant" => &constant::Constant,
        _ => return None,
    })
}
