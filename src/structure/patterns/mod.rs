//! Structure patterns: each file finds one kind of deletable structure in
//! the residual blocks `blocks` found (or says why it leaves one alone),
//! and `PATTERNS` lists them in the order they run. A family whose blocks
//! hold a new kind of structure adds a file here and a line to the list.

mod grouped;
mod inverted_residual;
mod plain_channels;
mod residual_block;
mod residual_stream;
mod squeeze_excitation;

use super::{Block, Gateable, Skipped};
use crate::graph::Graph;
use std::collections::HashSet;

/// What the patterns have found so far.
#[derive(Debug, Default)]
pub struct Found {
    pub gateable: Vec<Gateable>,
    pub skipped: Vec<Skipped>,
    /// Blocks whose inner channels a pattern has taken charge of (gated or
    /// left out with its reason): later channel patterns pass them by.
    pub claimed: HashSet<usize>,
}

/// One kind of structure.
pub trait Pattern: Sync {
    /// What it finds, for listings and tests.
    fn name(&self) -> &'static str;
    /// Adds the gateable structures of `blocks` it recognises to `found`,
    /// and what it recognises but cannot gate, with the reason.
    fn find(&self, g: &Graph, blocks: &[Block], found: &mut Found);
}

/// Every pattern, in the order they run: a pattern that claims a block's
/// channels comes before those that would otherwise gate them.
pub static PATTERNS: &[&dyn Pattern] = &[
    &residual_block::ResidualBlock,
    &inverted_residual::InvertedResidual,
    &plain_channels::PlainChannels,
    &grouped::Grouped,
    &residual_stream::ResidualStream,
    &squeeze_excitation::SqueezeExcitation,
];
