//! Everything `compress` can be told: the recipe. `Default` is the
//! command's defaults; a recipe file (TOML) sets any part of it, flags
//! override the file, and the report embeds the result so a run can be
//! repeated from its report.

pub use crate::batching::EvalOptions;
use crate::data::Spec;
use crate::error::{Error, Result};
use crate::files::ensure_not_input;
use crate::runtime;
use crate::structure::GateKind;
use crate::train::device;
use crate::train::options::TrainOptions;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Whether BatchNorm is put back after convs that had it folded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum RestoreBn {
    /// When the model has no BatchNormalization (PyTorch's default
    /// eval-mode export folds it).
    Auto,
    On,
    Off,
}

/// How the written model stores its weights and batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriteOptions {
    /// `Some(true)`: weights in `<output>.data`; `Some(false)`: inline;
    /// `None`: as the input had them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_data: Option<bool>,
    /// A symbolic batch even when the input fixed it.
    pub dynamic_batch: bool,
}

/// The latency comparison of the original and the pruned model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BenchOptions {
    /// Batch sizes timed.
    pub batch: Vec<usize>,
    /// Timed runs per model and batch size (interleaved; batch-1 latencies
    /// of a fraction of a millisecond on a shared machine need a few
    /// hundred for a stable median).
    pub iters: usize,
    /// Seconds per batch size after which fewer rounds are enough (at
    /// least 5): an ImageNet-size model at batch 32 takes a second a run.
    pub seconds: f64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            batch: vec![1, 32],
            iters: 200,
            seconds: 30.0,
        }
    }
}

/// `compress`'s recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// The model (the command line's argument wins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// Labelled data; `None`: the bundled Fashion-MNIST subset when the
    /// model's input fits it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    /// The pruned model; `None`: `<model>.sss.onnx` beside the input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<PathBuf>,
    /// What may be deleted.
    pub structures: Vec<GateKind>,
    /// Reach this fraction of the original MACs (±5 %). `None` (`"none"`
    /// in a recipe): the paper's single APG run with `train.gamma`, no
    /// target.
    #[serde(with = "none_or_number")]
    pub target_macs: Option<f64>,
    /// Reach this fraction of the original's ONNX Runtime latency at
    /// `latency_batch` (with `runtime.threads`) instead: the budget ranks
    /// and stops on a latency table measured on this machine before
    /// training. Takes the place of `target_macs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_latency: Option<f64>,
    /// The batch size a latency target is measured at.
    pub latency_batch: usize,
    /// ONNX Runtime's intra-op threads for a latency target. One by
    /// default: on a shared machine the timings with several threads move
    /// by more than the target's tolerance between sittings.
    pub latency_threads: usize,
    /// Refuse the result (exit 1, nothing written) when top-1 falls by
    /// more than this many points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_drop: Option<f64>,
    pub restore_bn: RestoreBn,
    /// Keep the checkpoint folder after a successful run.
    pub keep_checkpoints: bool,
    pub train: TrainOptions,
    /// The model's preprocessing (over the data folder's `dataset.json`).
    pub preprocess: Spec,
    pub eval: EvalOptions,
    pub runtime: runtime::Options,
    pub bench: BenchOptions,
    pub write: WriteOptions,
}

impl Options {
    /// The fraction the budget aims at (of the latency when a latency
    /// target is set, else of the MACs), if any.
    pub fn target(&self) -> Option<f64> {
        self.target_latency.or(self.target_macs)
    }
}

/// The MAC target when a run names none and sets no γ of its own.
pub const DEFAULT_TARGET_MACS: f64 = 0.65;

impl Default for Options {
    fn default() -> Self {
        Options {
            model: None,
            data: None,
            output: None,
            structures: vec![GateKind::Channel, GateKind::Group, GateKind::Block],
            target_macs: Some(DEFAULT_TARGET_MACS),
            target_latency: None,
            latency_batch: 32,
            latency_threads: 1,
            max_drop: None,
            restore_bn: RestoreBn::Auto,
            keep_checkpoints: false,
            train: TrainOptions::default(),
            preprocess: Spec::default(),
            eval: EvalOptions::default(),
            runtime: runtime::Options::default(),
            bench: BenchOptions::default(),
            write: WriteOptions::default(),
        }
    }
}

/// `Option<f64>` as a number or the word `"none"` (TOML has no null).
mod none_or_number {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(x) => s.serialize_f64(*x),
            None => s.serialize_str("none"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(f64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(x) => Ok(Some(x)),
            Raw::S(s) if s == "none" => Ok(None),
            Raw::S(s) => Err(serde::de::Error::custom(format!(
                "`{s}`: expected a fraction of the MACs or \"none\""
            ))),
        }
    }
}

/// The run's inputs, resolved and checked before any work: the model,
/// where outputs and checkpoints go, targets in range, a device that can
/// be had.
pub struct Resolved {
    pub opts: Options,
    pub model: PathBuf,
    pub output: PathBuf,
    pub checkpoints: PathBuf,
}

impl Resolved {
    pub fn new(opts: &Options) -> Result<Resolved> {
        let model = model_of(opts)?;
        // a device that cannot be had is an error before any work
        device::pick(&opts.train.device)?;
        let output = opts
            .output
            .clone()
            .unwrap_or_else(|| model.with_extension("sss.onnx"));
        ensure_not_input(&output, &model)?;
        let checkpoints = opts
            .train
            .checkpoint_dir
            .clone()
            .unwrap_or_else(|| output.with_extension("ckpt"));
        if let Some(t) = opts.target_macs {
            if !(0.01..1.0).contains(&t) {
                return Err(Error::Invalid(format!(
                    "target MACs {t} must lie in (0, 1)"
                )));
            }
        }
        let mut resolved = opts.clone();
        if let Some(t) = opts.target_latency {
            if !(0.01..1.0).contains(&t) {
                return Err(Error::Invalid(format!(
                    "target latency {t} must lie in (0, 1)"
                )));
            }
            if opts.runtime.kind == crate::runtime::Kind::Tract {
                return Err(Error::Invalid(
                    "a latency target is timed in ONNX Runtime: it cannot be used with runtime tract".into(),
                ));
            }
            if opts.latency_batch == 0 {
                return Err(Error::Invalid("latency batch 0: give at least 1".into()));
            }
        }
        resolved.model = Some(model.clone());
        resolved.output = Some(output.clone());
        Ok(Resolved {
            opts: resolved,
            model,
            output,
            checkpoints,
        })
    }
}

/// The model `opts` names, or an error saying it names none.
pub(super) fn model_of(opts: &Options) -> Result<PathBuf> {
    opts.model.clone().ok_or_else(|| {
        Error::Invalid("no model given (the command's argument or `model` in the recipe)".into())
    })
}
