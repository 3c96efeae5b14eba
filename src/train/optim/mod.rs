//! Optimizers. Weights: Nesterov SGD with weight decay (`nag`). SSS gates:
//! the modified stochastic APG of the paper (`apg`), and the baselines it is
//! compared with, ISTA (`ista`) and SGD on the L1-penalised loss (`l1sgd`).
//! Each keeps its momentum per tensor name, so state can be checkpointed.

pub mod apg;
pub mod ista;
pub mod l1sgd;
pub mod nag;

pub use nag::Nag;

use candle_core::{Result, Tensor};
use std::collections::HashMap;

/// One gate-optimizer step on one tensor with penalty `gamma` (which the
/// trainer may scale per structure or adapt over time): the new value.
pub trait Rule {
    fn update(
        &mut self,
        name: &str,
        value: &Tensor,
        grad: &Tensor,
        lr: f64,
        gamma: f64,
    ) -> Result<Tensor>;
    /// Momentum buffers by tensor name (for checkpoints).
    fn state(&self) -> &HashMap<String, Tensor>;
    fn load_state(&mut self, state: HashMap<String, Tensor>);
}

/// Soft threshold S_a(z) = sign(z) · max(|z| − a, 0).
pub fn soft_threshold(z: &Tensor, a: f64) -> Result<Tensor> {
    let pos = (z - a)?.relu()?;
    let neg = (z.neg()? - a)?.relu()?;
    pos - neg
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum GateOptimizer {
    /// The paper's modified stochastic APG (exact zeros).
    Apg,
    /// Proximal gradient without momentum (exact zeros).
    Ista,
    /// Momentum SGD on g + γ·sign(λ) (no exact zeros: needs a threshold).
    L1sgd,
}

/// A gate optimizer rule with momentum μ.
pub fn gate_rule(kind: GateOptimizer, momentum: f64) -> Box<dyn Rule> {
    match kind {
        GateOptimizer::Apg => Box::new(apg::Apg::new(momentum)),
        GateOptimizer::Ista => Box::new(ista::Ista::new()),
        GateOptimizer::L1sgd => Box::new(l1sgd::L1Sgd::new(momentum)),
    }
}
