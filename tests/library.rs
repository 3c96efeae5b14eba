//! The pipeline called from Rust, no command line: `compress::run` with
//! `Options::default()` changed only where a short test needs it, its
//! report checked against independent re-measurement (MACs recounted,
//! accuracy re-evaluated in tract, exactness re-validated in tract), the
//! stages reported through `Progress`, errors typed.

mod common;
use common::*;
use sss_onnx::compress::{self, BenchOptions, Options};
use sss_onnx::data::{self, Spec, Split};
use sss_onnx::measure::{accuracy, validate};
use sss_onnx::progress::Progress;
use sss_onnx::runtime::{self, Kind};
use sss_onnx::train::trainer::Record;
use std::sync::atomic::AtomicBool;

#[derive(Default)]
struct Log {
    stages: Vec<String>,
    records: usize,
}

impl Progress for Log {
    fn stage(&mut self, i: usize, of: usize, name: &str) {
        self.stages.push(format!("{i}/{of} {name}"));
    }
    fn record(&mut self, _r: &Record, _eta: &str) {
        self.records += 1;
    }
}

fn short(model: &std::path::Path, out: &std::path::Path) -> Options {
    let mut o = Options {
        model: Some(model.to_path_buf()),
        output: Some(out.to_path_buf()),
        target_macs: Some(0.8),
        keep_checkpoints: true,
        bench: BenchOptions {
            batch: vec![1],
            iters: 3,
            seconds: 10.0,
        },
        ..Options::default()
    };
    o.train.steps = Some(12);
    o.train.batch_size = Some(64);
    o.train.log_every = 4;
    o
}

#[test]
fn compress_from_the_library_matches_independent_remeasurement() {
    let d = tempfile::tempdir().unwrap();
    let model = fixture("resnet20_fmnist.legacy13.onnx");
    let out = d.path().join("lib.sss.onnx");
    let mut log = Log::default();
    let done = compress::run_with(&short(&model, &out), &mut log, &AtomicBool::new(false))
        .unwrap_or_else(|e| panic!("{e}"));
    let r = &done.report;
    assert_eq!(log.stages.len(), 8, "{:?}", log.stages);
    assert!(log.stages[0].starts_with("1/8 import"));
    assert_eq!(log.records, 3);
    assert_eq!(done.written[0], out);
    assert!(
        done.written.iter().all(|p| p.exists()),
        "{:?}",
        done.written
    );

    // MACs recounted from the written file
    let g = load(&out);
    let f = sss_onnx::graph::shape::infer_strict(&g, 1).unwrap();
    assert_eq!(r.pruned.macs, sss_onnx::graph::counts::count(&g, &f).macs);
    assert_eq!(r.original.macs, 40_551_040);
    let ratio = r.pruned.macs as f64 / r.original.macs as f64;
    assert!((ratio - 0.8).abs() <= 0.05, "{ratio}");

    // accuracy re-evaluated in tract (the report's runtime may be ORT)
    let tract = runtime::Options {
        kind: Kind::Tract,
        ..runtime::Options::default()
    };
    let (test, prep, input) =
        data::load_for(&fixture("fmnist"), Split::Test, &g, &Spec::default()).unwrap();
    let mut s = runtime::open_file(&out, &tract).unwrap();
    let acc = accuracy::evaluate(s.as_mut(), &input, &test, &prep, 100, None).unwrap();
    assert!(
        (acc.top1 - r.pruned.top1).abs() <= 0.002,
        "tract {} vs report {}",
        acc.top1,
        r.pruned.top1
    );
    // the bundled fixture's own accuracy, measured in PyTorch
    assert!(
        (r.original.top1 - 0.927).abs() < 1e-9,
        "{}",
        r.original.top1
    );

    // exactness re-validated in tract against the trained gated model
    let gated_path = out.with_extension("ckpt").join("gated.onnx");
    let gated = load_file(&gated_path);
    let mut sg = runtime::open(&gated_path, &tract).unwrap();
    let mut sp = runtime::open_file(&out, &tract).unwrap();
    let plan = validate::Check {
        pairing: None,
        random_batches: 2,
        batch: 4,
        seed: 9,
        real: Some((&test, &prep, 64)),
        atol: 1e-4,
        rtol: 1e-4,
    };
    let v = validate::validate(&gated, sg.as_mut(), sp.as_mut(), &plan).unwrap();
    assert!(v.passed, "{v:?}");

    check_plots(r);

    // the report embeds the recipe it ran with, and it reads back
    let back: Options = serde_json::from_value(r.recipe.clone()).unwrap();
    assert_eq!(back.train.steps, Some(12));
    assert_eq!(back.output.as_deref(), Some(out.as_path()));
}

