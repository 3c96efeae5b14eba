//! What a zero pattern costs: the MACs or the predicted runtime latency of
//! the network pruning would leave, behind one trait. The training budget
//! and the γ controller steer by a `Cost`; how it is computed (pruning's
//! plan of the gated graph, a latency table) stays here.

pub mod latency;
pub mod probe;

use crate::error::Result;
use crate::graph::{shape, Graph};
use crate::prune::{plan, predict};
use latency::LatencyTable;
use std::collections::HashMap;
use std::sync::Arc;

/// The cost of a gated graph once pruned.
pub trait Cost: Send + Sync {
    /// What the graph with its current gate values costs once pruned, in
    /// the cost's own unit (MACs, predicted nanoseconds).
    fn of(&self, g: &Graph) -> Result<f64>;

    /// `of(g)` over the original network's cost.
    fn ratio(&self, g: &Graph) -> Result<f64>;

    /// The widths (factor counts) each channel or group gate may be left
    /// at, by gate name; gates not named may take any width.
    fn gate_widths(&self, _g: &Graph) -> Result<HashMap<String, Vec<usize>>> {
        Ok(HashMap::new())
    }

    /// Whether the cost is a timing model (a deletion that does not lower it
    /// is refused rather than taken for free).
    fn timed(&self) -> bool {
        false
    }
}

/// Multiply-accumulates of convolutions and fully connected layers.
#[derive(Debug, Clone)]
pub struct Macs {
    base: u64,
}

impl Macs {
    /// The MACs of `original` (batch 1) are the ratio's denominator.
    pub fn of_original(original: &Graph) -> Result<Self> {
        let facts = shape::infer_strict(original, 1)?;
        Ok(Macs {
            base: crate::graph::counts::count(original, &facts).macs,
        })
    }

    pub fn base(&self) -> u64 {
        self.base
    }
}

impl Cost for Macs {
    fn of(&self, g: &Graph) -> Result<f64> {
        let facts = shape::infer_strict(g, 1)?;
        Ok(predict::predict(g, &facts, &plan::plan(g)?).macs as f64)
    }

    fn ratio(&self, g: &Graph) -> Result<f64> {
        Ok(self.of(g)? / self.base.max(1) as f64)
    }
}

/// A latency table's prediction for the runtime, batch and threads it was
/// measured at.
#[derive(Debug, Clone)]
pub struct Latency {
    pub table: Arc<LatencyTable>,
}

impl Cost for Latency {
    fn of(&self, g: &Graph) -> Result<f64> {
        let p = plan::plan(g)?;
        Ok(self.table.predict_ms(&predict::conv_shapes(g, &p)) * 1e6)
    }

    fn ratio(&self, g: &Graph) -> Result<f64> {
        let p = plan::plan(g)?;
        Ok(self.table.ratio(&predict::conv_shapes(g, &p)))
    }

    fn gate_widths(&self, g: &Graph) -> Result<HashMap<String, Vec<usize>>> {
        let mut out = HashMap::new();
        let p = plan::plan(g)?;
        for bp in &p.blocks {
            for (i, cg) in bp.convs.iter().enumerate() {
                let Some(cg) = cg else { continue };
                if let Some(w) = self.table.gate_widths(&bp.block.convs[i].conv) {
                    out.insert(cg.gate.name.clone(), w.to_vec());
                }
            }
        }
        Ok(out)
    }

    fn timed(&self) -> bool {
        true
    }
}
