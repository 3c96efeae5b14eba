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
            // a depthwise conv that reads the block input (ConvNeXt, an
            // MBConv without expansion) leaves the convs after it to the
            // other patterns
            if !b.convs.first().is_some_and(|c| c.depthwise) {
                found.claimed.insert(b.id);
            }
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
        // MobileNetV2: 17 inverted residuals, 10 with a shortcut; those
        // with an expansion (t = 6) gate its hidden channels, 6 × the
        // block's input width of the paper's table; the first (t = 1, no
        // shortcut) gates its depthwise conv's 32 channels with the stem
        // conv that alone feeds them
        let g = mobilenet_v2(32, 6, 64, 10, 0);
        let (blocks, _) = find_blocks(&g);
        assert_eq!(blocks.len(), 17);
        let with_shortcut = blocks
            .iter()
            .filter(|b| b.shortcut != crate::structure::Shortcut::Absent)
            .count();
        assert_eq!(with_shortcut, 10);
        // stages: the paper's seven rows (16, 24, 32, 64, 96, 160, 320)
        let stages: Vec<usize> = blocks.iter().map(|b| b.stage).collect();
        assert_eq!(stages, [0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6]);
        let mut f = Found::default();
        InvertedResidual.find(&g, &blocks, &mut f);
        let counts: Vec<usize> = f.gateable.iter().map(|gt| gt.count).collect();
        let inputs = [
            16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160,
        ];
        let mut expected = vec![32];
        expected.extend(inputs.map(|c| 6 * c));
        assert_eq!(counts, expected);
        assert!(f.gateable.iter().all(|gt| gt.kind == GateKind::Group));
        assert_eq!(f.claimed.len(), 17);
        assert!(f.skipped.is_empty(), "{:?}", f.skipped);
    }
}
