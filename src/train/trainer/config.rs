//! What a training run is told (`Config`), and what it reports: the
//! curve's records and the outcome.

use super::super::feed::Augment;
use super::super::optim::GateOptimizer;
#[cfg(test)]
use super::super::schedule::Kind;
use super::super::schedule::Schedule;
use crate::cost::latency::LatencyTable;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::progress::Record;

#[derive(Debug, Clone)]
pub struct Config {
    pub steps: usize,
    pub batch: usize,
    pub schedule: Schedule,
    pub momentum: f64,
    pub weight_decay: f64,
    /// The L1 penalty γ on the gates.
    pub gamma: f64,
    /// Peak learning rate of the gates (same schedule shape as the weights);
    /// `None`: the weights' rate, as in the paper.
    pub gate_lr: Option<f64>,
    pub gate_optimizer: GateOptimizer,
    pub seed: u64,
    pub augment: Augment,
    pub log_every: usize,
    pub checkpoint_dir: Option<PathBuf>,
    pub checkpoint_every: usize,
    /// Steer γ so the implied MACs reach this fraction of the original.
    pub target_macs: Option<f64>,
    /// Fraction of the run after which the zero pattern is locked and the
    /// rest is fine-tuning (γ = 0, zero gates stay 0). In target mode the
    /// lock also happens as soon as the target is reached. `None`: never
    /// (the paper's single run).
    pub lock_at: Option<f64>,
    /// How the MAC budget picks the factors it zeroes.
    pub rank: Rank,
    /// Budget steps spread over the first phase (the last one at the lock);
    /// 1: everything at the lock.
    pub budget_steps: usize,
    /// Whether the budget deletes whole blocks before channels and groups.
    pub blocks_first: bool,
    /// Weight of distillation from the model as it was at the start (its
    /// softened logits as targets): 0 = labels only, 1 = no labels.
    pub distill: f64,
    /// Softening temperature of the distillation targets.
    pub distill_temperature: f64,
    /// No labels: the loss is distillation alone and the running
    /// accuracy is top-1 agreement with the teacher.
    pub label_free: bool,
    /// When set, `target_macs` is a fraction of this table's predicted
    /// runtime latency instead of the MACs.
    pub latency: Option<Arc<LatencyTable>>,
    /// How a target is reached.
    pub selection: Selection,
}

/// How a run reaches its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    /// Budget steps zero the least important factors in steps up to the
    /// lock, APG's zeros counted.
    Budget,
    /// γ steered along a glide path so APG's exact zeros alone reach the
    /// target (the paper's mechanism); the pattern locks when they do.
    /// At the lock the budget steps in only if they have not (counted in
    /// `budget_zeroed`).
    Gamma,
}

impl Default for Config {
    /// `TrainOptions::default()` for one epoch of 4000 samples, no MAC
    /// target, no lock: tests and library users change what they need.
    fn default() -> Self {
        crate::train::options::TrainOptions::default().config(
            crate::batching::TRAIN_BATCH,
            4000,
            crate::train::options::Unset::OneEpoch,
            None,
        )
    }
}

/// Ordering of the factors the MAC budget zeroes (least important first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Rank {
    /// The gate value |λ| (what APG has learned).
    Value,
    /// First-order loss change of removing the factor, (λ·∂L/∂λ)² summed
    /// over the steps so far, per MAC the factor costs.
    Taylor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    Finished,
    Interrupted,
}

pub struct Outcome {
    pub records: Vec<Record>,
    pub stopped: Stop,
    pub gamma: f64,
    pub steps_done: usize,
}

/// A small two-phase configuration for unit tests.
#[cfg(test)]
pub(crate) fn test_config(lock_at: Option<f64>) -> Config {
    Config {
        steps: 100,
        batch: 8,
        schedule: Schedule {
            kind: Kind::Cosine,
            base: 0.1,
            total: 100,
            warmup: 0,
            factor: 0.1,
            step_every: 1,
            milestones: vec![],
        },
        momentum: 0.9,
        weight_decay: 0.0,
        gamma: 0.0,
        gate_lr: None,
        gate_optimizer: GateOptimizer::Apg,
        seed: 0,
        augment: Augment::NONE,
        log_every: 10,
        checkpoint_dir: None,
        checkpoint_every: 10,
        target_macs: Some(0.6),
        lock_at,
        rank: Rank::Taylor,
        budget_steps: 4,
        blocks_first: true,
        distill: 0.0,
        distill_temperature: 4.0,
        label_free: false,
        latency: None,
        selection: Selection::Budget,
    }
}
