//! `compress`'s stages, one function each, passing plain values along.

use super::accept;
use super::options::Resolved;
use super::{Outcome, RestoreBn};
use crate::batching;
use crate::bn_restore;
use crate::cost::latency::LatencyTable;
use crate::cost::probe;
use crate::cost::Cost;
use crate::data::{self, bundled, Dataset, Preprocess, Sizing, Split};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::gate::{self, Gate};
use crate::graph::{counts, shape, Graph};
use crate::measure::accuracy::{self, Accuracy};
use crate::measure::bench::{self, Latency};
use crate::measure::{fidelity, inputs, validate};
use crate::onnx::convert;
use crate::onnx::import::{self, Imported, WriteChoice};
use crate::onnx::WriteOptions;
use crate::progress::Progress;
use crate::prune::{self, PruneReport};
use crate::report::{
    self, DataSummary, GateValues, LatencyTarget, ModelFigures, Report, Settings, Training,
};
use crate::runtime::{self, Session};
use crate::train::fit::{self, TrainData, Trained};
use crate::train::options::Unset;
use crate::train::{model::Model, scoring};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// The original model and the figures everything is compared with.
pub struct Source {
    pub imp: Imported,
    pub data_dir: PathBuf,
    /// The test samples scored (a spread subset of a large split).
    pub test: Dataset,
    /// How many the split holds.
    pub test_split_samples: usize,
    pub prep: Preprocess,
    pub input: String,
    /// Samples per evaluation batch (bounded activation memory).
    pub eval_batch: usize,
    /// Classes scored: the data's or the model's outputs, whichever is more.
    pub classes: usize,
    /// No labels read: the test samples carry the original's top-1 as
    /// their labels, so every accuracy is agreement with it.
    pub label_free: bool,
    /// For a model whose output is not a classifier's scores: the
    /// original's channel maps on the test samples, which every later
    /// score is agreement with (`measure::fidelity`).
    pub maps: Option<Vec<Vec<u32>>>,
    pub runtime: runtime::Options,
    pub runtime_name: String,
    pub macs: u64,
    pub params: u64,
    pub accuracy: Accuracy,
}

/// The progress line before an evaluation.
fn scoring(what: &str, test: &Dataset, batch: usize) -> String {
    format!(
        "scoring {what} on {} test samples, {batch} at a time",
        test.len()
    )
}

/// MACs and parameters at batch 1.
fn counts(g: &Graph) -> Result<(u64, u64)> {
    let c = counts::count(g, &shape::infer_strict(g, 1)?);
    Ok((c.macs, c.params))
}

/// The bundled subset, when the model's input fits it: the same size or a
/// small pad (28×28 into ≤ 36×36); a model for 64×64 or 224×224 images
/// would learn nothing useful from it.
fn check_bundled_fit(classes: Option<usize>, test: &Dataset, prep: &Preprocess) -> Result<()> {
    let small_pad = prep.to[1] <= prep.from[1] + 8 && prep.to[2] <= prep.from[2] + 8;
    // a model without class scores learns from itself on the images
    let other_classes = classes.is_some_and(|k| k != test.classes);
    if prep.sizing == Sizing::Resize || !small_pad || other_classes {
        let classes = classes.unwrap_or(0);
        return Err(Error::Invalid(format!(
            "no data given, and the model's input {:?} / {classes} classes does not fit the bundled Fashion-MNIST subset (1×28×28, 10 classes): pass --data DIR (or `data` in the recipe)",
            prep.to
        )));
    }
    Ok(())
}

