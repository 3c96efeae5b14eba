//! One op, one place: every ONNX op the tool knows has one entry in `OPS`:
//! its rule (shape and constant inference, MAC count, which inputs are
//! parameters), its role on a residual branch's path (structure analysis),
//! whether pruning can carry a per-channel constant through it (collapsing
//! a deleted branch), and whether training lowers it. The stages look ops
//! up here; `tests/op_coverage.rs` checks each claim against the stage that
//! acts on it.

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

/// How an op sits on a residual branch's path, for the structure analysis
/// walking back from an Add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRole {
    /// Not a path op: the walk stops here.
    Stop,
    /// Input 0 carries the data, per channel (activations, BN, Slice, Pad,
    /// AveragePool).
    First,
    /// Conv: input 0 carries the data when the weight is a constant.
    ConvInput,
    /// A binary op with one constant operand; the other carries the data
    /// (either side when `commutes`, else only input 0).
    ConstOperand { commutes: bool },
}

/// Whether training lowers an op to candle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Training {
    Lowered,
    /// Evaluated only by the runtimes (or folded into constants at import
    /// when its inputs are constant); the reason is said in the error.
    InferenceOnly(&'static str),
}

/// Everything the tool knows about one op.
pub struct OpInfo {
    pub op: &'static str,
    pub rule: &'static dyn OpRule,
    pub path: PathRole,
    /// Pruning can push a per-channel constant through it
    /// (`prune::collapse::step`).
    pub collapses: bool,
    pub training: Training,
}

const NO_GRAD: Training = Training::InferenceOnly("no training lowering");
const SHAPE_ONLY: Training =
    Training::InferenceOnly("shape arithmetic; training needs it folded into constants");

macro_rules! op {
    ($op:literal, $rule:expr, $path:expr, $collapses:expr, $training:expr) => {
        OpInfo {
            op: $op,
            rule: &$rule,
            path: $path,
            collapses: $collapses,
            training: $training,
        }
    };
}

use PathRole::{ConstOperand, ConvInput, First, Stop};
use Training::Lowered;

/// The registry: one line per op.
pub static OPS: &[OpInfo] = &[
    op!("Conv", conv::Conv, ConvInput, true, Lowered),
    op!("BatchNormalization", norm::BatchNorm, First, true, Lowered),
    op!("Relu", elementwise::Unary, First, true, Lowered),
    op!("Clip", elementwise::Unary, First, true, Lowered),
    op!("LeakyRelu", elementwise::Unary, First, true, Lowered),
    op!("Identity", elementwise::Identity, First, true, Lowered),
    op!("Dropout", elementwise::Unary, Stop, false, Lowered),
    op!("Sigmoid", elementwise::Unary, Stop, false, NO_GRAD),
    op!("Softmax", elementwise::Unary, Stop, false, NO_GRAD),
    op!("Neg", elementwise::Unary, Stop, false, NO_GRAD),
    op!("Sqrt", elementwise::Unary, Stop, false, NO_GRAD),
    op!("Exp", elementwise::Unary, Stop, false, NO_GRAD),
    op!("Tanh", elementwise::Unary, Stop, false, NO_GRAD),
    op!("HardSigmoid", elementwise::Unary, Stop, false, NO_GRAD),
    op!("HardSwish", elementwise::Unary, Stop, false, NO_GRAD),
    op!("Erf", elementwise::Unary, Stop, false, NO_GRAD),
    op!("Abs", elementwise::Unary, Stop, false, NO_GRAD),
    op!(
        "Add",
        elementwise::Broadcast,
        ConstOperand { commutes: true },
        false,
        Lowered
    ),
    op!("Sum", elementwise::Broadcast, Stop, false, Lowered),
    op!(
        "Sub",
        elementwise::Broadcast,
        ConstOperand { commutes: false },
        false,
        Lowered
    ),
    op!(
        "Mul",
        elementwise::Broadcast,
        ConstOperand { commutes: true },
        true,
        Lowered
    ),
    op!(
        "Div",
        elementwise::Broadcast,
        ConstOperand { commutes: false },
        false,
        Lowered
    ),
    op!("Pow", elementwise::Broadcast, Stop, false, NO_GRAD),
    op!("Max", elementwise::Broadcast, Stop, false, NO_GRAD),
    op!("Min", elementwise::Broadcast, Stop, false, NO_GRAD),
    op!("Equal", elementwise::Broadcast, Stop, false, SHAPE_ONLY),
    op!("Where", elementwise::Broadcast, Stop, false, SHAPE_ONLY),
    op!("MaxPool", pool::Pool, Stop, false, Lowered),
    op!("AveragePool", pool::Pool, First, false, Lowered),
    op!("GlobalAveragePool", pool::GlobalPool, Stop, false, Lowered),
    op!("GlobalMaxPool", pool::GlobalPool, Stop, false, NO_GRAD),
    op!("ReduceMean", reduce::Reduce, Stop, false, Lowered),
    op!("ReduceSum", reduce::Reduce, Stop, false, NO_GRAD),
    op!("ReduceMax", reduce::Reduce, Stop, false, NO_GRAD),
    op!("Gemm", linear::Gemm, Stop, false, Lowered),
    op!("MatMul", linear::MatMul, Stop, false, Lowered),
    op!("Flatten", shape_ops::Flatten, Stop, false, Lowered),
    op!("Reshape", shape_ops::Reshape, Stop, false, Lowered),
    op!("Squeeze", shape_ops::Squeeze, Stop, false, Lowered),
    op!("Unsqueeze", shape_ops::Unsqueeze, Stop, false, Lowered),
    op!("Transpose", shape_ops::Transpose, Stop, false, Lowered),
    op!("Concat", shape_ops::Concat, Stop, false, Lowered),
    op!("Slice", shape_ops::Slice, First, false, Lowered),
    op!("Pad", shape_ops::Pad, First, false, Lowered),
    op!("Gather", shape_ops::Gather, Stop, false, SHAPE_ONLY),
    op!("Shape", shape_ops::Shape, Stop, false, SHAPE_ONLY),
    op!("Cast", shape_ops::Cast, Stop, false, SHAPE_ONLY),
    op!("CastLike", shape_ops::CastLike, Stop, false, SHAPE_ONLY),
    op!("Expand", shape_ops::Expand, Stop, false, SHAPE_ONLY),
    op!("Range", shape_ops::Range, Stop, false, SHAPE_ONLY),
    op!(
        "ConstantOfShape",
        shape_ops::ConstantOfShape,
        Stop,
        false,
        SHAPE_ONLY
    ),
    op!("Constant", constant::Constant, Stop, false, SHAPE_ONLY),
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
