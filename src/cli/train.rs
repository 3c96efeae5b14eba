//! `sss-onnx train model.onnx --data DIR`: train weights and gates.

use super::common::{import_model, load_data, OutputArgs, PrepArgs};
use super::gate::Structure;
use super::CliResult;
use anyhow::Context;
use sss_onnx::data::{Dataset, Preprocess, Split};
use sss_onnx::gate;
use sss_onnx::graph::Graph;
use sss_onnx::onnx::atomic::{ensure_not_input, write_atomic};
use sss_onnx::structure::GateKind;
use sss_onnx::train::feed::{self, Augment};
use sss_onnx::train::optim::GateOptimizer;
use sss_onnx::train::schedule::{self, Schedule};
use sss_onnx::train::trainer::{self, Config, Rank, Record, Stop, Trainer};
use sss_onnx::train::{checkpoint, model::Model};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Options shared by `train` and `compress`.
#[derive(clap::Args, Clone)]
#[command(next_help_heading = "Training")]
pub struct TrainArgs {
    /// Epochs over the training split (fractions allowed).
    #[arg(long, conflicts_with = "steps")]
    pub epochs: Option<f64>,
    /// Optimizer steps (instead of --epochs).
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Peak learning rate (fine-tuning a trained model wants far less than
    /// the paper's 0.1 from scratch; BN-folded exports less still).
    #[arg(long, default_value_t = 0.005)]
    pub lr: f64,
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: schedule::Kind,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// L1 penalty γ on the gates (default 0.01).
    #[arg(long)]
    pub gamma: Option<f64>,
    /// Peak learning rate of the gates (default: --lr, as in the paper;
    /// a larger one makes gates move faster than the weights can adapt).
    #[arg(long)]
    pub gate_lr: Option<f64>,
    /// Lock the zero pattern after this fraction of the steps (or, with a MAC
    /// target, once it is reached) and fine-tune the rest with γ = 0
    /// (`compress` default with a target: 0.3).
    #[arg(long)]
    pub lock_at: Option<f64>,
    /// How a MAC budget picks what to delete: taylor (loss change per MAC,
    /// from the gate gradients) or value (smallest |λ|).
    #[arg(long, value_enum, default_value = "taylor")]
    pub rank: Rank,
    /// Budget steps spread over the first phase (gradual pruning); 1 = all
    /// at the lock.
    #[arg(long, default_value_t = 4)]
    pub budget_steps: usize,
    /// Order of the MAC budget: blocks-first (whole residual blocks by
    /// importance, then channels/groups for the rest: what speeds a CPU
    /// runtime up) or score (importance per MAC across all kinds).
    #[arg(long, value_enum, default_value = "blocks-first")]
    pub budget_order: BudgetOrder,
    #[arg(long = "optimizer", value_enum, default_value = "apg")]
    pub gate_optimizer: GateOptimizer,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No random crop / flip.
    #[arg(long)]
    pub no_augment: bool,
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    #[command(flatten)]
    pub prep: PrepArgs,
    /// Set by `compress` when the user named no budget (see
    /// `schedule::default_steps`).
    #[arg(skip)]
    pub default_budget: bool,
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
    /// `cuda` feature and a GPU is visible, else CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    pub device: String,
}

/// `--device`'s syntax, checked while the arguments are parsed.
fn parse_device(s: &str) -> Result<String, String> {
    let ok = matches!(s, "auto" | "cpu" | "cuda")
        || s.strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok());
    if ok {
        Ok(s.to_string())
    } else {
        Err("expected auto, cpu, cuda or cuda:N".into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BudgetOrder {
    BlocksFirst,
    Score,
}

/// Resolves `--device`; the string says which device and why.
pub fn pick_device(spec: &str) -> anyhow::Result<(candle_core::Device, String)> {
    use candle_core::Device;
    let cuda = |n: usize| -> anyhow::Result<(Device, String)> {
        if !candle_core::utils::cuda_is_available() {
            anyhow::bail!(
                "--device {spec}: this binary was built without CUDA; rebuild with `cargo build --release --features cuda` (README: GPU build)"
            );
        }
        let d = Device::new_cuda(n)
            .with_context(|| format!("--device {spec}: opening CUDA device {n}"))?;
        Ok((d, format!("cuda:{n}")))
    };
    match spec {
        "cpu" => Ok((Device::Cpu, "cpu".into())),
        "cuda" => cuda(0),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                match Device::new_cuda(0) {
                    Ok(d) => return Ok((d, "cuda:0 (auto: built with CUDA, GPU visible)".into())),
                    Err(e) => return Ok((Device::Cpu, format!("cpu (auto: no usable GPU: {e})"))),
                }
            }
            Ok((Device::Cpu, "cpu (auto: built without CUDA)".into()))
        }
        s => match s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => cuda(n),
            None => anyhow::bail!("--device {s}: expected auto, cpu, cuda or cuda:N"),
        },
    }
}

