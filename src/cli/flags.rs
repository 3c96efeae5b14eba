//! The training and `compress` flags, and how they override a recipe:
//! every flag is optional here, so a flag the user did not give leaves the
//! recipe's value (or the library's default) alone.

use super::common::PrepArgs;
use sss_onnx::compress::{EvalOptions, Options, RestoreBn};
use sss_onnx::structure::GateKind;
use sss_onnx::train::optim::GateOptimizer;
use sss_onnx::train::options::{BudgetOrder, TrainOptions};
use sss_onnx::train::schedule;
use sss_onnx::train::trainer::{Rank, Selection};
use std::path::PathBuf;

/// `--device`'s syntax, checked while the arguments are parsed.
fn parse_device(s: &str) -> Result<String, String> {
    sss_onnx::train::device::check_syntax(s).map(|()| s.to_string())
}

/// Options shared by `train` and `compress`.
#[derive(clap::Args, Clone, Default)]
#[command(next_help_heading = "Training")]
pub struct TrainArgs {
    /// Epochs over the training split (fractions allowed) [compress
    /// default: 8, at most 2000 steps; train: 1].
    #[arg(long, conflicts_with = "steps")]
    pub epochs: Option<f64>,
    /// Optimizer steps (instead of --epochs).
    #[arg(long)]
    pub steps: Option<usize>,
    /// [default: 128, or the largest power of two whose activations fit
    /// 8 GiB]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Training images over which BatchNorm's running statistics are
    /// re-estimated after training; 0 keeps the running averages
    /// [default: after fewer than 100 steps past the lock, 1024 (fewer for
    /// large models); else 0].
    #[arg(long, value_name = "N")]
    pub bn_recalibration: Option<usize>,
    /// Peak learning rate (fine-tuning a trained model wants far less than
    /// the paper's 0.1 from scratch) [default: 0.005].
    #[arg(long)]
    pub lr: Option<f64>,
    /// [default: cosine]
    #[arg(long, value_enum)]
    pub schedule: Option<schedule::Kind>,
    /// Linear warm-up steps [default: 0].
    #[arg(long)]
    pub warmup: Option<usize>,
    /// L1 penalty γ on the gates [default: 0.01]. compress: given without
    /// --target-macs, the paper's single APG run with no MAC target.
    #[arg(long)]
    pub gamma: Option<f64>,
    /// Peak learning rate of the gates (default: --lr, as in the paper).
    #[arg(long)]
    pub gate_lr: Option<f64>,
    /// Lock the zero pattern after this fraction of the steps (or, with a
    /// MAC target, once it is reached) and fine-tune the rest with γ = 0
    /// [compress default: 0.3 with a target, else 0.5].
    #[arg(long)]
    pub lock_at: Option<f64>,
    /// How a MAC budget picks what to delete: taylor (loss change per MAC,
    /// from the gate gradients) or value (smallest |λ|) [default: taylor].
    #[arg(long, value_enum)]
    pub rank: Option<Rank>,
    /// Budget steps spread over the first phase (gradual pruning); 1 = all
    /// at the lock [default: 4].
    #[arg(long)]
    pub budget_steps: Option<usize>,
    /// How a target is reached: budget (the least important structures
    /// zeroed in steps up to the lock) or gamma (γ steered along a glide
    /// path so APG's own exact zeros reach it, then the lock; the budget
    /// steps in at the lock only if they have not) [default: budget].
    #[arg(long, value_enum)]
    pub selection: Option<Selection>,
    /// Order of the MAC budget: blocks-first (whole residual blocks by
    /// importance, then channels/groups: what speeds a CPU runtime up) or
    /// score (importance per MAC across all kinds) [default: blocks-first].
    #[arg(long, value_enum)]
    pub budget_order: Option<BudgetOrder>,
    /// Gate optimizer [default: apg].
    #[arg(long = "optimizer", value_enum)]
    pub gate_optimizer: Option<GateOptimizer>,
    /// [default: 0.9]
    #[arg(long)]
    pub momentum: Option<f64>,
    /// [default: 1e-4]
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// No random crop / flip.
    #[arg(long)]
    pub no_augment: bool,
    /// Distil from the model as it was before training: the weight of its
    /// softened logits in the loss, 0-1 (1: labels unused) [default: 0].
    #[arg(long, value_name = "ALPHA")]
    pub distill: Option<f64>,
    /// Read no labels even where the data has them: learn only from the
    /// original model's outputs (implied by images without labels).
    #[arg(long)]
    pub no_labels: bool,
    /// Temperature of the distillation targets [default: 4].
    #[arg(long, value_name = "T")]
    pub distill_temperature: Option<f64>,
    /// [default: 10]
    #[arg(long)]
    pub log_every: Option<usize>,
    #[command(flatten)]
    pub prep: PrepArgs,
    /// Checkpoint folder (written each epoch and on Ctrl-C).
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from a checkpoint folder.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Append one JSON line of metrics per log step here.
    #[arg(long)]
    pub metrics: Option<PathBuf>,
    /// Training device: auto (CUDA when the binary was built with the
    /// `cuda` feature and a GPU is visible, else CPU), cpu, cuda or cuda:N
    /// [default: auto].
    #[arg(long, value_parser = parse_device)]
    pub device: Option<String>,
}

/// Sets `$dst` to the flag's value when the flag was given.
macro_rules! given {
    ($($flag:expr => $dst:expr),* $(,)?) => {$(
        if let Some(v) = $flag.clone() {
            $dst = v.into();
        }
    )*};
}

