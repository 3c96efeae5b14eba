//! The reduced channels of a squeeze-and-excitation (pool → reduce 1×1 →
//! activation → excite 1×1 → σ → ·x): one gate per reduced channel, on the
//! reduce conv's output. They are neurons of the side computation, free of
//! the branch's own channels, so every block's SE is gated whatever pattern
//! claimed the block's convs.

use super::{Found, Pattern};
use crate::graph::Graph;
use crate::structure::path::between;
use crate::structure::{Block, GateKind, Gateable, Skipped};

pub struct SqueezeExcitation;

impl Pattern for SqueezeExcitation {
    fn name(&self) -> &'static str {
        "squeeze-and-excitation"
    }

    fn find(&self, g: &Graph, blocks: &[Block], found: &mut Found) {
        for b in blocks {
            for s in &b.squeezes {
                let r = &s.reduce;
                let what = format!("block {} squeeze-and-excitation `{}`", b.id, r.conv_name);
                let reason = if r.groups != 1 {
                    Some(format!("the reduce conv is grouped (group={})", r.groups))
                } else if r.out_channels < 2 {
                    Some("a single reduced channel".to_string())
                } else {
                    between(g, &r.gate_at, &s.excite).err()
                };
                match reason {
                    Some(reason) => found.skipped.push(Skipped { what, reason }),
                    None => found.gateable.push(Gateable {
                        kind: GateKind::Channel,
                        block: b.id,
                        conv: Some(r.conv.clone()),
                        at: r.gate_at.clone(),
                        count: r.out_channels,
                        channels: r.out_channels,
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::build::Builder;
    use crate::structure::find_blocks;

    #[test]
    fn one_gate_per_reduced_channel_of_each_squeeze() {
        // a residual block: conv → relu → SE(8 → 3 → 8) → conv, + x
        let mut b = Builder::new("x", &[-1, 8, 4, 4], 0);
        let c = b.conv("x", 8, 8, 3, 1);
        let c = b.relu(&c);
        let p = b.node("GlobalAveragePool", &[&c], vec![]);
        let r = b.conv(&p, 8, 3, 1, 1);
        let r = b.relu(&r);
        let e = b.conv(&r, 3, 8, 1, 1);
        let e = b.node("Sigmoid", &[&e], vec![]);
        let y = b.node("Mul", &[&c, &e], vec![]);
        let y = b.conv(&y, 8, 8, 3, 1);
        let out = b.node("Add", &[&y, "x"], vec![]);
        let g = b.finish(&out);
        let (blocks, _) = find_blocks(&g);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].squeezes.len(), 1);
        let mut f = Found::default();
        SqueezeExcitation.find(&g, &blocks, &mut f);
        assert_eq!(f.gateable.len(), 1, "{:?}", f.skipped);
        let gt = &f.gateable[0];
        assert_eq!((gt.kind, gt.count), (GateKind::Channel, 3));
        assert_eq!(gt.at, blocks[0].squeezes[0].reduce.conv);
    }
}
