//! Inverted residuals (MobileNetV2-style: expand 1×1 → depthwise k×k →
//! project 1×1): one gate per expansion channel, on the depthwise conv's
//! output. A depthwise conv's groups are its channels, so deleting one is
//! deleting a group: its filter, the expand conv's output channel it reads
//! (with its BN entries), and the project conv's input channel. The block
//! is claimed, so no other channel pattern gates its convs.

use super::{Found, Pattern};
use crate::graph::Graph;
use crate::structure::path::between;
use crate::structure::{Block, GateKind, Gateable, Skipped};

pub struct InvertedResidual;

impl Pattern for InvertedResidual {
    fn name(&self) -> &'static str {
        "inverted residual"
    }

    fn find(&self, g: &Graph, blocks: &[Block], found: &mut Found) {
        for b in blocks
            .iter()
            .filter(|b| b.convs.iter().any(|c| c.depthwise))
        {
            found.claimed.insert(b.id);
            for (i, dw) in b.convs.iter().enumerate().filter(|(_, c)| c.depthwise) {
                let what = format!("block {} depthwise conv `{}` channels", b.id, dw.conv_name);
                let expand = i.checked_sub(1).map(|p| &b.convs[p]);
                let project = b.convs.get(i + 1);
                let reason = match (expand, project) {
                    (None, _) => Some(
                        "the depthwise conv reads the block input (no expansion): its channels are the residual stream's".to_string(),
                    ),
                    (_, None) => Some("no conv follows the depthwise conv in the branch".into()),
                    (Some(e), _) if e.groups != 1 => {
                        Some("the depthwise conv is fed by a grouped conv".into())
                    }
                    (_, Some(p)) if p.groups != 1 => {
                        Some("the depthwise conv feeds a grouped conv".into())
                    }
                    (Some(e), Some(p)) => between(g, &e.gate_at, &dw.conv)
                        .and_then(|_| between(g, &dw.gate_at, &p.conv))
                        .err(),
                };
                match reason {
                    Some(reason) => found.skipped.push(Skipped { what, reason }),
                    None => found.gateable.push(Gateable {
                        kind: GateKind::Group,
                        block: b.id,
                        conv: Some(dw.conv.clone()),
                        at: dw.gate_at.clone(),
                        count: dw.groups,
                        channels: dw.out_channels,
                    }),
                }
            }
            // the expand conv's own channels are the depthwise gate's
            if let Some(e) = b.convs.first().filter(|e| !e.depthwise) {
                found.skipped.push(Skipped {
                    what: format!("block {} conv `{}` output", b.id, e.conv_name),
                    reason: "expansion channels: gated with the depthwise conv they feed".into(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::build::mobilenet_v2;
    use crate::structure::find_blocks;

    #[test]
    fn one_gate_per_expansion_channel_of_each_residual_inverted_block() {
        // MobileNetV2: 17 inverted residuals, 10 with a shortcut; at width
        // 32 their expansions are 144, 192 ×2, 384 ×3, 576 ×2, 960 ×2
        let g = mobilenet_v2(32, 6, 64, 10, 0);
        let (blocks, _) = find_blocks(&g);
        assert_eq!(blocks.len(), 10);
        // stages by resolution and width: 24, 32, 64, 96, 160 channels
        let stages: Vec<usize> = blocks.iter().map(|b| b.stage).collect();
        assert_eq!(stages, [0, 1, 1, 2, 2, 2, 3, 3, 4, 4]);
        let mut f = Found::default();
        InvertedResidual.find(&g, &blocks, &mut f);
        let counts: Vec<usize> = f.gateable.iter().map(|gt| gt.count).collect();
        assert_eq!(counts, [144, 192, 192, 384, 384, 384, 576, 576, 960, 960]);
        assert!(f.gateable.iter().all(|gt| gt.kind == GateKind::Group));
        assert_eq!(f.claimed.len(), 10);
    }
}