pub fn import(plan: &Resolved, progress: &mut dyn Progress) -> Result<Source> {
    let path = &plan.model;
    let imp = import::import(path)?;
    for n in imp.notes(path) {
        progress.note(&n);
    }
    crate::measure::rebatch::check(&imp, path)?;
    let g = &imp.graph;
    // an op training cannot lower fails now, not after the BN statistics
    crate::train::model::check_trainable(g).map_err(|e| Error::InModel {
        path: path.clone(),
        source: Box::new(e),
    })?;
    let data_dir = match &plan.opts.data {
        Some(d) => d.clone(),
        None => {
            bundled::find().map_err(|why| Error::Invalid(format!("no data given and {why}")))?
        }
    };
    let (test, prep, input) = data::load_for(&data_dir, Split::Test, g, &plan.opts.preprocess)?;
    // the first output's shape, inferred once: [N, classes] for a
    // classifier, anything else for a model learning from itself
    let out_shape = crate::graph::io::output_shape(g);
    let model_classes = match out_shape.as_deref() {
        Some(&[_, k]) => Some(k),
        _ => None,
    };
    let scores = out_shape.as_ref().is_none_or(|s| s.len() == 2);
    let label_free = plan.opts.train.no_labels || !test.labelled || !scores;
    let (macs, params) = counts(g)?;
    let test_split_samples = test.len();
    let (mut test, note) = batching::scored_subset(test, macs, &plan.opts.eval)?;
    if let Some(n) = note {
        progress.note(&n);
    }
    let eval_batch = batching::eval_batch(g, plan.opts.eval.batch);
    if plan.opts.data.is_none() {
        check_bundled_fit(model_classes, &test, &prep)?;
        progress.note(&format!(
            "data: none given; using the bundled {}",
            test.name
        ));
    }
    let (kind, note) = runtime::resolve(plan.opts.runtime.kind);
    if let Some(n) = note {
        progress.note(&format!("note: {n}"));
    }
    let rt = runtime::Options {
        kind,
        ..plan.opts.runtime.clone()
    };
    let mut s0 = runtime::open_imported(&imp, path, &rt)?;
    let runtime_name = s0.describe();
    progress.note(&scoring("the original", &test, eval_batch));
    let mut maps = None;
    let acc = if !scores {
        // every later score: agreement with these maps
        test.drop_labels();
        maps = Some(fidelity::maps(
            s0.as_mut(),
            &input,
            &test,
            &prep,
            eval_batch,
        )?);
        progress.note(&format!(
            "the output is not a classifier's scores: the held-out figures are agreement with the original's largest output channel at every position, on {} images",
            test.len()
        ));
        Accuracy::of_itself(test.len(), &prep)
    } else if label_free {
        // the original's top-1 becomes the held-out labels: every later
        // score is agreement with it
        test.drop_labels();
        let (labels, k) = accuracy::predictions(s0.as_mut(), &input, &test, &prep, eval_batch)?;
        test.set_labels(labels, k);
        progress.note(&format!(
            "no labels read: the held-out figures are top-1 agreement with the original on {} images",
            test.len()
        ));
        Accuracy::of_itself(test.len(), &prep)
    } else {
        accuracy::evaluate(s0.as_mut(), &input, &test, &prep, eval_batch, None)?
    };
    progress.note(&format!(
        "original: {:.2} M MACs, {params} params, top-1 {:.2}% ({runtime_name})",
        macs as f64 / 1e6,
        acc.top1 * 100.0
    ));
    // the model may score more classes than the data holds; maps have
    // their channels
    let channels = out_shape.as_ref().and_then(|s| s.get(1).copied());
    let classes = match &maps {
        Some(_) => channels.unwrap_or(2),
        None => test.classes.max(model_classes.unwrap_or(0)),
    }
    .max(2);
    if !label_free {
        accept::original_scores(path, &data_dir, acc.top1, classes, &prep.describe())?;
    }
    Ok(Source {
        imp,
        data_dir,
        test,
        test_split_samples,
        prep,
        input,
        eval_batch,
        classes,
        label_free,
        maps,
        runtime: rt,
        runtime_name,
        macs,
        params,
        accuracy: acc,
    })
}

/// The gated model and what training needs with it.
pub struct Gated {
    pub graph: Graph,
    pub gates: Vec<Gate>,
    /// Whether BatchNorm was restored (and must be folded back).
    pub restored_bn: bool,
    /// The training split, when the BN statistics already loaded it.
    pub train_split: Option<(Dataset, Preprocess)>,
    /// The latency table a latency target steers by.
    pub latency: Option<Arc<LatencyTable>>,
}

