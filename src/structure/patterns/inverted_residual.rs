//! Inverted residuals (MobileNetV2-style: expand 1×1 → depthwise k×k →
//! project 1×1): the block's channels are coupled through the depthwise
//! conv, which deletes a channel only together with its input channel.
//! Until their expansion channels are gated as one group, such blocks are
//! claimed here and reported, so no other channel pattern mis-gates them.

use super::{Found, Pattern};
use crate::graph::Graph;
use crate::structure::{Block, Skipped};

pub struct InvertedResidual;

impl Pattern for InvertedResidual {
    fn name(&self) -> &'static str {
        "inverted residual"
    }

    fn find(&self, _g: &Graph, blocks: &[Block], found: &mut Found) {
        for b in blocks
            .iter()
            .filter(|b| b.convs.iter().any(|c| c.depthwise))
        {
            found.claimed.insert(b.id);
            found.skipped.push(Skipped {
                what: format!("block {} channels", b.id),
                reason: "the branch has a depthwise conv (inverted residual); its channels are coupled through it".into(),
            });
        }
    }
}
