//! One op, one place: every ONNX op the tool knows has one entry in `OPS`:
//! its rule (shape and constant inference, MAC count, which inputs are
//! parameters), its role on a residual branch's path (structure analysis),
//! and whether pruning can carry a per-channel constant through it
//! (collapsing a deleted branch). How training computes an op is its
//! lowering, in `train::lower` (an op without one is inference-only).
//! `tests/op_coverage.rs` checks each claim against the stage that acts on
//! it.

pub mod constant;
pub mod conv;
mod elementwise;
mod linear;
pub mod norm;
mod pool;
pub mod reduce;
mod resample;
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

/// How an op sits on a residual branch's path, for the structure analysis
/// walking back from an Add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRole {
    /// Not a path op: the walk stops here.
    Stop,
    /// Input 0 carries the data (activations, BN, LayerNorm, Slice, Pad,
    /// AveragePool, Transpose of a channels-last block).
    First,
    /// Conv, and MatMul as a linear layer: input 0 carries the data when
    /// the weight (input 1) is a constant.
    ConvInput,
    /// A binary op with one constant operand; the other carries the data
    /// (either side when `commutes`, else only input 0).
    ConstOperand { commutes: bool },
}

/// Everything the tool knows about one op.
pub struct OpInfo {
    pub op: &'static str,
    pub rule: &'static dyn OpRule,
    pub path: PathRole,
    /// Pruning can push a per-channel constant through it
    /// (`prune::collapse::step`).
    pub collapses: bool,
    /// Shape arithmetic (Shape, Gather, Cast, ...): evaluated at import or
    /// by shape inference when its inputs are constant, never trained.
    pub shape_arithmetic: bool,
}

macro_rules! op {
    ($op:literal, $rule:expr, $path:expr, $collapses:expr) => {
        OpInfo {
            op: $op,
            rule: &$rule,
            path: $path,
            collapses: $collapses,
            shape_arithmetic: false,
        }
    };
    ($op:literal, $rule:expr, $path:expr, $collapses:expr, SHAPE) => {
        OpInfo {
            op: $op,
            rule: &$rule,
            path: $path,
            collapses: $collapses,
            shape_arithmetic: true,
        }
    };
}

use PathRole::{ConstOperand, ConvInput, First, Stop};

/// The registry: one line per op.
pub static OPS: &[OpInfo] = &[
    op!("Conv", conv::Conv, ConvInput, true),
    op!("BatchNormalization", norm::BatchNorm, First, true),
    op!("LayerNormalization", norm::LayerNorm, First, false),
    op!("Relu", elementwise::Unary, First, true),
    op!("Clip", elementwise::Unary, First, true),
    op!("LeakyRelu", elementwise::Unary, First, true),
    op!("Identity", elementwise::Identity, First, true),
    op!("Dropout", elementwise::Unary, Stop, false),
    op!("Sigmoid", elementwise::Unary, First, false),
    op!("Softmax", elementwise::Unary, Stop, false),
    op!("Neg", elementwise::Unary, Stop, false),
    op!("Sqrt", elementwise::Unary, Stop, false),
    op!("Exp", elementwise::Unary, Stop, false),
    op!("Tanh", elementwise::Unary, Stop, false),
    op!("HardSigmoid", elementwise::Unary, First, false),
    op!("HardSwish", elementwise::Unary, First, false),
    op!("Gelu", elementwise::Unary, First, false),
    op!("Erf", elementwise::Unary, Stop, false),
    op!("Abs", elementwise::Unary, Stop, false),
    op!(
        "Add",
        elementwise::Broadcast,
        ConstOperand { commutes: true },
        false
    ),
    op!("Sum", elementwise::Broadcast, Stop, false),
    op!(
        "Sub",
        elementwise::Broadcast,
        ConstOperand { commutes: false },
        false
    ),
    op!(
        "Mul",
        elementwise::Broadcast,
        ConstOperand { commutes: true },
        true
    ),
    op!(
        "Div",
        elementwise::Broadcast,
        ConstOperand { commutes: false },
        false
    ),
    op!("Pow", elementwise::Broadcast, Stop, false),
    op!("Max", elementwise::Broadcast, Stop, false),
    op!("Min", elementwise::Broadcast, Stop, false),
    op!("Equal", elementwise::Broadcast, Stop, false, SHAPE),
    op!("Where", elementwise::Broadcast, Stop, false, SHAPE),
    op!("Mod", elementwise::Broadcast, Stop, false, SHAPE),
    op!("MaxPool", pool::Pool, Stop, false),
    op!("AveragePool", pool::Pool, First, false),
    op!("GlobalAveragePool", pool::GlobalPool, Stop, false),
    op!("GlobalMaxPool", pool::GlobalPool, Stop, false),
    op!("ReduceMean", reduce::Reduce, Stop, false),
    op!("ReduceSum", reduce::Reduce, Stop, false),
    op!("ReduceMax", reduce::Reduce, Stop, false),
    op!("Gemm", linear::Gemm, Stop, false),
    op!("MatMul", linear::MatMul, ConvInput, false),
    op!("Flatten", shape_ops::Flatten, Stop, false),
    op!("Reshape", shape_ops::Reshape, Stop, false),
    op!("Squeeze", shape_ops::Squeeze, Stop, false),
    op!("Unsqueeze", shape_ops::Unsqueeze, Stop, false),
    op!("Transpose", shape_ops::Transpose, First, false),
    op!("Concat", shape_ops::Concat, Stop, false),
    op!("Split", resample::Split, Stop, false),
    op!("Resize", resample::Resize, Stop, false),
    op!("Upsample", resample::Resize, Stop, false),
    op!("Slice", shape_ops::Slice, First, false),
    op!("Pad", shape_ops::Pad, First, false),
    op!("Gather", shape_ops::Gather, Stop, false, SHAPE),
    op!("Shape", shape_ops::Shape, Stop, false, SHAPE),
    op!("Cast", shape_ops::Cast, Stop, false, SHAPE),
    op!("CastLike", shape_ops::CastLike, Stop, false, SHAPE),
    op!("Expand", shape_ops::Expand, Stop, false, SHAPE),
    op!("Range", shape_ops::Range, Stop, false, SHAPE),
    op!(
        "ConstantOfShape",
        shape_ops::ConstantOfShape,
        Stop,
        false,
        SHAPE
    ),
    op!("Constant", constant::Constant, Stop, false, SHAPE),
];

/// What the tool knows about a node's op; `None` for ops of other domains
/// and ops it does not know (kept as opaque nodes; stages that need them
/// say so).
pub fn info(node: &Node) -> Option<&'static OpInfo> {
    if !node.is_onnx() {
        return None;
    }
    OPS.iter().find(|i| i.op == node.op_type)
}

/// The rule for an op of the default domain, `None` for ops the tool keeps
/// as opaque nodes.
pub fn lookup(node: &Node) -> Option<&'static dyn OpRule> {
    info(node).map(|i| i.rule)
}