impl TrainArgs {
    pub fn config(&self, train_len: usize, target_macs: Option<f64>) -> Config {
        let spe = feed::steps_per_epoch(train_len, self.batch_size);
        let steps = match (self.steps, self.epochs) {
            (Some(s), _) => s,
            (None, Some(e)) => (e * spe as f64).ceil() as usize,
            (None, None) if self.default_budget => {
                schedule::default_steps(train_len, self.batch_size)
            }
            (None, None) => spe,
        }
        .max(1);
        Config {
            steps,
            batch: self.batch_size,
            schedule: Schedule {
                kind: self.schedule,
                base: self.lr,
                total: steps,
                warmup: self.warmup,
                factor: 0.1,
                step_every: (steps / 3).max(1),
                milestones: vec![0.5, 0.75],
            },
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            gamma: self.gamma.unwrap_or(0.01),
            gate_lr: self.gate_lr,
            gate_optimizer: self.gate_optimizer,
            seed: self.seed,
            augment: if self.no_augment {
                Augment::NONE
            } else {
                Augment::STANDARD
            },
            log_every: self.log_every,
            checkpoint_dir: self.checkpoint_dir.clone(),
            checkpoint_every: spe,
            target_macs,
            lock_at: self.lock_at,
            rank: self.rank,
            budget_steps: self.budget_steps,
            blocks_first: self.budget_order == BudgetOrder::BlocksFirst,
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    #[arg(long)]
    data: PathBuf,
    /// The trained (gated) model; default `<model>.trained.onnx`.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Insert gates first (when the model has none).
    #[arg(long)]
    gate: bool,
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "channel,group,block"
    )]
    structures: Vec<Structure>,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    out: OutputArgs,
}

/// Ctrl-C / SIGTERM set this flag; the loop checkpoints and stops.
pub fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    // a second handler registration fails harmlessly (tests run several)
    let _ = ctrlc::set_handler(move || f.store(true, Ordering::SeqCst));
    flag
}

/// One progress line; `eta` (time left) when the run's length is known.
pub fn progress_line(r: &Record, eta: Option<String>) -> String {
    format!(
        "step {:>6} ep {:>5.2}  loss {:.4}  acc {:>5.1}%  lr {:.4}  γ {:.3e}  zero gates {}/{}  MACs {:>5.1}%  {:.0} img/s{}{}",
        r.step,
        r.epoch,
        r.loss,
        r.accuracy * 100.0,
        r.lr,
        r.gamma,
        r.zero_gates,
        r.gates,
        r.macs_ratio * 100.0,
        r.images_per_s,
        eta.map(|e| format!("  ETA {e}")).unwrap_or_default(),
        if r.locked { "  [locked: fine-tuning]" } else { "" }
    ) + &if r.rewinds > 0 {
        format!("  [loss ran away {}×: rewound, lr halved]", r.rewinds)
    } else {
        String::new()
    }
}

