//! Channels of an ungrouped conv inside a residual branch that the next
//! conv of the branch reads as ordinary inputs: one gate per channel.

use super::{Found, Pattern};
use crate::graph::Graph;
use crate::structure::path::between;
use crate::structure::{Block, GateKind, Gateable, Skipped};

pub struct PlainChannels;

impl Pattern for PlainChannels {
    fn name(&self) -> &'static str {
        "channels"
    }

    fn find(&self, g: &Graph, blocks: &[Block], found: &mut Found) {
        for b in blocks.iter().filter(|b| !found.claimed.contains(&b.id)) {
            for pair in b.convs.windows(2).filter(|p| p[0].groups == 1) {
                let (c, next) = (&pair[0], &pair[1]);
                let what = format!("block {} conv `{}` output", b.id, c.conv_name);
                if c.gemm || next.gemm {
                    found.skipped.push(Skipped {
                        what,
                        reason: "a Gemm's channels are not gated (its block gate is)".into(),
                    });
                } else if let Err(reason) = between(g, &c.gate_at, &next.conv) {
                    found.skipped.push(Skipped { what, reason });
                } else if next.groups > 1 {
                    found.skipped.push(Skipped {
                        what,
                        reason: format!(
                            "feeds grouped conv `{}` (group={}); deleting single channels would unbalance its groups (its group gates cover them)",
                            next.conv_name, next.groups
                        ),
                    });
                } else {
                    found.gateable.push(Gateable {
                        kind: GateKind::Channel,
                        block: b.id,
                        conv: Some(c.conv.clone()),
                        at: c.gate_at.clone(),
                        count: c.out_channels,
                        channels: c.out_channels,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::build::{cifar_resnet, torchvision_resnext};
    use crate::structure::find_blocks;

    #[test]
    fn every_inner_conv_of_a_basic_block_is_gated() {
        let g = cifar_resnet(3, 0);
        let (blocks, _) = find_blocks(&g);
        let mut f = Found::default();
        PlainChannels.find(&g, &blocks, &mut f);
        // one inner conv per basic block, its width the stage's
        let counts: Vec<usize> = f.gateable.iter().map(|gt| gt.count).collect();
        assert_eq!(counts, vec![16, 16, 16, 32, 32, 32, 64, 64, 64]);
        assert!(f.gateable.iter().all(|gt| gt.kind == GateKind::Channel));
    }

    #[test]
    fn channels_that_feed_a_grouped_conv_are_left_to_its_groups() {
        let g = torchvision_resnext([1, 1, 1, 1], 4, 4, 10, 0);
        let (blocks, _) = find_blocks(&g);
        let mut f = Found::default();
        PlainChannels.find(&g, &blocks, &mut f);
        // a bottleneck's first conv feeds the grouped 3×3: skipped with the
        // reason; the grouped conv's own output is the grouped pattern's
        assert!(f.gateable.is_empty(), "{:?}", f.gateable);
        assert_eq!(f.skipped.len(), 4);
        assert!(f.skipped.iter().all(|s| s.reason.contains("grouped conv")));
        // a claimed block is passed by
        let mut f = Found::default();
        f.claimed.extend(blocks.iter().map(|b| b.id));
        PlainChannels.find(&g, &blocks, &mut f);
        assert!(f.skipped.is_empty());
    }
}
