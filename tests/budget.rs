//! The MAC budget of two-phase training: it deletes what the loss does not
//! need (Taylor ranking), reaches its target, and what it deletes stays
//! deleted through the fine-tuning.

mod common;
use candle_core::Device;
use common::*;
use sss_onnx::data::{self, Preprocess, Split};
use sss_onnx::gate;
use sss_onnx::graph::Tensor;
use sss_onnx::structure::{self, GateKind};
use sss_onnx::train::feed::Augment;
use sss_onnx::train::model::Model;
use sss_onnx::train::schedule::{Kind, Schedule};
use sss_onnx::train::trainer::{Config, Selection, Trainer};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn config(steps: usize, target: f64, blocks_first: bool) -> Config {
    Config {
        steps,
        batch: 32,
        schedule: Schedule::new(Kind::Constant, 1e-5, steps, 0),
        weight_decay: 0.0,
        gamma: 0.0,
        seed: 5,
        augment: Augment::NONE,
        log_every: 100,
        checkpoint_every: 1000,
        target_macs: Some(target),
        lock_at: Some(0.5),
        budget_steps: 1,
        blocks_first,
        ..Config::default()
    }
}

/// Block 4's branch made to output exactly 0 (its last conv's weight and
/// bias zeroed): its gates then get no gradient, so their first-order
/// importance is 0, although their values (1) are the largest. Returns the
/// gates' factors after a run whose 0.9 MAC target needs one block's worth.
fn train_with_a_dead_block(blocks_first: bool) -> (Vec<(gate::Gate, Vec<f32>)>, f64) {
    let mut g = load(&fixture("resnet20_fmnist.legacy13.onnx"));
    let dead = DEAD;
    let a = structure::analyse(&g);
    let last = a.blocks[dead].convs.last().unwrap().conv_name.clone();
    let node = g.nodes.iter().find(|n| n.name == last).unwrap().clone();
    for input in node.inputs.iter().skip(1) {
        if let Some(Tensor::F32(t)) = g.initializers.get_mut(input) {
            t.fill(0.0);
        }
    }
    let (gated, gates) = gate::insert(&g, &[GateKind::Channel, GateKind::Block]).unwrap();
    let ds = data::load(&fixture("fmnist"), Split::Train).unwrap();
    let (_, shape) = sss_onnx::graph::io::image_input(&gated).unwrap();
    let prep = Preprocess::plan(&ds, shape).unwrap();
    // one block is ~11 % of the MACs: a 0.9 target needs exactly one
    let cfg = config(6, 0.9, blocks_first);
    let mut t = Trainer::new(Model::new(&gated, &Device::Cpu).unwrap(), cfg).unwrap();
    t.run(Arc::new(ds), &prep, &AtomicBool::new(false), &mut |_| {})
        .unwrap();
    let trained = t.model.write_back().unwrap();
    assert_eq!(t.locked_at, Some(3));
    let (ratio, _, _) = t.implied().unwrap();
    let factors = gates
        .into_iter()
        .map(|gt| {
            let f = gate::factors(&trained, &gt).unwrap();
            (gt, f)
        })
        .collect();
    (factors, ratio)
}

const DEAD: usize = 4;

fn zeros(f: &[f32]) -> usize {
    f.iter().filter(|&&v| v == 0.0).count()
}

#[test]
fn the_taylor_budget_deletes_what_the_loss_does_not_need() {
    let (factors, ratio) = train_with_a_dead_block(false);
    // everything deleted belongs to the dead block (its gate, or its
    // channels, which score 0 alike); nothing else is touched
    let mut deleted = 0;
    for (gt, f) in &factors {
        if gt.block == DEAD {
            deleted += zeros(f);
        } else {
            assert_eq!(zeros(f), 0, "{} lost {} factors", gt.name, zeros(f));
        }
    }
    assert!(deleted > 0);
    assert!((0.855..=0.918).contains(&ratio), "{ratio}");
}