impl TrainArgs {
    /// `t` with the flags given set.
    pub fn apply(&self, t: &mut TrainOptions) {
        given!(
            self.epochs => t.epochs, self.steps => t.steps,
            self.batch_size => t.batch_size, self.lr => t.lr, self.schedule => t.schedule,
            self.warmup => t.warmup, self.gamma => t.gamma, self.gate_lr => t.gate_lr,
            self.lock_at => t.lock_at, self.rank => t.rank, self.budget_steps => t.budget_steps,
            self.selection => t.selection,
            self.budget_order => t.budget_order, self.gate_optimizer => t.optimizer,
            self.momentum => t.momentum, self.weight_decay => t.weight_decay, self.seed => t.seed,
            self.log_every => t.log_every, self.checkpoint_dir => t.checkpoint_dir,
            self.resume => t.resume, self.metrics => t.metrics, self.device => t.device,
            self.distill => t.distill, self.distill_temperature => t.distill_temperature,
            self.bn_recalibration => t.bn_recalibration,
        );
        if self.epochs.is_some() {
            t.steps = None;
        }
        if self.steps.is_some() {
            t.epochs = None;
        }
        if self.no_labels {
            t.no_labels = true;
        }
        if self.no_augment {
            t.augment = false;
        }
    }

    /// The library's defaults with these flags.
    pub fn options(&self) -> TrainOptions {
        let mut t = TrainOptions::default();
        self.apply(&mut t);
        t
    }
}

/// How the test split is scored (`compress` and `train`).
#[derive(clap::Args, Clone, Default)]
#[command(next_help_heading = "Evaluation")]
pub struct EvalArgs {
    /// Test samples scored, spread over the split [default: all while a
    /// pass costs at most 2e12 MACs, else as many as that buys, at least
    /// 500].
    #[arg(long, value_name = "N")]
    pub eval_limit: Option<usize>,
    /// Samples per evaluation batch [default: as many as fit 1 GiB of
    /// activations, at most 250].
    #[arg(long, value_name = "N")]
    pub eval_batch: Option<usize>,
}

impl EvalArgs {
    /// `e` with the flags given set.
    pub fn apply(&self, e: &mut EvalOptions) {
        given!(self.eval_limit => e.limit, self.eval_batch => e.batch);
    }

    pub fn options(&self) -> EvalOptions {
        let mut e = EvalOptions::default();
        self.apply(&mut e);
        e
    }
}

/// `compress`'s own flags (beside the training, runtime and output ones).
#[derive(clap::Args, Clone, Default)]
pub struct CompressArgs {
    /// Labelled data (idx, CIFAR, ImageFolder). Default: the bundled
    /// Fashion-MNIST subset, when the model's input fits it.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The pruned model; default `<model>.sss.onnx` beside the input.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// What may be deleted [default: channel,group,block].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub structures: Option<Vec<GateKind>>,
    /// Reach this fraction of the original MACs (±5 %): APG in the first
    /// phase, the MAC budget deleting the least important structures in
    /// steps up to the lock, then fine-tuning [default: 0.65, none when
    /// only --gamma is given].
    #[arg(long, conflicts_with = "target_latency")]
    pub target_macs: Option<f64>,
    /// Reach this fraction of the original's ONNX Runtime latency at
    /// --latency-batch on this machine (±10 %) instead of a MAC target:
    /// every conv is timed at a few widths before training and the budget
    /// ranks and stops on the predicted latency.
    #[arg(long, value_name = "R")]
    pub target_latency: Option<f64>,
    /// The batch size of the latency target [default: 32].
    #[arg(long, value_name = "N")]
    pub latency_batch: Option<usize>,
    /// ONNX Runtime's intra-op threads for the latency target (0: its
    /// default) [default: 1].
    #[arg(long, value_name = "N")]
    pub latency_threads: Option<usize>,
    /// Exit 1 (nothing written) when top-1 falls by more than this many
    /// points.
    #[arg(long, value_name = "PT")]
    pub max_drop: Option<f64>,
    /// Keep the checkpoint folder (the trained gated and pruned models)
    /// after a successful run.
    #[arg(long)]
    pub keep_checkpoints: bool,
    /// Put BatchNorm back after convs that had it folded in (PyTorch's
    /// default eval-mode export), train with it, fold it back before
    /// writing. auto: when the model has no BatchNormalization [default:
    /// auto].
    #[arg(long, value_enum)]
    pub restore_bn: Option<RestoreBn>,
    /// Batch sizes for the latency comparison [default: 1,32].
    #[arg(long, value_delimiter = ',')]
    pub bench_batch: Option<Vec<usize>>,
    /// Timed runs per model and batch size, interleaved [default: 200].
    #[arg(long)]
    pub bench_iters: Option<usize>,
    /// Seconds per batch size after which fewer timed runs are enough (at
    /// least 5) [default: 30].
    #[arg(long)]
    pub bench_seconds: Option<f64>,
}

impl CompressArgs {
    /// `o` with the flags given set; `gamma_only`: --gamma without
    /// --target-macs (the paper's run, no target).
    pub fn apply(&self, o: &mut Options, gamma_only: bool) {
        given!(
            self.data => o.data, self.output => o.output, self.structures => o.structures,
            self.max_drop => o.max_drop, self.restore_bn => o.restore_bn,
            self.bench_batch => o.bench.batch, self.bench_iters => o.bench.iters,
            self.bench_seconds => o.bench.seconds, self.latency_batch => o.latency_batch,
            self.latency_threads => o.latency_threads,
        );
        if let Some(t) = self.target_latency {
            o.target_latency = Some(t);
        }
        match self.target_macs {
            Some(t) => o.target_macs = Some(t),
            None if gamma_only => o.target_macs = None,
            None => {}
        }
        if self.keep_checkpoints {
            o.keep_checkpoints = true;
        }
    }
}