#[test]
fn an_evaluation_limit_scores_a_spread_subset_in_small_batches() {
    let d = tempfile::tempdir().unwrap();
    let model = fixture("resnet20_fmnist.legacy13.onnx");
    let mut o = short(&model, &d.path().join("sub.sss.onnx"));
    o.train.steps = Some(4);
    o.eval.limit = Some(250);
    o.eval.batch = Some(7);
    let r = compress::run_with(&o, &mut sss_onnx::progress::Quiet, &AtomicBool::new(false))
        .unwrap_or_else(|e| panic!("{e}"))
        .report;
    assert_eq!(r.data.test_samples, 250);
    assert_eq!(r.data.test_split_samples, 1000);
    assert!(sss_onnx::report::markdown(&r).contains("250 of 1000 test samples"));
    // the original re-scored in tract on every 4th sample (all classes),
    // not the first 250
    let g = load(&model);
    let (test, prep, input) =
        data::load_for(&fixture("fmnist"), Split::Test, &g, &Spec::default()).unwrap();
    let picks: Vec<usize> = (0..250).map(|i| i * 4).collect();
    let sub = test.subset(&picks).unwrap();
    let tract = runtime::Options {
        kind: Kind::Tract,
        ..runtime::Options::default()
    };
    let mut s = runtime::open_file(&model, &tract).unwrap();
    let acc = accuracy::evaluate(s.as_mut(), &input, &sub, &prep, 50, None).unwrap();
    assert!(
        (acc.top1 - r.original.top1).abs() <= 0.004,
        "tract {} vs report {}",
        acc.top1,
        r.original.top1
    );
    let classes: std::collections::BTreeSet<u32> = sub.labels.iter().copied().collect();
    assert_eq!(classes.len(), 10);
}

#[test]
fn library_errors_are_typed() {
    let d = tempfile::tempdir().unwrap();
    // no model
    let e = compress::run(&Options::default()).unwrap_err();
    assert!(matches!(e, sss_onnx::Error::Invalid(_)), "{e:?}");
    // a target outside (0, 1)
    let mut o = short(
        &fixture("resnet20_fmnist.legacy13.onnx"),
        &d.path().join("x.onnx"),
    );
    o.target_macs = Some(1.5);
    assert!(compress::run(&o).unwrap_err().to_string().contains("1.5"));
    // a run stopped by its caller says where its checkpoint is
    let mut o = short(
        &fixture("resnet20_fmnist.legacy13.onnx"),
        &d.path().join("stopped.onnx"),
    );
    o.bench.iters = 1;
    let e =
        compress::run_with(&o, &mut sss_onnx::progress::Quiet, &AtomicBool::new(true)).unwrap_err();
    match e {
        sss_onnx::Error::Interrupted(msg) => assert!(msg.contains("stopped.ckpt"), "{msg}"),
        e => panic!("{e:?}"),
    }
    assert!(!d.path().join("stopped.onnx").exists());
}

/// The plots drawn, parsed as XML: one bar per residual block (kept or
/// deleted as the report says, kept heights in proportion), the curve with
/// a point per record, the target line and the lock.
fn check_plots(r: &sss_onnx::report::Report) {
    let read = |suffix: &str| {
        let p = r.plots.iter().find(|p| p.ends_with(suffix)).unwrap();
        std::fs::read_to_string(p).unwrap()
    };
    let gates = read(".gates.svg");
    let doc = roxmltree::Document::parse(&gates).unwrap();
    let class = |c: &str| -> Vec<roxmltree::Node> {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some(c))
            .collect()
    };
    let blocks = &r.pruning.blocks;
    assert_eq!(blocks.len(), 9);
    let deleted = blocks.iter().filter(|b| b.removed).count();
    assert_eq!(class("deleted").len(), deleted);
    assert_eq!(class("kept").len(), 9 - deleted);
    let h = |n: &roxmltree::Node| n.attribute("height").unwrap().parse::<f64>().unwrap();
    let (kept, original) = (class("kept"), class("original"));
    for (i, b) in blocks.iter().filter(|b| !b.removed).enumerate() {
        let want = b.kept as f64 / b.width as f64;
        let got = h(&kept[i]) / h(&original[i]);
        assert!(
            (got - want).abs() < 0.01,
            "block {}: {got} vs {want}",
            b.block
        );
    }
    assert!(gates.contains("stage 3") && gates.contains(&format!("{deleted} of 9 blocks deleted")));

    let curve = read(".curve.svg");
    let doc = roxmltree::Document::parse(&curve).unwrap();
    let find = |c: &str| doc.descendants().find(|n| n.attribute("class") == Some(c));
    let points = find("macs").unwrap().attribute("points").unwrap();
    assert_eq!(points.split_whitespace().count(), r.training.curve.len());
    assert!(find("target").is_some());
    assert_eq!(find("lock").is_some(), r.training.locked_at.is_some());
    assert!(curve.contains("training step") && curve.contains("train loss"));
}