pub fn gate(plan: &Resolved, src: &Source, progress: &mut dyn Progress) -> Result<Gated> {
    let g = &src.imp.graph;
    let restore = match plan.opts.restore_bn {
        RestoreBn::Auto => bn_restore::is_bn_folded(g),
        RestoreBn::On => true,
        RestoreBn::Off => false,
    };
    let mut train_split = None;
    let base = if restore {
        let (train, tprep, tin) =
            data::load_for(&src.data_dir, Split::Train, g, &plan.opts.preprocess)?;
        // 512 images, fewer for large models (the same MAC bound as the
        // re-estimation after training)
        let samples = batching::recalibration_samples(src.macs)
            .min(512)
            .min(train.len());
        let (b, n) = bn_restore::restore(
            g,
            &train,
            &tprep,
            &tin,
            &src.runtime,
            samples,
            src.eval_batch.min(64),
        )?;
        progress.note(&format!(
            "BatchNorm restored after {n} convs (statistics of {samples} training images; folded back before writing)"
        ));
        train_split = Some((train, tprep));
        b
    } else {
        g.clone()
    };
    let (graph, gates) = gate::insert(&base, &plan.opts.structures)?;
    progress.note(&format!(
        "{} gate tensors, {} factors",
        gates.len(),
        gates.iter().map(|g| g.count).sum::<usize>()
    ));
    let latency = match plan.opts.target_latency {
        Some(_) if !gates.is_empty() => {
            progress.note(&format!(
                "timing every conv at a few widths in ONNX Runtime (batch {}) for the latency target",
                plan.opts.latency_batch
            ));
            let t = probe::measure(
                &graph,
                plan.opts.latency_batch,
                &latency_runtime(plan, src),
                |n| progress.note(n),
            )?;
            Some(Arc::new(t))
        }
        _ => None,
    };
    Ok(Gated {
        graph,
        gates,
        restored_bn: restore,
        train_split,
        latency,
    })
}

/// The trained gated model, and how long training took.
pub struct TrainedRun {
    pub run: Trained,
    pub seconds: f64,
    pub gated_path: PathBuf,
}

