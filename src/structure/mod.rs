//! Finds the structures SSS can delete: residual blocks (an Add whose inputs
//! meet at a block input, one side a convolutional branch, the other an
//! identity, projection or subsample-and-pad shortcut), the channels of the
//! convolutions inside each branch, and the groups of grouped convolutions.
//! Everything that looks like a candidate but cannot be proven safe is listed
//! with the reason, and left alone by the later stages. `blocks` finds the
//! residual blocks; each kind of structure inside them is a pattern of its
//! own (`patterns`).

mod blocks;
mod chains;
pub mod path;
pub mod patterns;
pub mod self_gate;
mod unit;

use crate::graph::Graph;
use serde::Serialize;

pub use blocks::{branch_path, find_blocks};

/// The name prefix of SSS gate tensors (`sss_gate/<kind>/<id>`): the
/// analysis treats them as the scale factors they are, and `gate` names
/// what it inserts with it.
pub const GATE_PREFIX: &str = "sss_gate/";

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shortcut {
    Identity,
    /// 1×1 convolution (+ BatchNorm): kept even when the branch is deleted.
    Projection,
    /// CIFAR "option A": strided Slice then zero Pad of the channels.
    SubsamplePad,
    /// None: a block that changes width or resolution without a shortcut
    /// (its channels can go, the block cannot).
    Absent,
}

/// One convolution inside a residual branch, with the nodes that follow it
/// up to the next convolution; or a linear layer (MatMul by a constant
/// `[in, out]` weight, channels on the last axis: ConvNeXt's channels-last
/// MLP), whose bias Add takes the place of the BN.
#[derive(Debug, Clone, Serialize)]
pub struct BranchConv {
    /// The conv node's first output (unique, so it names the conv).
    pub conv: String,
    pub conv_name: String,
    /// The BN after a conv, or the bias Add after a linear layer.
    pub bn: Option<String>,
    /// Where a gate on this conv's output goes: after the BN, else the conv.
    pub gate_at: String,
    /// A linear layer: channels on the last axis, weight `[in, out]`.
    #[serde(default)]
    pub linear: bool,
    /// A Gemm (its bias inside, its weight `[out, in]` when transB): a
    /// transformer's out-projection on flattened tokens. Its block gate
    /// folds into it; its channels are not gated.
    #[serde(default)]
    pub gemm: bool,
    pub out_channels: usize,
    pub groups: usize,
    pub depthwise: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Block {
    pub id: usize,
    pub stage: usize,
    /// The Add's output value and node name (the block's output; without
    /// a shortcut, its last node's).
    pub add: String,
    pub add_name: String,
    pub input: String,
    /// The Add input that carries the branch (where a block gate goes).
    pub branch_output: String,
    pub shortcut: Shortcut,
    pub convs: Vec<BranchConv>,
    pub out_channels: usize,
    /// Output of a Relu that directly follows the Add (post-activation nets).
    pub post_relu: Option<String>,
    /// The squeeze-and-excitation side computations on the branch, in
    /// branch order.
    pub squeezes: Vec<Squeeze>,
}

/// A squeeze-and-excitation's hidden layer: the reduce conv (reads the
/// pooled channels) and the excite conv (gives one factor per channel).
/// Its reduced channels are neurons of their own, deletable like any
/// conv's outputs: the reduce conv's output channel (and BN entries), the
/// excite conv's input channel.
#[derive(Debug, Clone, Serialize)]
pub struct Squeeze {
    pub reduce: BranchConv,
    /// The excite conv's output value.
    pub excite: String,
    pub excite_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    Channel,
    Group,
    Block,
}

impl GateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GateKind::Channel => "channel",
            GateKind::Group => "group",
            GateKind::Block => "block",
        }
    }
}

/// A set of gates SSS may insert: `count` factors on value `at`.
#[derive(Debug, Clone, Serialize)]
pub struct Gateable {
    pub kind: GateKind,
    pub block: usize,
    /// The conv (by output value) whose channels or groups are gated.
    pub conv: Option<String>,
    pub at: String,
    pub count: usize,
    pub channels: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub what: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Analysis {
    pub blocks: Vec<Block>,
    pub gateable: Vec<Gateable>,
    pub skipped: Vec<Skipped>,
}

impl Analysis {
    pub fn count(&self, kind: GateKind) -> usize {
        self.gateable
            .iter()
            .filter(|g| g.kind == kind)
            .map(|g| g.count)
            .sum()
    }

    pub fn stages(&self) -> usize {
        self.blocks.iter().map(|b| b.stage + 1).max().unwrap_or(0)
    }
}

/// Analyses `g`: blocks, gateable structures, and what was left out.
pub fn analyse(g: &Graph) -> Analysis {
    let (blocks, skipped) = find_blocks(g);
    let mut found = patterns::Found {
        skipped,
        ..Default::default()
    };
    for p in patterns::PATTERNS {
        p.find(g, &blocks, &mut found);
    }
    // gates in graph order: by block, its block gate first, then its convs
    let position = |s: &Gateable| -> (usize, usize) {
        let b = &blocks[s.block];
        // block gate, then the convs, then the squeezes
        let at = s.conv.as_ref().map_or(0, |c| {
            b.convs
                .iter()
                .position(|x| &x.conv == c)
                .or_else(|| {
                    b.squeezes
                        .iter()
                        .position(|q| &q.reduce.conv == c)
                        .map(|k| b.convs.len() + k)
                })
                .map_or(0, |i| i + 1)
        });
        (s.block, at)
    };
    found.gateable.sort_by_key(position);
    Analysis {
        blocks,
        gateable: found.gateable,
        skipped: found.skipped,
    }
}
