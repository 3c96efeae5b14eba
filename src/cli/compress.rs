//! `sss-onnx compress model.onnx`: import → gate → train (APG) → prune →
//! validate → evaluate → bench → report, in one command.

use super::common::{
    import_model, load_data, model_classes, open, open_imported, OutputArgs, RuntimeArgs,
};
use super::gate::Structure;
use super::train::{run_training, TrainArgs, Trained};
use super::{CliResult, Failure};
use anyhow::Context;
use sss_onnx::bn_restore;
use sss_onnx::data::{Fit, Split};
use sss_onnx::gate;
use sss_onnx::graph::{convert, cost, shape, Graph};
use sss_onnx::measure::accuracy::evaluate;
use sss_onnx::measure::{bench, inputs, validate};
use sss_onnx::onnx::atomic::{ensure_not_input, write_atomic};
use sss_onnx::onnx::WriteOptions;
use sss_onnx::prune;
use sss_onnx::report::{self, GateValues, ModelFigures, Report, Training};
use sss_onnx::runtime::{self, Options};
use sss_onnx::structure::GateKind;
use sss_onnx::train::{model::Model, trainer};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    /// Labelled data (idx, CIFAR binary, ImageFolder). Default: the bundled
    /// Fashion-MNIST subset, when the model's input fits it.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The pruned model; default `<model>.sss.onnx` beside the input.
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "channel,group,block"
    )]
    structures: Vec<Structure>,
    /// Reach this fraction of the original MACs (±5 %): APG with --gamma
    /// (default 0.01) in the first phase, the MAC budget deleting the least
    /// important structures in steps up to the lock, then fine-tuning.
    /// Default 0.65 unless only --gamma is given (the paper's single run).
    #[arg(long)]
    target_macs: Option<f64>,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    rt: RuntimeArgs,
    /// Print the JSON report on stdout instead of the Markdown summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    out: OutputArgs,
    /// Exit 1 (nothing written) when top-1 falls by more than this many
    /// points.
    #[arg(long, value_name = "PT")]
    max_drop: Option<f64>,
    /// Keep the checkpoint folder (the trained gated and pruned models)
    /// after a successful run.
    #[arg(long)]
    keep_checkpoints: bool,
    /// Put BatchNorm back after convs that had it folded in (PyTorch's
    /// default eval-mode export), train with it, fold it back before
    /// writing. auto: when the model has no BatchNormalization.
    #[arg(long, value_enum, default_value = "auto")]
    restore_bn: RestoreBn,
    /// Batch sizes for the latency comparison.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    bench_batch: Vec<usize>,
    /// Timed runs per model and batch size (interleaved; batch-1 latencies
    /// of ~0.3 ms on a shared machine need a few hundred for a stable p50).
    #[arg(long, default_value_t = 200)]
    bench_iters: usize,
}

