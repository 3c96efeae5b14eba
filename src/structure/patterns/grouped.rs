//! Groups of a grouped conv inside a residual branch (ResNeXt): one gate
//! per group, deleting the group's output channels and, with them, the
//! input channels it reads, which must come from a plain conv of the same
//! branch that nothing else reads.

use super::{Found, Pattern};
use crate::graph::Graph;
use crate::structure::path::between;
use crate::structure::{Block, GateKind, Gateable, Skipped};

pub struct Grouped;

impl Pattern for Grouped {
    fn name(&self) -> &'static str {
        "groups"
    }

    fn find(&self, g: &Graph, blocks: &[Block], found: &mut Found) {
        for b in blocks.iter().filter(|b| !found.claimed.contains(&b.id)) {
            for (i, pair) in b.convs.windows(2).enumerate() {
                let (c, next) = (&pair[0], &pair[1]);
                // depthwise convs are the inverted residual pattern's
                if c.groups <= 1 || c.depthwise {
                    continue;
                }
                let what = format!("block {} conv `{}` output", b.id, c.conv_name);
                if let Err(reason) = between(g, &c.gate_at, &next.conv) {
                    found.skipped.push(Skipped { what, reason });
                    continue;
                }
                let fed = i
                    .checked_sub(1)
                    .map(|p| &b.convs[p])
                    .filter(|p| p.groups == 1 && between(g, &p.gate_at, &c.conv).is_ok());
                let reason = if fed.is_none() {
                    Some("grouped conv not fed by a plain conv of the same branch")
                } else if next.groups > 1 {
                    Some("grouped conv feeding another grouped conv")
                } else {
                    None
                };
                match reason {
                    Some(r) => found.skipped.push(Skipped {
                        what,
                        reason: r.into(),
                    }),
                    None => found.gateable.push(Gateable {
                        kind: GateKind::Group,
                        block: b.id,
                        conv: Some(c.conv.clone()),
                        at: c.gate_at.clone(),
                        count: c.groups,
                        channels: c.out_channels,
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::build::torchvision_resnext;
    use crate::structure::find_blocks;

    #[test]
    fn one_gate_per_group_of_each_bottleneck() {
        let g = torchvision_resnext([2, 1, 1, 1], 4, 4, 10, 0);
        let (blocks, _) = find_blocks(&g);
        let mut f = Found::default();
        Grouped.find(&g, &blocks, &mut f);
        assert_eq!(f.gateable.len(), 5);
        assert!(f
            .gateable
            .iter()
            .all(|gt| gt.kind == GateKind::Group && gt.count == 4));
        assert!(f.skipped.is_empty(), "{:?}", f.skipped);
    }
}
