//! The residual stream: every Add of a stage ties the channels of its
//! inputs together. SSS (the paper) does not gate them; said here so that
//! `inspect` lists them with the reason.

use super::{Found, Pattern};
use crate::graph::Graph;
use crate::structure::{Block, Shortcut, Skipped};

pub struct ResidualStream;

impl Pattern for ResidualStream {
    fn name(&self) -> &'static str {
        "residual stream"
    }

    fn find(&self, _g: &Graph, blocks: &[Block], found: &mut Found) {
        let stages = blocks.iter().map(|b| b.stage + 1).max().unwrap_or(0);
        for stage in 0..stages {
            let n = blocks
                .iter()
                .filter(|b| b.stage == stage && b.shortcut != Shortcut::Absent)
                .count();
            if n == 0 {
                continue;
            }
            let c = blocks
                .iter()
                .find(|b| b.stage == stage)
                .map(|b| b.out_channels)
                .unwrap_or(0);
            found.skipped.push(Skipped {
                what: format!("stage {stage} residual-stream channels ({c})"),
                reason: format!(
                    "coupled across the {n} Adds of the stage; not gated by SSS (deleting one would need all of them at once)"
                ),
            });
        }
    }
}