fn file_bytes(p: &Path) -> u64 {
    let data = p.with_file_name(format!(
        "{}.data",
        p.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0)
}

fn counts(g: &Graph) -> anyhow::Result<(u64, u64)> {
    let c = cost::count(g, &shape::infer_strict(g, 1)?);
    Ok((c.macs, c.params))
}

fn stage(i: usize, name: &str) {
    eprintln!("[{i}/8] {name}");
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreBn {
    Auto,
    On,
    Off,
}

pub fn run(a: Args) -> CliResult {
    let t_all = Instant::now();
    // a device that cannot be had is an error before any work
    super::train::pick_device(&a.train.device)?;
    let out = a
        .output
        .clone()
        .unwrap_or_else(|| a.model.with_extension("sss.onnx"));
    ensure_not_input(&out, &a.model)?;
    let ckpt = a
        .train
        .checkpoint_dir
        .clone()
        .unwrap_or_else(|| out.with_extension("ckpt"));
    if let Some(t) = a.target_macs {
        if !(0.01..1.0).contains(&t) {
            return Err(anyhow::anyhow!("--target-macs {t} must lie in (0, 1)").into());
        }
    }
    let target = match (a.target_macs, a.train.gamma) {
        (Some(t), _) => Some(t),
        (None, Some(_)) => None,
        (None, None) => Some(0.65),
    };

    stage(1, "import");
    let imp = import_model(&a.model)?;
    let g = imp.graph.clone();
    let data_dir = match &a.data {
        Some(d) => d.clone(),
        None => sss_onnx::data::bundled::find()
            .map_err(|why| anyhow::anyhow!("no --data given and {why}"))?,
    };
    let (test, prep, input) = load_data(&data_dir, Split::Test, &g, &a.train.prep)?;
    if a.data.is_none() {
        let classes = shape::infer_strict(&g, 1)?
            .shape(&g.outputs[0].name)
            .map(|s| s.last().copied().unwrap_or(0))
            .unwrap_or(0);
        // "fits": the same size or a small pad (28×28 into ≤ 36×36); a model
        // for 64×64 or 224×224 images would learn nothing useful from it
        let small_pad = prep.to[1] <= prep.from[1] + 8 && prep.to[2] <= prep.from[2] + 8;
        if prep.fit == Fit::Resize || !small_pad || classes != test.classes {
            return Err(anyhow::anyhow!(
                "the model's input {:?} / {classes} classes does not fit the bundled Fashion-MNIST subset (1×28×28, 10 classes): pass --data DIR",
                prep.to
            )
            .into());
        }
        eprintln!("data: none given; using the bundled {}", test.name);
    }
    let opts: Options = a.rt.options();
    let (macs0, params0) = counts(&g)?;
    let mut s0 = open_imported(&imp, &a.model, &opts)?;
    let runtime_name = s0.describe();
    let acc0 = evaluate(s0.as_mut(), &input, &test, &prep, 250, None)?;
    eprintln!(
        "original: {:.2} M MACs, {} params, top-1 {:.2}% ({runtime_name})",
        macs0 as f64 / 1e6,
        params0,
        acc0.top1 * 100.0
    );

    stage(2, "gate");
    let restore = match a.restore_bn {
        RestoreBn::Auto => bn_restore::is_bn_folded(&g),
        RestoreBn::On => true,
        RestoreBn::Off => false,
    };
    // the training split, loaded once: for the BN statistics and training
    let mut train_split = None;
    let base = if restore {
        let (train, tprep, tin) = load_data(&data_dir, Split::Train, &g, &a.train.prep)?;
        let (b, n) = bn_restore::restore(&g, &train, &tprep, &tin, &opts, 512)?;
        eprintln!(
            "BatchNorm restored after {n} convs (statistics of 512 training images; folded back before writing)"
        );
        train_split = Some((train, tprep));
        b
    } else {
        g.clone()
    };
    let kinds: Vec<GateKind> = a.structures.iter().map(|&s| s.into()).collect();
    let (gated, gates) = gate::insert(&base, &kinds)?;
    eprintln!(
        "{} gate tensors, {} factors",
        gates.len(),
        gates.iter().map(|g| g.count).sum::<usize>()
    );

    stage(3, "train (NAG for weights, APG for gates)");
    let mut targs = a.train.clone();
    if targs.epochs.is_none() && targs.steps.is_none() {
        targs.default_budget = true;
    }
    if targs.lock_at.is_none() {
        // with a target most of the run is fine-tuning after the budget's
        // deletions (measured: 0.3 kept 0.3–0.5 pt more accuracy than 0.5)
        targs.lock_at = Some(if target.is_some() { 0.3 } else { 0.5 });
    }
    targs.checkpoint_dir = Some(ckpt.clone());
    let t_train = Instant::now();
    let Trained {
        graph: trained,
        records: curve,
        cfg,
        locked_at,
        budget_zeroed,
        device,
        rewinds,
    } = run_training(&gated, &data_dir, train_split, &targs, target)?;
    let train_secs = t_train.elapsed().as_secs_f64();
    let gated_path = ckpt.join("gated.onnx");
    convert::save(&trained, &gated_path, &WriteOptions::default())?;

    stage(4, "prune");
    let (mut pruned, prune_report) = prune::prune(&trained)?;
    if restore {
        let n = bn_restore::fold_back(&mut pruned)?;
        eprintln!("{n} restored BatchNorms folded back into their convs");
    }
    let pruned_check = ckpt.join("pruned.onnx");
    convert::save(&pruned, &pruned_check, &WriteOptions::default())?;

    stage(5, "validate (pruned vs trained gated model)");
    // both written above with a symbolic batch: the runtime opens the files
    let (mut sg, mut sp) = (
        runtime::open(&gated_path, &opts)?,
        runtime::open(&pruned_check, &opts)?,
    );
    let plan = validate::Plan {
        pairing: None,
        random_batches: 4,
        batch: 8,
        seed: 1,
        real: Some((&test, &prep, 256)),
        atol: 1e-4,
        rtol: 1e-4,
    };
    let exact = validate::validate(&trained, sg.as_mut(), sp.as_mut(), &plan)?;
    let worst = exact.outputs.iter().map(|d| d.max_abs).fold(0.0, f64::max);
    if !exact.passed {
        return Err(Failure::Validation(format!(
            "the pruned model differs from the trained gated model by {worst:.3e} (> 1e-4); nothing written to {}; both models are in {}",
            out.display(),
            ckpt.display()
        )));
    }
    eprintln!("exact: max abs diff {worst:.2e}");

    stage(6, "evaluate");
    let acc_gated_rt = evaluate(sg.as_mut(), &input, &test, &prep, 250, None)?;
    let acc_gated_candle = trainer::evaluate(
        &Model::new(&trained, &candle_core::Device::Cpu)?,
        &test,
        &prep,
        250,
        None,
    )?;
    let acc1 = evaluate(sp.as_mut(), &input, &test, &prep, 250, None)?;
    eprintln!(
        "pruned: top-1 {:.2}% (gated: {:.2}% runtime, {:.2}% candle)",
        acc1.top1 * 100.0,
        acc_gated_rt.top1 * 100.0,
        acc_gated_candle * 100.0
    );
    let classes = test.classes.max(model_classes(&g).unwrap_or(0)).max(2);
    let (macs1, params1) = counts(&pruned)?;
    let drop_pt = (acc0.top1 - acc1.top1) * 100.0;
    let too_much = a
        .max_drop
        .filter(|&m| drop_pt > m)
        .map(|m| format!("top-1 fell by {drop_pt:.2} pt, more than --max-drop {m}"));
    if let Some(why) =
        too_much.or_else(|| report::outcome_problem(target, macs0, macs1, acc1.top1, classes))
    {
        return Err(Failure::Validation(format!(
            "{why}; nothing written to {}; the trained models are in {}",
            out.display(),
            ckpt.display()
        )));
    }
    let mut settings = serde_json::json!({
        "structures": kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        "target_macs": target,
        "gamma_start": cfg.gamma,
        "gate_optimizer": cfg.gate_optimizer,
        "gate_lr": cfg.gate_lr,
        "lock_at": cfg.lock_at,
        "rank": cfg.rank,
        "budget_steps": cfg.budget_steps,
        "blocks_first": cfg.blocks_first,
        "steps": cfg.steps,
        "batch_size": cfg.batch,
        "lr": cfg.schedule.base,
        "schedule": cfg.schedule.kind,
        "momentum": cfg.momentum,
        "weight_decay": cfg.weight_decay,
        "seed": cfg.seed,
        "augment": format!("{:?}", cfg.augment),
        "threads": a.rt.threads,
    });
    settings["restore_bn"] = restore.into();
    settings["preprocess"] = serde_json::to_value(a.train.prep.spec())?;
    let mut choice = a.out.choice("compress");
    choice.recipe = Some(settings.to_string());
    imp.save(&pruned, &out, choice)
        .with_context(|| format!("writing {}", out.display()))?;

    stage(7, "bench (interleaved, original vs pruned)");
    let mut lat0 = Vec::new();
    let mut lat1 = Vec::new();
    for &b in &a.bench_batch {
        let mut sessions = vec![
            (
                a.model.display().to_string(),
                macs0,
                open_imported(&imp, &a.model, &opts)?,
                inputs::random_inputs(&g, b, 0)?,
            ),
            (
                out.display().to_string(),
                macs1,
                open(&out, &opts)?,
                inputs::random_inputs(&pruned, b, 0)?,
            ),
        ];
        for s in sessions.iter_mut() {
            s.1 *= b as u64;
        }
        let r = bench::interleaved(&mut sessions, b, 3, a.bench_iters)?;
        lat0.push(r[0].clone());
        lat1.push(r[1].clone());
    }

    stage(8, "report");
    let gate_values = gates
        .iter()
        .map(|gt| {
            let f = gate::factors(&trained, gt).unwrap_or_default();
            GateValues {
                name: gt.name.clone(),
                kind: gt.kind.as_str().into(),
                block: gt.block,
                values: f,
            }
        })
        .collect();
    let images = curve.iter().map(|r| r.images_per_s).sum::<f64>() / curve.len().max(1) as f64;
    let report_path = out.with_extension("json");
    let mut r = Report {
        tool: format!("sss-onnx {}", env!("CARGO_PKG_VERSION")),
        status: "ok".into(),
        runtime: runtime_name,
        settings: settings.clone(),
        data: serde_json::json!({
            "dir": data_dir, "name": test.name, "test_samples": test.len(), "preprocess": prep.describe(),
        }),
        original: ModelFigures {
            file: a.model.display().to_string(),
            file_bytes: file_bytes(&a.model),
            macs: macs0,
            params: params0,
            top1: acc0.top1,
            top5: acc0.top5,
            latency: lat0,
        },
        pruned: ModelFigures {
            file: out.display().to_string(),
            file_bytes: file_bytes(&out),
            macs: macs1,
            params: params1,
            top1: acc1.top1,
            top5: acc1.top5,
            latency: lat1,
        },
        macs_reduction: 1.0 - macs1 as f64 / macs0.max(1) as f64,
        params_reduction: 1.0 - params1 as f64 / params0.max(1) as f64,
        accuracy_drop_pt: (acc0.top1 - acc1.top1) * 100.0,
        pruning: prune_report,
        exactness: exact,
        training: Training {
            steps: cfg.steps,
            seconds: train_secs,
            images_per_s: images,
            final_gamma: curve.last().map(|c| c.gamma).unwrap_or(cfg.gamma),
            curve,
            gated_top1_candle: acc_gated_candle,
            gated_top1_runtime: acc_gated_rt.top1,
            locked_at,
            budget_zeroed,
            device,
            rewinds,
        },
        gates: gate_values,
        plots: vec![],
    };
    for (name, svg) in report::plots(&r) {
        let p = out.with_extension(format!("{name}.svg"));
        write_atomic(&p, svg.as_bytes())?;
        r.plots.push(p.display().to_string());
    }
    let json = serde_json::to_string_pretty(&r)?;
    write_atomic(&report_path, json.as_bytes())?;
    if a.json {
        println!("{json}");
    } else {
        print!("{}", report::markdown(&r));
    }
    if !a.keep_checkpoints {
        // everything in it is now in the outputs; a failed run keeps it
        std::fs::remove_dir_all(&ckpt)
            .with_context(|| format!("removing the checkpoint folder {}", ckpt.display()))?;
    }
    let mut written = vec![out.display().to_string()];
    if a.out
        .choice("compress")
        .external_data
        .unwrap_or(imp.external_data)
    {
        written.push(format!("{}.data", out.display()));
    }
    written.push(report_path.display().to_string());
    written.extend(r.plots.iter().cloned());
    if a.keep_checkpoints {
        written.push(format!("{} (checkpoints)", ckpt.display()));
    }
    eprintln!(
        "wrote {} in {:.0} s",
        written.join(", "),
        t_all.elapsed().as_secs_f64()
    );
    Ok(())
}
