//! What a user chooses about training (the `[train]` table of a recipe,
//! the training flags), and how it becomes the loop's `Config` once the
//! size of the training split is known.

use super::feed::{self, Augment};
use super::optim::GateOptimizer;
use super::schedule::{self, Kind, Schedule};
use super::trainer::Selection;
use super::trainer::{Config, Rank};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The order in which a MAC budget deletes structures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum BudgetOrder {
    /// Whole residual blocks by importance, then channels and groups for the
    /// rest: what speeds a CPU runtime up.
    BlocksFirst,
    /// Importance per MAC across all kinds.
    Score,
}

/// Training choices; `Default` is what `compress` and `train` use when
/// nothing is said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainOptions {
    /// Epochs over the training split (fractions allowed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<f64>,
    /// Optimizer steps (wins over `epochs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// Samples per step. `None`: 128, or the largest power of two whose
    /// activations fit 8 GiB when 128 would not (ImageNet-size inputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Peak learning rate of the weights.
    pub lr: f64,
    pub schedule: Kind,
    pub warmup: usize,
    /// L1 penalty γ on the gates.
    pub gamma: f64,
    /// Peak learning rate of the gates; `None`: `lr`, as in the paper.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_lr: Option<f64>,
    /// Lock the zero pattern after this fraction of the steps; `None`: the
    /// command's choice (`compress`: 0.3 with a MAC target, else 0.5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_at: Option<f64>,
    pub rank: Rank,
    pub budget_steps: usize,
    pub budget_order: BudgetOrder,
    pub optimizer: GateOptimizer,
    pub momentum: f64,
    pub weight_decay: f64,
    pub seed: u64,
    /// Random crop and flip.
    pub augment: bool,
    pub log_every: usize,
    /// auto, cpu, cuda or cuda:N.
    pub device: String,
    /// Checkpoint folder (written each epoch and on an interrupt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from this checkpoint folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<PathBuf>,
    /// Append one JSON line of metrics per log step to this file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<PathBuf>,
    /// Training images over which BatchNorm's running statistics are
    /// re-estimated after training (0: keep the running averages). `None`:
    /// after fewer than 100 steps past the lock, up to 1024 (fewer for
    /// large models: a pass of at most 5·10¹¹ MACs); else none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bn_recalibration: Option<usize>,
    /// Distillation from the model as it was at the start: the weight of
    /// its softened logits in the loss (0 = labels only, 1 = no labels).
    pub distill: f64,
    /// Softening temperature of the distillation targets.
    pub distill_temperature: f64,
    /// Read no labels even where the data has them: learn from the
    /// original model's outputs only (implied by data without labels).
    pub no_labels: bool,
    /// How a target is reached: budget steps, or γ steered so APG's own
    /// zeros reach it.
    pub selection: Selection,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: None,
            steps: None,
            batch_size: None,
            // fine-tuning a trained model wants far less than the paper's
            // 0.1 from scratch
            lr: 0.005,
            schedule: Kind::Cosine,
            warmup: 0,
            gamma: 0.01,
            gate_lr: None,
            lock_at: None,
            rank: Rank::Taylor,
            budget_steps: 4,
            budget_order: BudgetOrder::BlocksFirst,
            optimizer: GateOptimizer::Apg,
            momentum: 0.9,
            weight_decay: 1e-4,
            seed: 0,
            augment: true,
            log_every: 10,
            device: "auto".into(),
            checkpoint_dir: None,
            resume: None,
            metrics: None,
            bn_recalibration: None,
            distill: 0.0,
            distill_temperature: 4.0,
            no_labels: false,
            selection: Selection::Budget,
        }
    }
}

/// How many steps a run takes when neither `steps` nor `epochs` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unset {
    /// One epoch (`train`).
    OneEpoch,
    /// `schedule::default_steps` (`compress`).
    Capped,
}

impl TrainOptions {
    /// The number of steps of `batch` on `train_len` samples.
    pub fn steps_for(&self, batch: usize, train_len: usize, unset: Unset) -> usize {
        let spe = feed::steps_per_epoch(train_len, batch);
        match (self.steps, self.epochs) {
            (Some(s), _) => s,
            (None, Some(e)) => (e * spe as f64).ceil() as usize,
            (None, None) if unset == Unset::Capped => schedule::default_steps(train_len, batch),
            (None, None) => spe,
        }
        .max(1)
    }

    /// The loop's configuration with batches of `batch` (`batch_size`, or
    /// `batching::train_batch` of the model) on `train_len` samples.
    pub fn config(
        &self,
        batch: usize,
        train_len: usize,
        unset: Unset,
        target_macs: Option<f64>,
    ) -> Config {
        let steps = self.steps_for(batch, train_len, unset);
        Config {
            steps,
            batch,
            schedule: Schedule::new(self.schedule, self.lr, steps, self.warmup),
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            gamma: self.gamma,
            gate_lr: self.gate_lr,
            gate_optimizer: self.optimizer,
            seed: self.seed,
            augment: if self.augment {
                Augment::STANDARD
            } else {
                Augment::NONE
            },
            log_every: self.log_every,
            checkpoint_dir: self.checkpoint_dir.clone(),
            checkpoint_every: feed::steps_per_epoch(train_len, batch),
            target_macs,
            lock_at: self.lock_at,
            rank: self.rank,
            budget_steps: self.budget_steps,
            blocks_first: self.budget_order == BudgetOrder::BlocksFirst,
            distill: if self.no_labels { 1.0 } else { self.distill },
            distill_temperature: self.distill_temperature,
            label_free: self.no_labels,
            latency: None,
            selection: self.selection,
        }
    }
}
