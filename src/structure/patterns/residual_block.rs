//! Whole residual blocks: one gate on the branch of every block with a
//! convolutional branch and a shortcut (the shortcut stays, so a deleted
//! branch leaves the identity, the projection or the subsample-and-pad).

use super::{Found, Pattern};
use crate::graph::Graph;
use crate::structure::{Block, GateKind, Gateable, Shortcut};

pub struct ResidualBlock;

impl Pattern for ResidualBlock {
    fn name(&self) -> &'static str {
        "residual block"
    }

    fn find(&self, _g: &Graph, blocks: &[Block], found: &mut Found) {
        let deletable = |b: &&Block| !b.convs.is_empty() && b.shortcut != Shortcut::Absent;
        for b in blocks.iter().filter(deletable) {
            found.gateable.push(Gateable {
                kind: GateKind::Block,
                block: b.id,
                conv: None,
                at: b.branch_output.clone(),
                count: 1,
                channels: b.out_channels,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::build::cifar_resnet;
    use crate::structure::find_blocks;

    #[test]
    fn one_gate_per_block_on_its_branch() {
        let g = cifar_resnet(3, 0);
        let (blocks, _) = find_blocks(&g);
        let mut f = Found::default();
        ResidualBlock.find(&g, &blocks, &mut f);
        assert_eq!(f.gateable.len(), 9);
        for (b, gt) in blocks.iter().zip(&f.gateable) {
            assert_eq!((gt.kind, gt.block, gt.count), (GateKind::Block, b.id, 1));
            assert_eq!(gt.at, b.branch_output);
        }
    }
}
