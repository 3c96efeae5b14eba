//! The latency table: its structure, its fit, its prediction against
//! recorded ONNX Runtime timings of pruned models, and the budget steering
//! by it. Timings themselves belong to `benches/latency_table.rs`; here the
//! recorded ones (`fixtures/latency/`, made by that bench with `--save`)
//! are the reference.

mod common;
use candle_core::Device;
use common::*;
use sss_onnx::cost::latency::{self as latency_table, Axis, LatencyTable};
use sss_onnx::cost::probe;
use sss_onnx::data::{self, Preprocess, Split};
use sss_onnx::gate;
use sss_onnx::graph::Graph;
use sss_onnx::prune::{plan, predict};
use sss_onnx::structure::GateKind;
use sss_onnx::train::feed::Augment;
use sss_onnx::train::model::Model;
use sss_onnx::train::schedule::{Kind, Schedule};
use sss_onnx::train::trainer::{Config, Trainer};
use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const KINDS: [GateKind; 3] = [GateKind::Channel, GateKind::Group, GateKind::Block];

fn recording() -> serde_json::Value {
    let p = fixture("latency/resnet20_fmnist_b32_t1.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn gated_resnet20() -> (Graph, Vec<gate::Gate>) {
    gate::insert(&load(&fixture("resnet20_fmnist.legacy13.onnx")), &KINDS).unwrap()
}

/// Every conv of `g` is in the table once, with the axis its place in a
/// residual branch gives it and a grid of the widths `widths` names.
fn check_structure(table: &LatencyTable, g: &Graph) {
    let convs: HashSet<&str> = g
        .nodes
        .iter()
        .filter(|n| n.op_type == "Conv")
        .map(|n| n.outputs[0].as_str())
        .collect();
    let listed: HashSet<&str> = table.convs.iter().map(|c| c.conv.as_str()).collect();
    assert_eq!(listed, convs);
    assert_eq!(table.convs.len(), convs.len());
    let p = plan::plan(g).unwrap();
    let axes = latency_table::axes(g, &p);
    for bp in &p.blocks {
        let n = bp.block.convs.len();
        for (i, bc) in bp.block.convs.iter().enumerate() {
            let want = match (i, i + 1 == n) {
                (0, true) => Axis::Fixed,
                (0, false) => Axis::Out,
                (_, true) => Axis::In,
                _ => Axis::Both,
            };
            assert_eq!(axes[&bc.conv], want, "{}", bc.conv);
        }
    }
    for c in &table.convs {
        assert_eq!(c.axis, axes[&c.conv], "{}", c.conv);
        let (a, b) = match c.axis {
            Axis::Fixed => (vec![c.cin], vec![c.cout]),
            Axis::In => (latency_table::widths(c.cin), vec![c.cout]),
            Axis::Out => (vec![c.cin], latency_table::widths(c.cout)),
            Axis::Both => (latency_table::widths(c.cin), latency_table::widths(c.cout)),
            Axis::Groups => (latency_table::widths(c.groups), vec![c.cout]),
        };
        assert_eq!((&c.a, &c.b), (&a, &b), "{}", c.conv);
        assert_eq!(c.ms.len(), a.len() * b.len());
        assert!(c.ms.iter().all(|&t| t > 0.0 && t.is_finite()), "{c:?}");
    }
    assert_eq!(table.calibration.len(), 3);
    assert!(table.fit.alpha > 0.0 && table.fit.beta >= 0.0 && table.fit.gamma >= 0.0);
}

#[test]
fn the_recorded_table_predicts_the_recorded_pruned_runs_within_10_percent() {
    let rec = recording();
    let table: LatencyTable = serde_json::from_value(rec["table"].clone()).unwrap();
    let (gated, gates) = gated_resnet20();
    check_structure(&table, &gated);
    assert_eq!(table.batch, 32);
    let cases = rec["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let mut g = gated.clone();
        for gt in &gates {
            let v: Vec<f32> = serde_json::from_value(case["gates"][&gt.name].clone()).unwrap();
            gate::set_factors(&mut g, gt, &v).unwrap();
        }
        let p = plan::plan(&g).unwrap();
        let predicted = table.ratio(&predict::conv_shapes(&g, &p));
        let (was, measured) = (
            case["predicted"].as_f64().unwrap(),
            case["measured"].as_f64().unwrap(),
        );
        // the prediction is a function of the table and the pattern alone
        assert!(
            (predicted - was).abs() < 1e-9,
            "{}: {predicted} vs {was}",
            case["case"]
        );
        // and it describes what ONNX Runtime did with the pruned model
        let err = predicted / measured - 1.0;
        assert!(
            err.abs() <= 0.10,
            "{}: predicted {predicted:.3}, measured {measured:.3}",
            case["case"]
        );
        assert!(predicted < 1.0);
    }
}

#[test]
fn the_fit_recovers_known_terms_and_refuses_what_it_cannot_separate() {
    // rows (Σ probes, Σ block elements, 1) of three models
    let rows = [[20.0, 8000.0, 1.0], [14.0, 8000.0, 1.0], [9.0, 3600.0, 1.0]];
    let (a, b, c) = (0.8, 2e-4, 0.5);
    let m = rows.map(|r| a * r[0] + b * r[1] + c * r[2]);
    let f = latency_table::solve3(rows, m).unwrap();
    assert!((f.alpha - a).abs() < 1e-9 && (f.beta - b).abs() < 1e-12 && (f.gamma - c).abs() < 1e-9);
    // two identical rows: singular
    let same = [[20.0, 8000.0, 1.0], [20.0, 8000.0, 1.0], [9.0, 3600.0, 1.0]];
    assert!(latency_table::solve3(same, [16.0, 16.0, 8.0]).is_none());
    // a negative per-element term is no model of a runtime
    let neg = rows.map(|r| a * r[0] - b * r[1] + 3.0);
    assert!(latency_table::solve3(rows, neg).is_none());
}

#[test]
fn a_table_measured_in_ort_has_every_conv_and_fits_its_original() {
    require_ort();
    let (gated, _) = gate::insert(&load(&fixture("resnet14_b.legacy13.onnx")), &KINDS).unwrap();
    let opts = sss_onnx::runtime::Options {
        threads: 1,
        ..ort()
    };
    let table = probe::measure(&gated, 2, &opts, |_| {}).unwrap();
    check_structure(&table, &gated);
    // whichever fit was possible, it reproduces the original's measured time
    let m0 = table.calibration[0].3;
    assert!(
        (table.model_ms() - m0).abs() <= 1e-9 * m0.max(1.0),
        "{} vs {m0}",
        table.model_ms()
    );
    // with every branch at full width the prediction is the original
    assert!((table.ratio(&Default::default()) - 1.0).abs() < 1e-12);
}

#[test]
fn the_budget_reaches_a_latency_target_by_the_table() {
    let table: LatencyTable = serde_json::from_value(recording()["table"].clone()).unwrap();
    let (gated, gates) = gated_resnet20();
    let ds = data::load(&fixture("fmnist"), Split::Train).unwrap();
    let (_, shape) = sss_onnx::graph::io::image_input(&gated).unwrap();
    let prep = Preprocess::plan(&ds, shape).unwrap();
    let cfg = Config {
        steps: 4,
        batch: 16,
        schedule: Schedule::new(Kind::Constant, 1e-5, 4, 0),
        weight_decay: 0.0,
        gamma: 0.0,
        seed: 5,
        augment: Augment::NONE,
        log_every: 100,
        checkpoint_every: 1000,
        target_macs: Some(0.6),
        lock_at: Some(0.5),
        budget_steps: 1,
        // channels and blocks ranked together: chunks of channels compete
        blocks_first: false,
        latency: Some(Arc::new(table)),
        ..Config::default()
    };
    let mut t = Trainer::new(Model::new(&gated, &Device::Cpu).unwrap(), cfg).unwrap();
    t.run(Arc::new(ds), &prep, &AtomicBool::new(false), &mut |_| {})
        .unwrap();
    let latency = t.implied_latency().unwrap().unwrap();
    let (macs, _, _) = t.implied().unwrap();
    assert!((0.57..=0.612).contains(&latency), "latency {latency}");
    // on this net a latency target is not a MAC target in disguise
    assert!(
        (macs - latency).abs() > 0.02,
        "MACs {macs}, latency {latency}"
    );
    // every channel gate left at a width the table timed
    let trained = t.model.write_back().unwrap();
    let mut thinned = 0;
    for gt in gates.iter().filter(|g| g.kind == GateKind::Channel) {
        let f = gate::factors(&trained, gt).unwrap();
        let alive = f.iter().filter(|&&v| v != 0.0).count();
        let w = latency_table::widths(gt.count);
        assert!(
            w.contains(&alive),
            "{}: {alive} of {} not in {w:?}",
            gt.name,
            gt.count
        );
        thinned += usize::from(alive < gt.count);
    }
    assert!(thinned > 0, "no channel chunk was taken");
}

#[test]
fn a_convnext_table_times_its_linear_layers_at_the_mlp_widths() {
    // the MLP's first Linear changes its outputs, the second its inputs:
    // both timed at the hidden widths a latency budget may leave, and a
    // deleted block takes their time with it
    require_ort();
    let (gated, _) =
        gate::insert(&load(&fixture("convnext_small.legacy17bn.onnx")), &KINDS).unwrap();
    let opts = sss_onnx::runtime::Options {
        threads: 1,
        ..ort()
    };
    let table = probe::measure(&gated, 2, &opts, |_| {}).unwrap();
    let p = plan::plan(&gated).unwrap();
    let mut linears = 0;
    for bp in &p.blocks {
        let c = &bp.block.convs;
        assert!(c[1].linear && c[2].linear, "{c:?}");
        for (bc, axis, hidden_on) in [(&c[1], Axis::Out, "b"), (&c[2], Axis::In, "a")] {
            let t = table
                .convs
                .iter()
                .find(|t| t.conv == bc.conv)
                .unwrap_or_else(|| panic!("{} not timed", bc.conv));
            assert_eq!(t.axis, axis, "{}", bc.conv);
            let hidden = c[1].out_channels;
            let grid = if hidden_on == "b" { &t.b } else { &t.a };
            assert_eq!(grid, &latency_table::widths(hidden), "{}", bc.conv);
            assert!(t.ms.iter().all(|&v| v > 0.0 && v.is_finite()));
            linears += 1;
        }
    }
    assert_eq!(linears, 2 * p.blocks.len());
    let m0 = table.calibration[0].3;
    assert!((table.model_ms() - m0).abs() <= 1e-9 * m0.max(1.0));
    // a deleted block's Linears count nothing
    let shapes = sss_onnx::prune::predict::conv_shapes(&gated, &p);
    let t = table
        .convs
        .iter()
        .find(|t| t.conv == p.blocks[5].block.convs[1].conv)
        .unwrap();
    let mut gone = shapes[t.conv.as_str()];
    gone.removed = true;
    assert_eq!(t.at(&gone), 0.0);
    assert!(t.at(&shapes[t.conv.as_str()]) > 0.0);
}

#[test]
fn a_latency_target_is_refused_where_attention_holds_the_time() {
    // a ViT's attention products (scores, values) and its Gemm
    // out-projections are 16 % of its MACs and are not timed: the table
    // would overshoot a target, so compress says so before training
    require_ort();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("vit.sss.onnx");
    let o = run(&[
        "compress",
        fixture("vit_tiny.legacy17.onnx").to_str().unwrap(),
        "--no-labels",
        "--target-latency",
        "0.7",
        "--steps",
        "4",
        "-o",
        out.to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("16 %") && e.contains("use --target-macs"), "{e}");
    assert!(!e.contains("[3/8]"), "it trained: {e}");
    assert!(!out.exists());
}