/// Runs training, writing metrics and progress; returns the trained graph.
/// `train`: the training split of `data_dir`, or the one the caller
/// already loaded (with its fit to the model).
pub fn run_training(
    graph: &Graph,
    data_dir: &Path,
    loaded: Option<(Dataset, Preprocess)>,
    t: &TrainArgs,
    target_macs: Option<f64>,
) -> anyhow::Result<Trained> {
    let (ds, prep) = match loaded {
        Some(l) => l,
        None => {
            let (ds, prep, _) = load_data(data_dir, Split::Train, graph, &t.prep)?;
            (ds, prep)
        }
    };
    eprintln!(
        "data: {} ({} training samples); {}",
        ds.name,
        ds.len(),
        prep.describe()
    );
    let cfg = t.config(ds.len(), target_macs);
    let (device, said) = pick_device(&t.device)?;
    eprintln!(
        "device: {said}; {} steps of batch {} ({:.2} epochs of {} images{}); the progress lines give the time left",
        cfg.steps,
        cfg.batch,
        (cfg.steps * cfg.batch) as f64 / ds.len().max(1) as f64,
        ds.len(),
        if t.default_budget {
            format!(
                ": compress's default, 8 epochs but at most {} steps; --epochs or --steps to change",
                schedule::DEFAULT_MAX_STEPS
            )
        } else {
            String::new()
        }
    );
    let (cfg_steps, cfg_batch) = (cfg.steps, cfg.batch);
    let model = Model::new(graph, &device)?;
    let mut trainer = Trainer::new(model, cfg.clone())?;
    if let Some(dir) = &t.resume {
        let ck = checkpoint::load(dir, &device)
            .with_context(|| format!("resuming from {}", dir.display()))?;
        eprintln!("resuming at step {}", ck.meta.step);
        trainer.resume(ck)?;
    }
    let mut metrics = match &t.metrics {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?,
        ),
        None => None,
    };
    let stop = stop_flag();
    let mut on_record = |r: &Record| {
        let left = cfg_steps.saturating_sub(r.step);
        let eta = schedule::eta(left, cfg_batch, r.images_per_s);
        eprintln!("{}", progress_line(r, Some(eta)));
        if let Some(f) = metrics.as_mut() {
            let _ = writeln!(f, "{}", serde_json::to_string(r).unwrap_or_default());
        }
    };
    let out = trainer.run(Arc::new(ds), &prep, &stop, &mut on_record)?;
    if out.stopped == Stop::Interrupted {
        let where_ = t
            .checkpoint_dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "nowhere (no --checkpoint-dir)".into());
        return Err(super::Interrupted(format!(
            "interrupted at step {}; checkpoint in {where_}; continue with --resume",
            out.steps_done
        ))
        .into());
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

/// What a training run produced.
pub struct Trained {
    pub graph: Graph,
    pub records: Vec<Record>,
    pub cfg: Config,
    /// Step at which the zero pattern was locked (two-phase runs).
    pub locked_at: Option<usize>,
    /// Factors the MAC budget set to 0, beyond APG's zeros.
    pub budget_zeroed: usize,
    /// The training device, as said on stderr.
    pub device: String,
    /// Divergence-guard rewinds.
    pub rewinds: usize,
}

pub fn run(a: Args) -> CliResult {
    // a device that cannot be had is an error before any work
    pick_device(&a.train.device)?;
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| a.model.with_extension("trained.onnx"));
    ensure_not_input(&output, &a.model)?;
    let imp = import_model(&a.model)?;
    let mut g = imp.graph.clone();
    if a.gate {
        let kinds: Vec<GateKind> = a.structures.iter().map(|&s| s.into()).collect();
        g = gate::insert(&g, &kinds)?.0;
    }
    let Trained {
        graph: trained,
        records,
        ..
    } = run_training(&g, &a.data, None, &a.train, None)?;
    imp.save(&trained, &output, a.out.choice("train"))?;
    let (test, prep, _) = load_data(&a.data, Split::Test, &trained, &a.train.prep)?;
    let acc = trainer::evaluate(
        &Model::new(&trained, &candle_core::Device::Cpu)?,
        &test,
        &prep,
        250,
        None,
    )?;
    eprintln!(
        "test accuracy (candle, eval mode): {:.2}% on {} samples",
        acc * 100.0,
        test.len()
    );
    if let Some(last) = records.last() {
        eprintln!("final: {}", progress_line(last, None));
    }
    let summary = serde_json::json!({ "output": output, "test_accuracy": acc, "curve": records });
    let report = output.with_extension("train.json");
    write_atomic(&report, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    println!("{}", output.display());
    Ok(())
}