pub fn train(
    plan: &Resolved,
    src: &Source,
    gated: &mut Gated,
    progress: &mut dyn Progress,
    stop: &AtomicBool,
) -> Result<TrainedRun> {
    let mut t = plan.opts.train.clone();
    if t.lock_at.is_none() {
        // with a target most of the run is fine-tuning after the budget's
        // deletions (0.3 kept more accuracy than 0.5: docs/notebook/budget.md)
        t.lock_at = Some(if plan.opts.target().is_some() {
            0.3
        } else {
            0.5
        });
    }
    t.checkpoint_dir = Some(plan.checkpoints.clone());
    t.no_labels |= src.label_free;
    let data = match gated.train_split.take() {
        Some(loaded) => TrainData::Loaded(Box::new(loaded)),
        None => TrainData::Load(&src.data_dir, &plan.opts.preprocess),
    };
    let started = Instant::now();
    let run = fit::fit(
        &gated.graph,
        data,
        &t,
        Unset::Capped,
        fit::Target {
            fraction: plan.opts.target(),
            latency: gated.latency.clone(),
        },
        progress,
        stop,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let gated_path = plan.checkpoints.join("gated.onnx");
    convert::save(&run.graph, &gated_path, &WriteOptions::default())?;
    Ok(TrainedRun {
        run,
        seconds,
        gated_path,
    })
}

/// The pruned model.
pub struct Pruned {
    pub graph: Graph,
    pub report: PruneReport,
    pub path: PathBuf,
}

pub fn prune(
    plan: &Resolved,
    gated: &Gated,
    trained: &TrainedRun,
    progress: &mut dyn Progress,
) -> Result<Pruned> {
    let (mut graph, report) = prune::prune(&trained.run.graph)?;
    if gated.restored_bn {
        let n = bn_restore::fold_back(&mut graph)?;
        progress.note(&format!(
            "{n} restored BatchNorms folded back into their convs"
        ));
    }
    let path = plan.checkpoints.join("pruned.onnx");
    convert::save(&graph, &path, &WriteOptions::default())?;
    Ok(Pruned {
        graph,
        report,
        path,
    })
}

/// The exactness check and the sessions it opened.
pub struct Checked {
    pub validation: validate::Validation,
    pub gated: Box<dyn Session>,
    pub pruned: Box<dyn Session>,
}

pub fn validate(
    plan: &Resolved,
    src: &Source,
    trained: &TrainedRun,
    pruned: &Pruned,
    progress: &mut dyn Progress,
) -> Result<Checked> {
    // both written with a symbolic batch: the runtime opens the files
    let mut sg = runtime::open(&trained.gated_path, &src.runtime)?;
    let mut sp = runtime::open(&pruned.path, &src.runtime)?;
    let check = validate::Check {
        pairing: None,
        random_batches: 4,
        batch: 8,
        seed: 1,
        real: Some((&src.test, &src.prep, 256)),
        atol: 1e-4,
        rtol: 1e-4,
    };
    let v = validate::validate(&trained.run.graph, sg.as_mut(), sp.as_mut(), &check)?;
    let worst = accept::exact(plan, &v)?;
    progress.note(&format!("exact: max abs diff {worst:.2e}"));
    Ok(Checked {
        validation: v,
        gated: sg,
        pruned: sp,
    })
}

/// Accuracy and size of the pruned model.
pub struct Scored {
    pub validation: validate::Validation,
    pub gated_top1_runtime: f64,
    pub gated_top1_candle: f64,
    pub accuracy: Accuracy,
    pub macs: u64,
    pub params: u64,
}

pub fn score(
    plan: &Resolved,
    src: &Source,
    trained: &TrainedRun,
    pruned: &Pruned,
    mut checked: Checked,
    progress: &mut dyn Progress,
) -> Result<Scored> {
    let (test, prep, input, batch) = (&src.test, &src.prep, &src.input, src.eval_batch);
    progress.note(&scoring(
        "the gated model (runtime, candle) and the pruned one",
        test,
        batch,
    ));
    let candle = Model::new(&trained.run.graph, &candle_core::Device::Cpu)?;
    let (gated_rt, gated_candle, acc) = match &src.maps {
        Some(reference) => {
            let agree = |maps: Vec<Vec<u32>>| {
                let a = fidelity::agreement(&maps, reference);
                Accuracy {
                    samples: test.len(),
                    top1: a,
                    top5: a,
                    preprocess: prep.describe(),
                }
            };
            let of = |s: &mut dyn Session| fidelity::maps(s, input, test, prep, batch);
            let g = agree(of(checked.gated.as_mut())?);
            let p = agree(of(checked.pruned.as_mut())?);
            let c = agree(scoring::maps(&candle, test, prep, batch)?).top1;
            (g, c, p)
        }
        None => (
            accuracy::evaluate(checked.gated.as_mut(), input, test, prep, batch, None)?,
            scoring::top1(&candle, test, prep, batch, None)?,
            accuracy::evaluate(checked.pruned.as_mut(), input, test, prep, batch, None)?,
        ),
    };
    progress.note(&format!(
        "pruned: top-1 {:.2}% (gated: {:.2}% runtime, {:.2}% candle)",
        acc.top1 * 100.0,
        gated_rt.top1 * 100.0,
        gated_candle * 100.0
    ));
    let (macs, params) = counts(&pruned.graph)?;
    accept::outcome(
        plan,
        (src.macs, macs),
        (src.accuracy.top1, acc.top1),
        src.classes,
    )?;
    Ok(Scored {
        validation: checked.validation,
        gated_top1_runtime: gated_rt.top1,
        gated_top1_candle: gated_candle,
        accuracy: acc,
        macs,
        params,
    })
}

/// The latency target, the table's prediction for the trained pattern and
/// how the table was made (`None` without a latency target).
fn latency_target(plan: &Resolved, gated: &Gated, trained: &TrainedRun) -> Option<LatencyTarget> {
    let (Some(target), Some(table)) = (plan.opts.target_latency, &gated.latency) else {
        return None;
    };
    let cost = crate::cost::Latency {
        table: table.clone(),
    };
    Some(LatencyTarget {
        target,
        batch: table.batch,
        threads: table.threads,
        predicted: cost.ratio(&trained.run.graph).ok(),
        measured: None,
        original_ms: table.model_ms(),
        fit: table.fit,
        calibration: table.calibration.clone(),
        timed_convs: table.convs.len(),
        seconds: table.seconds,
    })
}

/// The settings the run resolved (what the report and the model's
/// metadata state beside the recipe).
fn settings(plan: &Resolved, gated: &Gated, trained: &TrainedRun) -> Settings {
    let cfg = &trained.run.cfg;
    Settings {
        structures: plan
            .opts
            .structures
            .iter()
            .map(|k| k.as_str().to_string())
            .collect(),
        target_macs: plan
            .opts
            .target_macs
            .filter(|_| plan.opts.target_latency.is_none()),
        latency_target: latency_target(plan, gated, trained),
        gamma_start: cfg.gamma,
        gate_optimizer: cfg.gate_optimizer,
        gate_lr: cfg.gate_lr,
        lock_at: cfg.lock_at,
        rank: cfg.rank,
        budget_steps: cfg.budget_steps,
        selection: cfg.selection,
        blocks_first: cfg.blocks_first,
        steps: cfg.steps,
        batch_size: cfg.batch,
        lr: cfg.schedule.base,
        schedule: cfg.schedule.kind,
        momentum: cfg.momentum,
        weight_decay: cfg.weight_decay,
        seed: cfg.seed,
        augment: format!("{:?}", cfg.augment),
        threads: plan.opts.runtime.threads,
        restore_bn: gated.restored_bn,
        preprocess: plan.opts.preprocess.clone(),
    }
}

/// Writes the pruned model (only once it is accepted).
pub fn write_model(plan: &Resolved, src: &Source, pruned: &Pruned) -> Result<()> {
    let choice = WriteChoice {
        command: "compress",
        recipe: Some(super::recipe::to_toml(&plan.opts)),
        dynamic_batch: plan.opts.write.dynamic_batch,
        external_data: plan.opts.write.external_data,
    };
    src.imp.save(&pruned.graph, &plan.output, choice)
}

/// Latency of the original and the pruned model, interleaved, per batch.
pub struct Latencies {
    pub original: Vec<Latency>,
    pub pruned: Vec<Latency>,
    /// With a latency target: the pruned model's p50 over the original's
    /// at the target's batch and threads.
    pub target_measured: Option<f64>,
}

/// The runtime a latency target is timed on: the run's, at the target's
/// thread count.
fn latency_runtime(plan: &Resolved, src: &Source) -> runtime::Options {
    runtime::Options {
        threads: plan.opts.latency_threads,
        ..src.runtime.clone()
    }
}

pub fn bench(
    plan: &Resolved,
    src: &Source,
    pruned: &Pruned,
    macs_pruned: u64,
) -> Result<Latencies> {
    let mut out = Latencies {
        original: vec![],
        pruned: vec![],
        target_measured: None,
    };
    let mut runs: Vec<(usize, runtime::Options)> = plan
        .opts
        .bench
        .batch
        .iter()
        .map(|&b| (b, src.runtime.clone()))
        .collect();
    if plan.opts.target_latency.is_some() {
        runs.push((plan.opts.latency_batch, latency_runtime(plan, src)));
    }
    let n_bench = plan.opts.bench.batch.len();
    for (k, (b, rt)) in runs.into_iter().enumerate() {
        let mut sessions = vec![
            (
                plan.model.display().to_string(),
                src.macs * b as u64,
                runtime::open_imported(&src.imp, &plan.model, &rt)?,
                inputs::random_inputs(&src.imp.graph, b, 0)?,
            ),
            (
                plan.output.display().to_string(),
                macs_pruned * b as u64,
                runtime::open_file(&plan.output, &rt)?,
                inputs::random_inputs(&pruned.graph, b, 0)?,
            ),
        ];
        let limit = std::time::Duration::from_secs_f64(plan.opts.bench.seconds.max(0.0));
        let r = bench::interleaved(&mut sessions, b, 3, plan.opts.bench.iters, Some(limit))?;
        if k >= n_bench {
            out.target_measured = Some(r[1].p50_ms / r[0].p50_ms.max(1e-12));
            break;
        }
        out.original.push(r[0].clone());
        out.pruned.push(r[1].clone());
    }
    Ok(out)
}

/// The loss a run optimised, in words.
fn objective(cfg: &crate::train::trainer::Config, scores: bool) -> String {
    let t = cfg.distill_temperature;
    if !scores {
        "matching the original's outputs (squared error relative to their size); no labels read"
            .into()
    } else if cfg.label_free {
        format!("distillation from the original (softened-softmax KL, T = {t}); no labels read")
    } else if cfg.distill > 0.0 {
        format!(
            "cross-entropy on the labels ({:.2}) + distillation from the original ({:.2}, T = {t})",
            1.0 - cfg.distill.min(1.0),
            cfg.distill.min(1.0)
        )
    } else {
        "cross-entropy on the labels".into()
    }
}

/// A model file's size with its external data.
fn file_bytes(p: &Path) -> u64 {
    let data = crate::onnx::io::external_data_path(p);
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0)
}

