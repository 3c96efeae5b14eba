//! A whole training run as commands and library users start it: the data
//! loaded for the model, the device opened, the budget stated, the loop
//! run with progress and metrics, an interrupt turned into an error that
//! says where the checkpoint is.

use super::options::{TrainOptions, Unset};
use super::trainer::{Config, Record, Stop, Trainer};
use super::{checkpoint, device, model::Model, schedule};
use crate::cost::latency::LatencyTable;
use crate::data::{self, Dataset, Preprocess, Spec, Split};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::progress::Progress;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Fine-tuning steps after the lock below which BatchNorm statistics are
/// re-estimated by default. At momentum 0.1 the running averages keep
/// 0.9^100 ≈ 3·10⁻⁵ of what they were at the lock after 100 steps, but
/// after 20 still 12 % of the network before its deletions; past the
/// threshold re-estimating only adds sampling noise (measurements:
/// `docs/notebook/imagenet.md`, `docs/notebook/frontier.md`).
pub const RECALIBRATE_BELOW: usize = 100;

/// What a training run produced.
pub struct Trained {
    pub graph: Graph,
    pub records: Vec<Record>,
    pub cfg: Config,
    /// Step at which the zero pattern was locked (two-phase runs).
    pub locked_at: Option<usize>,
    /// Factors the MAC budget set to 0, beyond APG's zeros.
    pub budget_zeroed: usize,
    /// The training device, as said to the user.
    pub device: String,
    /// Divergence-guard rewinds.
    pub rewinds: usize,
}

/// Where the training data comes from.
pub enum TrainData<'a> {
    /// The training split of this folder, fitted with this spec.
    Load(&'a Path, &'a Spec),
    /// A split the caller already loaded and fitted.
    Loaded(Box<(Dataset, Preprocess)>),
}

/// What the budget aims at: a fraction of the original MACs, or of its
/// latency as a measured table predicts it.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub fraction: Option<f64>,
    pub latency: Option<Arc<LatencyTable>>,
}

impl Target {
    /// A fraction of the MACs (`None`: no target, the paper's run).
    pub fn macs(fraction: Option<f64>) -> Self {
        Target {
            fraction,
            latency: None,
        }
    }
}

/// Trains `graph`'s weights and gates as `opts` says; `unset` gives the
/// length when `opts` names none; `stop` set by the caller ends the run at
/// the next step with a checkpoint and `Error::Interrupted`.
pub fn fit(
    graph: &Graph,
    data: TrainData,
    opts: &TrainOptions,
    unset: Unset,
    target: Target,
    progress: &mut dyn Progress,
    stop: &AtomicBool,
) -> Result<Trained> {
    let (mut ds, prep) = match data {
        TrainData::Loaded(loaded) => *loaded,
        TrainData::Load(dir, spec) => {
            let (ds, prep, _) = data::load_for(dir, Split::Train, graph, spec)?;
            (ds, prep)
        }
    };
    let mut opts = opts.clone();
    let scores = crate::graph::io::outputs_scores(graph);
    if opts.no_labels || !ds.labelled || !scores {
        let why = if !scores {
            "the model's output is not a classifier's scores ([N, classes]): labels cannot train it"
        } else if ds.labelled {
            "--no-labels: the data's labels are not read"
        } else {
            "the data has no labels"
        };
        ds.drop_labels();
        opts.no_labels = true;
        let objective = if scores {
            format!("softened-softmax KL, T = {}", opts.distill_temperature)
        } else {
            "squared error relative to its outputs".to_string()
        };
        progress.note(&format!(
            "{why}; learning from the model as it was at the start ({objective})"
        ));
    }
    let opts = &opts;
    progress.note(&format!(
        "data: {} ({} training samples); {}",
        ds.name,
        ds.len(),
        prep.describe()
    ));
    let batch = opts
        .batch_size
        .unwrap_or_else(|| crate::batching::train_batch(graph));
    if opts.batch_size.is_none() && batch < crate::batching::TRAIN_BATCH {
        progress.note(&format!(
            "batch {batch}: the most whose activations fit {} GiB (--batch-size to change)",
            crate::batching::TRAIN_BUDGET >> 30
        ));
    }
    let mut cfg = opts.config(batch, ds.len(), unset, target.fraction);
    cfg.latency = target.latency;
    let (dev, said) = device::pick(&opts.device)?;
    let default_budget = unset == Unset::Capped && opts.steps.is_none() && opts.epochs.is_none();
    progress.note(&format!(
        "device: {said}; {} steps of batch {} ({:.2} epochs of {} images{}); the progress lines give the time left",
        cfg.steps,
        cfg.batch,
        (cfg.steps * cfg.batch) as f64 / ds.len().max(1) as f64,
        ds.len(),
        if default_budget {
            format!(
                ": the default, 8 epochs but at most {} steps; epochs or steps to change",
                schedule::DEFAULT_MAX_STEPS
            )
        } else {
            String::new()
        }
    ));
    let model = Model::new(graph, &dev)?;
    let mut trainer = Trainer::new(model, cfg.clone())?;
    if let Some(dir) = &opts.resume {
        let ck = checkpoint::load(dir, &dev)?;
        progress.note(&format!("resuming at step {}", ck.meta.step));
        trainer.resume(ck)?;
    }
    let mut metrics = match &opts.metrics {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| Error::io(p, e))?,
        ),
        None => None,
    };
    let (steps, batch) = (cfg.steps, cfg.batch);
    let mut on_record = |r: &Record| {
        let eta = schedule::eta(steps.saturating_sub(r.step), batch, r.images_per_s);
        progress.record(r, &eta);
        if let Some(f) = metrics.as_mut() {
            // metrics are a side channel: a full disk must not end training
            let _ = writeln!(f, "{}", serde_json::to_string(r).unwrap_or_default());
        }
    };
    let ds = Arc::new(ds);
    let out = trainer.run(ds.clone(), &prep, stop, &mut on_record)?;
    if out.stopped == Stop::Interrupted {
        let at = opts
            .checkpoint_dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "nowhere (no checkpoint folder)".into());
        return Err(Error::Interrupted(format!(
            "interrupted at step {}; checkpoint in {at}; continue with --resume",
            out.steps_done
        )));
    }
    // by default only after a short fine-tune: a long one's running
    // averages already describe the network as it ended
    let settled = cfg.steps - trainer.locked_at.unwrap_or(0) >= RECALIBRATE_BELOW;
    let samples = match opts.bn_recalibration {
        Some(n) => n,
        None if settled => 0,
        None => {
            let facts = crate::graph::shape::infer_strict(graph, 1)?;
            crate::batching::recalibration_samples(crate::graph::counts::count(graph, &facts).macs)
        }
    };
    let batches = trainer.recalibrate_bn(&ds, &prep, samples)?;
    if batches > 0 {
        progress.note(&format!(
            "BatchNorm statistics re-estimated over {} training images",
            samples.min(ds.len())
        ));
    }
    Ok(Trained {
        graph: trainer.model.write_back()?,
        records: out.records,
        cfg,
        locked_at: trainer.locked_at,
        budget_zeroed: trainer.budget_zeroed,
        device: said,
        rewinds: trainer.rewinds(),
    })
}