#[test]
fn blocks_first_deletes_the_dead_block_whole_and_no_channel() {
    let (factors, ratio) = train_with_a_dead_block(true);
    for (gt, f) in &factors {
        let want = usize::from(gt.kind == GateKind::Block && gt.block == DEAD);
        assert_eq!(zeros(f), want, "{}: {f:?}", gt.name);
    }
    assert!((0.855..=0.918).contains(&ratio), "{ratio}");
}

#[test]
fn the_default_budget_scales_and_the_eta_is_time_left() {
    use sss_onnx::train::schedule::{default_steps, eta, DEFAULT_MAX_STEPS};
    // the bundled 4000 images: 8 epochs of 31 steps
    assert_eq!(default_steps(4000, 128), 248);
    // a full 60 000-image training set would be 3 750: capped
    assert_eq!(default_steps(60_000, 128), DEFAULT_MAX_STEPS);
    assert_eq!(eta(100, 128, 128.0), "1:40");
    assert_eq!(eta(10, 128, 1280.0), "0:01");
    assert_eq!(eta(10, 128, 0.0), "?");
    assert_eq!(eta(10, 128, f64::NAN), "?");
}

/// The paper's mechanism doing the selecting: no budget step, only γ
/// steered by the MACs the zero pattern implies (and where the gates are
/// heading) until APG's own exact zeros reach the target; then the lock.
#[test]
fn the_gamma_controller_reaches_a_mac_target_without_budget_cuts() {
    let g = load(&fixture("resnet20_fmnist.legacy13.onnx"));
    let ds = data::load(&fixture("fmnist"), Split::Train).unwrap();
    let (input, shape) = sss_onnx::graph::io::image_input(&g).unwrap();
    let prep = Preprocess::plan(&ds, shape).unwrap();
    // BatchNorm back, as `compress` does for folded exports: without it
    // γ's shrinkage of every gate at once scales the signal down block
    // after block and the loss runs away
    let (g, _) = sss_onnx::bn_restore::restore(&g, &ds, &prep, &input, &tract(), 256, 64).unwrap();
    let (gated, _) = gate::insert(&g, &[GateKind::Channel, GateKind::Block]).unwrap();
    let steps = 150;
    let cfg = Config {
        steps,
        batch: 16,
        schedule: Schedule::new(Kind::Constant, 1e-3, steps, 0),
        weight_decay: 0.0,
        gamma: 1e-2,
        gate_lr: Some(0.5),
        seed: 5,
        augment: Augment::NONE,
        log_every: 10,
        checkpoint_every: 10_000,
        target_macs: Some(0.7),
        lock_at: Some(0.8),
        selection: Selection::Gamma,
        ..Config::default()
    };
    let mut t = Trainer::new(Model::new(&gated, &Device::Cpu).unwrap(), cfg).unwrap();
    let mut curve = Vec::new();
    t.run(Arc::new(ds), &prep, &AtomicBool::new(false), &mut |r| {
        curve.push((r.step, r.gamma, r.macs_ratio, r.rewinds, r.lr, r.zero_gates))
    })
    .unwrap();
    let (ratio, zeros, _) = t.implied().unwrap();
    assert_eq!(t.budget_zeroed, 0, "the budget cut: {curve:?}");
    // locked when APG's zeros reached the target, before the lock was due
    assert!(
        t.locked_at.is_some_and(|l| l < 120),
        "{:?}: {curve:?}",
        t.locked_at
    );
    assert!(zeros > 0);
    assert!((ratio - 0.7).abs() <= 0.05 * 0.7, "MACs {ratio}: {curve:?}");
    // γ was steered, not left where it started
    let (lo, hi) = curve
        .iter()
        .fold((f64::MAX, 0f64), |(l, h), c| (l.min(c.1), h.max(c.1)));
    assert!(hi / lo > 2.0, "{curve:?}");
}