/// One model's figures in the report.
fn figures(
    path: &Path,
    (macs, params): (u64, u64),
    acc: &Accuracy,
    latency: Vec<Latency>,
) -> ModelFigures {
    ModelFigures {
        file: path.display().to_string(),
        file_bytes: file_bytes(path),
        macs,
        params,
        top1: acc.top1,
        top5: acc.top5,
        latency,
    }
}

pub fn report(
    plan: &Resolved,
    src: &Source,
    gated: &Gated,
    trained: TrainedRun,
    pruned: Pruned,
    scored: Scored,
    latency: Latencies,
) -> Result<Outcome> {
    let gates = gated
        .gates
        .iter()
        .map(|gt| GateValues {
            name: gt.name.clone(),
            kind: gt.kind.as_str().into(),
            block: gt.block,
            values: gate::factors(&trained.run.graph, gt).unwrap_or_default(),
        })
        .collect();
    let mut settings = settings(plan, gated, &trained);
    if let Some(lt) = settings.latency_target.as_mut() {
        lt.measured = latency.target_measured;
    }
    let run = trained.run;
    let curve = run.records;
    let images = curve.iter().map(|r| r.images_per_s).sum::<f64>() / curve.len().max(1) as f64;
    let (acc0, acc1) = (&src.accuracy, &scored.accuracy);
    let mut r = Report {
        tool: format!("sss-onnx {}", env!("CARGO_PKG_VERSION")),
        status: "ok".into(),
        runtime: src.runtime_name.clone(),
        recipe: serde_json::to_value(&plan.opts).unwrap_or_default(),
        settings,
        data: DataSummary {
            dir: src.data_dir.clone(),
            name: src.test.name.clone(),
            test_samples: src.test.len(),
            test_split_samples: src.test_split_samples,
            preprocess: src.prep.describe(),
            labelled: !src.label_free,
            metric: if src.maps.is_some() {
                "agreement with the original (largest output channel per position)"
            } else if src.label_free {
                "top-1 agreement with the original"
            } else {
                "top-1 accuracy"
            }
            .into(),
        },
        original: figures(&plan.model, (src.macs, src.params), acc0, latency.original),
        pruned: figures(
            &plan.output,
            (scored.macs, scored.params),
            acc1,
            latency.pruned,
        ),
        macs_reduction: 1.0 - scored.macs as f64 / src.macs.max(1) as f64,
        params_reduction: 1.0 - scored.params as f64 / src.params.max(1) as f64,
        accuracy_drop_pt: (acc0.top1 - acc1.top1) * 100.0,
        pruning: pruned.report,
        exactness: scored.validation,
        training: Training {
            objective: objective(&run.cfg, src.maps.is_none()),
            steps: run.cfg.steps,
            seconds: trained.seconds,
            images_per_s: images,
            final_gamma: curve.last().map(|c| c.gamma).unwrap_or(run.cfg.gamma),
            curve,
            gated_top1_candle: scored.gated_top1_candle,
            gated_top1_runtime: scored.gated_top1_runtime,
            locked_at: run.locked_at,
            budget_zeroed: run.budget_zeroed,
            device: run.device,
            rewinds: run.rewinds,
        },
        gates,
        plots: vec![],
    };
    let mut written = vec![plan.output.clone()];
    if plan
        .opts
        .write
        .external_data
        .unwrap_or(src.imp.external_data)
    {
        written.push(crate::onnx::io::external_data_path(&plan.output));
    }
    for (name, svg) in report::plots(&r) {
        let p = plan.output.with_extension(format!("{name}.svg"));
        write_atomic(&p, svg.as_bytes())?;
        r.plots.push(p.display().to_string());
        written.push(p);
    }
    let report_path = plan.output.with_extension("json");
    let json = serde_json::to_string_pretty(&r)
        .map_err(|e| Error::Invalid(format!("the report could not be written: {e}")))?;
    write_atomic(&report_path, json.as_bytes())?;
    written.insert(1, report_path);
    if plan.opts.keep_checkpoints {
        written.push(plan.checkpoints.clone());
    } else {
        // everything in it is now in the outputs; a refused run keeps it
        std::fs::remove_dir_all(&plan.checkpoints).map_err(|e| Error::io(&plan.checkpoints, e))?;
    }
    Ok(Outcome { report: r, written })
}
