//! Gating and pruning over every fixture: random gate values with random
//! exact zeros (single channels and groups, whole blocks, whole stages, every
//! channel of a branch) → the pruned model computes what the gated model
//! computes, in ONNX Runtime and in tract, on random and real inputs; the
//! counts equal the prediction from the zero pattern.

mod common;
use common::*;
use rand::{Rng, SeedableRng};
use sss_onnx::gate::{self, Gate};
use sss_onnx::graph::Graph;
use sss_onnx::measure::inputs::normal;
use sss_onnx::onnx::convert;
use sss_onnx::prune::{self, PruneReport};
use sss_onnx::structure::{GateKind, Shortcut};
use std::path::Path;

const ALL: [GateKind; 3] = [GateKind::Channel, GateKind::Group, GateKind::Block];

#[derive(Clone, Copy, Debug)]
enum Pattern {
    /// each factor 0 with probability p, else in [0.2, 1.5)
    Random(f64),
    /// every block gate of one stage 0
    Stage(usize),
    /// every channel/group factor of block `b`'s first gated conv 0
    EmptyBranch(usize),
    /// the even factors of every squeeze-and-excitation gate 0 (all of
    /// them where `all`), no other zero
    Squeezes { all: bool },
}

fn set_pattern(g: &mut Graph, gates: &[Gate], pat: Pattern, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let stage_of = |b: usize| sss_onnx::structure::analyse(g).blocks[b].stage;
    let stages: Vec<usize> = gates.iter().map(|gt| stage_of(gt.block)).collect();
    let mut emptied = false;
    for (gt, stage) in gates.iter().zip(stages) {
        let mut v: Vec<f32> = (0..gt.count).map(|_| rng.random_range(0.2..1.5)).collect();
        match pat {
            Pattern::Random(p) => v.iter_mut().for_each(|x| {
                if rng.random_bool(p) {
                    *x = 0.0
                }
            }),
            Pattern::Stage(s) if gt.kind == GateKind::Block && stage == s => v[0] = 0.0,
            Pattern::Squeezes { all } if gt.name.contains("se") => v
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| all || i % 2 == 0)
                .for_each(|(_, x)| *x = 0.0),
            Pattern::EmptyBranch(b) if gt.kind != GateKind::Block && gt.block == b && !emptied => {
                v.iter_mut().for_each(|x| *x = 0.0);
                emptied = true;
            }
            _ => {}
        }
        gate::set_factors(g, gt, &v).unwrap();
    }
}

fn check(
    path: &Path,
    pattern: Pattern,
    seed: u64,
    real: Option<&ndarray::ArrayD<f32>>,
) -> PruneReport {
    let g = load(path);
    let (mut gated, gates) = gate::insert(&g, &ALL).unwrap();
    set_pattern(&mut gated, &gates, pattern, seed);
    let (pruned, report) =
        prune::prune(&gated).unwrap_or_else(|e| panic!("{} {pattern:?}: {e}", path.display()));
    let what = format!("{} {pattern:?} seed {seed}", path.display());
    assert_eq!(
        report.after, report.predicted,
        "{what}: counts differ from the prediction"
    );
    assert!(
        !pruned
            .initializers
            .keys()
            .any(|k| k.starts_with("sss_gate/")),
        "{what}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (gp, pp) = (
        dir.path().join("gated.onnx"),
        dir.path().join("pruned.onnx"),
    );
    convert::save(&gated, &gp, &Default::default()).unwrap();
    convert::save(&pruned, &pp, &Default::default()).unwrap();
    if report.before.macs > report.after.macs {
        let (a, b) = (
            std::fs::metadata(&gp).unwrap().len(),
            std::fs::metadata(&pp).unwrap().len(),
        );
        assert!(
            b < a,
            "{what}: pruned file {b} B not smaller than gated {a} B"
        );
    }
    let (_, shape) = sss_onnx::graph::io::image_input(&g).unwrap();
    let mut inputs = vec![normal(&[3, shape[0], shape[1], shape[2]], seed)];
    inputs.extend(real.cloned());
    for opts in [ort(), tract()] {
        for x in &inputs {
            let ya = run_model(&gp, &opts, "input", x);
            let yb = run_model(&pp, &opts, "input", x);
            let scale = ya.iter().fold(1f32, |m, v| m.max(v.abs()));
            let d = max_abs(&ya, &yb);
            assert!(
                d <= 1e-4 * scale,
                "{what} {:?}: max abs diff {d} (scale {scale})",
                opts.kind
            );
        }
    }
    report
}

fn real_batch() -> ndarray::ArrayD<f32> {
    let ds = sss_onnx::data::load(&fixture("fmnist"), sss_onnx::data::Split::Test).unwrap();
    let p = sss_onnx::data::Preprocess::plan(&ds, [3, 32, 32]).unwrap();
    p.batch(&ds, &(0..8).collect::<Vec<_>>()).unwrap()
}

#[test]
fn random_zero_patterns_prune_exactly_on_every_fixture() {
    let real = real_batch();
    let mut removed_any = (0, 0, 0);
    for (k, p) in fixtures().iter().enumerate() {
        let r = if arch(p).starts_with("resnet20") {
            Some(&real)
        } else {
            None
        };
        for (j, prob) in [0.3, 0.7].into_iter().enumerate() {
            let rep = check(p, Pattern::Random(prob), (k * 10 + j) as u64, r);
            removed_any.0 += rep.blocks_removed.len();
            removed_any.1 += rep.channels_removed;
            removed_any.2 += rep.groups_removed;
        }
    }
    // the patterns did exercise every kind of deletion
    assert!(
        removed_any.0 > 0 && removed_any.1 > 0 && removed_any.2 > 0,
        "{removed_any:?}"
    );
}

#[test]
fn whole_stages_and_empty_branches() {
    for name in [
        "resnet20_a.legacy17bn",
        "resnet20_a.dynamo18",
        "tv_bottleneck.legacy17bn",
        "resnext.legacy17bn",
        "tv_basic.dynamo18",
        "resnet14_b.legacy13",
    ] {
        let p = fixture(&format!("{name}.onnx"));
        let stages = sss_onnx::structure::analyse(&load(&p)).stages();
        for s in 0..stages {
            let r = check(&p, Pattern::Stage(s), 7 + s as u64, None);
            assert!(!r.blocks_removed.is_empty(), "{name} stage {s}");
        }
        for b in [0, 1] {
            let r = check(&p, Pattern::EmptyBranch(b), 3, None);
            let gone = r.blocks_removed.len() + r.blocks_replaced_by_constant.len();
            assert!(gone >= 1, "{name} block {b}: {r:?}");
        }
    }
}

#[test]
fn inverted_residuals_prune_exactly() {
    // MobileNetV2 at a quarter of its widths, 32×32: expansion channels are
    // groups of the depthwise convs (their expand and project convs cut
    // with them); stages, empty branches and random patterns
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mobilenet_v2.onnx");
    let g = sss_onnx::graph::build::mobilenet_v2(8, 6, 32, 10, 3);
    convert::save(&g, &p, &Default::default()).unwrap();
    let a = sss_onnx::structure::analyse(&load(&p));
    assert_eq!((a.blocks.len(), a.stages()), (17, 7));
    let mut groups = 0;
    for (j, prob) in [0.3, 0.7].into_iter().enumerate() {
        groups += check(&p, Pattern::Random(prob), 40 + j as u64, None).groups_removed;
    }
    assert!(groups > 0);
    for s in 0..a.stages() {
        let r = check(&p, Pattern::Stage(s), 50 + s as u64, None);
        let residual = a
            .blocks
            .iter()
            .any(|b| b.stage == s && b.shortcut != Shortcut::Absent);
        assert_eq!(!r.blocks_removed.is_empty(), residual, "stage {s}");
    }
    // a residual block whose expansion is emptied goes; one without a
    // shortcut stays, keeping one zeroed channel
    for b in &a.blocks[..4] {
        let r = check(&p, Pattern::EmptyBranch(b.id), 5, None);
        let gone = r.blocks_removed.len() + r.blocks_replaced_by_constant.len();
        match b.shortcut {
            Shortcut::Absent => assert!(gone == 0 && !r.notes.is_empty(), "{r:?}"),
            _ if a
                .gateable
                .iter()
                .any(|g| g.block == b.id && g.kind != GateKind::Block) =>
            {
                assert!(gone >= 1, "block {}: {r:?}", b.id)
            }
            _ => {}
        }
    }
}

#[test]
fn squeeze_excitation_channels_prune_exactly() {
    // every export of the three SE families: half of each SE's reduced
    // channels zero, then all of them (one zeroed channel kept per SE)
    for name in ["mobilenet_v3_small", "efficientnet_b0", "regnet_y_small"] {
        for v in ["legacy13", "legacy17bn", "dynamo18"] {
            let p = fixture(&format!("{name}.{v}.onnx"));
            let (_, gates) = gate::insert(&load(&p), &ALL).unwrap();
            let se: Vec<usize> = gates
                .iter()
                .filter(|g| g.name.contains("se"))
                .map(|g| g.count)
                .collect();
            assert!(!se.is_empty(), "{name}.{v}: no SE gates");
            let half: usize = se.iter().map(|c| c.div_ceil(2)).sum();
            let r = check(&p, Pattern::Squeezes { all: false }, 7, None);
            assert_eq!(r.channels_removed, half, "{name}.{v}");
            let r = check(&p, Pattern::Squeezes { all: true }, 8, None);
            let all: usize = se.iter().map(|c| c - 1).sum();
            assert_eq!(r.channels_removed, all, "{name}.{v}");
            assert_eq!(r.notes.len(), se.len(), "{name}.{v}: {:?}", r.notes);
        }
    }
}

#[test]
fn convnext_blocks_and_mlp_neurons_prune_exactly() {
    // channels-last MLP neurons (the first Linear's columns and bias, the
    // second's rows) and whole blocks with their layer scale, on the
    // decomposed-LayerNorm, LayerNormalization and dynamo exports
    for v in ["legacy13", "legacy17bn", "dynamo18"] {
        let p = fixture(&format!("convnext_small.{v}.onnx"));
        let mut removed = (0, 0);
        for (j, prob) in [0.3, 0.7].into_iter().enumerate() {
            let r = check(&p, Pattern::Random(prob), 60 + j as u64, None);
            removed.0 += r.channels_removed;
            removed.1 += r.blocks_removed.len();
        }
        assert!(removed.0 > 0 && removed.1 > 0, "{v}: {removed:?}");
        // stage 2's three blocks go together
        let r = check(&p, Pattern::Stage(2), 70, None);
        assert_eq!(r.blocks_removed, [2, 3, 4], "{v}");
        // an MLP without a neuron: GELU(0) = 0, the block computes its
        // bias, laid out channels-last: one zeroed neuron is kept
        let r = check(&p, Pattern::EmptyBranch(1), 71, None);
        assert_eq!(r.channels_removed, 127, "{v}: {r:?}");
        assert_eq!(r.notes.len(), 1, "{v}: {:?}", r.notes);
    }
}

#[test]
fn vision_transformer_sub_blocks_and_mlp_neurons_prune_exactly() {
    // attention and MLP sub-blocks (block gates; a kept attention block's
    // gate folds into its out-projection Gemm through the reshapes) and
    // MLP neurons, on exports with a dynamic batch and with the batch fixed
    // at 1 (legacy and dynamo)
    for v in ["legacy17", "dynamo18", "legacy17fixed", "default"] {
        let p = fixture(&format!("vit_tiny.{v}.onnx"));
        let mut removed = (0, 0);
        for (j, prob) in [0.3, 0.7].into_iter().enumerate() {
            let r = check(&p, Pattern::Random(prob), 80 + j as u64, None);
            removed.0 += r.channels_removed;
            removed.1 += r.blocks_removed.len();
        }
        assert!(removed.0 > 0 && removed.1 > 0, "{v}: {removed:?}");
        // every sub-block of the encoder's one stage: patch embedding,
        // class token, final LayerNorm and head are left
        let r = check(&p, Pattern::Stage(0), 90, None);
        assert_eq!(r.blocks_removed, [0, 1, 2, 3], "{v}");
        // an MLP without a neuron (block 1: the first layer's MLP)
        let r = check(&p, Pattern::EmptyBranch(1), 91, None);
        assert_eq!(r.channels_removed, 95, "{v}: {r:?}");
    }
}

/// A YOLO C2f block in small: a conv's channels split in two, bottlenecks
/// with a shortcut on the second half (conv, BN, SiLU twice: the branch
/// ends in a SiLU), every part concatenated and merged by a conv.
fn c2f(path: &Path) {
    use sss_onnx::graph::build::Builder;
    let mut b = Builder::new("input", &[-1, 3, 16, 16], 23);
    let silu = |b: &mut Builder, x: &str| {
        let s = b.node("Sigmoid", &[x], vec![]);
        b.node("Mul", &[x, &s], vec![])
    };
    let cbs = |b: &mut Builder, x: &str, cin: usize, cout: usize, k: usize| {
        let y = b.conv(x, cin, cout, k, 1);
        let y = b.bn(&y, cout);
        silu(b, &y)
    };
    let x = cbs(&mut b, "input", 3, 16, 3);
    let sizes = b.ints("split", &[8, 8]);
    let mut split = sss_onnx::graph::Node::new("Split", "split", &[&x, &sizes], &["lo", "hi"]);
    split.set_attr("axis", sss_onnx::graph::Attr::Int(1));
    b.graph.nodes.push(split);
    let mut parts = vec!["lo".to_string(), "hi".to_string()];
    let mut h = "hi".to_string();
    for _ in 0..2 {
        let y = cbs(&mut b, &h, 8, 8, 3);
        let y = cbs(&mut b, &y, 8, 8, 3);
        h = b.add(&h, &y);
        parts.push(h.clone());
    }
    let refs: Vec<&str> = parts.iter().map(|p| p.as_str()).collect();
    let cat = b.node(
        "Concat",
        &refs,
        vec![("axis", sss_onnx::graph::Attr::Int(1))],
    );
    let y = cbs(&mut b, &cat, 32, 16, 1);
    let mut g = b.finish(&y);
    g.outputs[0].shape = None;
    convert::save(&g, path, &Default::default()).unwrap();
}

#[test]
fn bottlenecks_inside_a_split_and_concat_block_prune_exactly() {
    // the two bottlenecks are blocks (their shortcut the split's half);
    // a kept one's factor cannot fold into a conv through its last SiLU
    // and stays a constant multiply; counts as predicted, exact in ORT
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c2f.onnx");
    c2f(&p);
    let a = sss_onnx::structure::analyse(&load(&p));
    assert_eq!(a.blocks.len(), 2);
    assert_eq!(a.count(GateKind::Block), 2);
    let mut kept_factor = false;
    for seed in 0..6 {
        let r = check(&p, Pattern::Random(0.4), 100 + seed, None);
        kept_factor |= r.blocks_removed.len() < 2;
    }
    assert!(kept_factor, "no pattern kept a block");
    let r = check(&p, Pattern::Stage(0), 110, None);
    assert_eq!(r.blocks_removed, [0, 1]);
}

#[test]
fn all_ones_gives_back_the_original() {
    for p in fixtures() {
        let g = load(&p);
        let (gated, _) = gate::insert(&g, &ALL).unwrap();
        let (pruned, r) = prune::prune(&gated).unwrap();
        assert_eq!(r.after, r.before);
        assert_eq!(pruned.nodes.len(), g.nodes.len(), "{}", p.display());
        assert_eq!(
            pruned.initializers.len(),
            g.initializers.len(),
            "{}",
            p.display()
        );
        for (k, t) in &g.initializers {
            assert_eq!(pruned.initializers.get(k), Some(t), "{} {k}", p.display());
        }
    }
}

#[test]
fn a_zeroed_projection_block_keeps_its_projection() {
    let p = fixture("tv_basic.legacy17bn.onnx");
    let g = load(&p);
    let a = sss_onnx::structure::analyse(&g);
    let proj = a
        .blocks
        .iter()
        .find(|b| b.shortcut == sss_onnx::structure::Shortcut::Projection)
        .unwrap()
        .id;
    let (mut gated, gates) = gate::insert(&g, &ALL).unwrap();
    for gt in &gates {
        let v = if gt.kind == GateKind::Block && gt.block == proj {
            0.0
        } else {
            0.9
        };
        gate::set_factors(&mut gated, gt, &vec![v; gt.count]).unwrap();
    }
    let (pruned, r) = prune::prune(&gated).unwrap();
    assert_eq!(r.blocks_removed, vec![proj]);
    let after = sss_onnx::structure::analyse(&pruned);
    assert_eq!(after.blocks.len(), a.blocks.len() - 1);
    // the projection conv is still there: one conv fewer per removed branch conv only
    let convs = |g: &Graph| g.nodes.iter().filter(|n| n.op_type == "Conv").count();
    assert_eq!(convs(&pruned), convs(&g) - 2);
    let dir = tempfile::tempdir().unwrap();
    let (gp, pp) = (dir.path().join("g.onnx"), dir.path().join("p.onnx"));
    convert::save(&gated, &gp, &Default::default()).unwrap();
    convert::save(&pruned, &pp, &Default::default()).unwrap();
    let x = normal(&[2, 3, 64, 64], 9);
    let o = ort();
    assert!(
        max_abs(
            &run_model(&gp, &o, "input", &x),
            &run_model(&pp, &o, "input", &x)
        ) <= 1e-4
    );
}

#[test]
fn relu_after_a_deleted_identity_block_goes_when_its_input_is_non_negative() {
    let p = fixture("resnet20_a.legacy13.onnx");
    let g = load(&p);
    let (mut gated, gates) = gate::insert(&g, &[GateKind::Block]).unwrap();
    // block 1: identity shortcut from the previous block's Relu → Relu removable
    for gt in &gates {
        gate::set_factors(&mut gated, gt, &[if gt.block == 1 { 0.0 } else { 1.0 }]).unwrap();
    }
    let (pruned, r) = prune::prune(&gated).unwrap();
    assert_eq!(r.relus_removed, 1);
    let relus = |g: &Graph| g.nodes.iter().filter(|n| n.op_type == "Relu").count();
    assert_eq!(relus(&pruned), relus(&g) - 2); // the branch's inner Relu and the post-Add one
}

#[test]
fn cli_gate_then_prune_and_bad_inputs() {
    let d = tempfile::tempdir().unwrap();
    let src = fixture("resnet14_b.legacy13.onnx");
    let gated = d.path().join("gated.onnx");
    let o = run(&[
        "gate",
        src.to_str().unwrap(),
        "-o",
        gated.to_str().unwrap(),
        "--structures",
        "block",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let g = load(&gated);
    assert_eq!(
        g.initializers
            .keys()
            .filter(|k| k.starts_with("sss_gate/block/"))
            .count(),
        6
    );
    assert!(!g
        .initializers
        .keys()
        .any(|k| k.starts_with("sss_gate/channel/")));
    // gating a gated model, or writing over the input, is refused
    let o = run(&[
        "gate",
        gated.to_str().unwrap(),
        "-o",
        d.path().join("x.onnx").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("already has sss gates"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "prune",
        gated.to_str().unwrap(),
        "-o",
        gated.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("refusing to overwrite"),
        "{}",
        stderr(&o)
    );
    // pruning a model without gates: clear error, nothing written
    let out = d.path().join("never.onnx");
    let o = run(&["prune", src.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no sss gates"), "{}", stderr(&o));
    assert!(!out.exists());
    // a gate of the wrong shape
    let mut bad = g.clone();
    let name = bad
        .initializers
        .keys()
        .find(|k| k.starts_with("sss_gate/block/"))
        .unwrap()
        .clone();
    bad.initializers.insert(
        name,
        sss_onnx::graph::Tensor::F32(ndarray::ArrayD::zeros(ndarray::IxDyn(&[3]))),
    );
    let bp = d.path().join("badshape.onnx");
    convert::save(&bad, &bp, &Default::default()).unwrap();
    let o = run(&["prune", bp.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected [1]"), "{}", stderr(&o));
    assert!(!out.exists());
    // a gate feeding something unexpected: a conv weight renamed as a gate
    let mut odd = load(&src);
    let w = odd
        .nodes
        .iter()
        .find(|n| n.op_type == "Conv")
        .unwrap()
        .inputs[1]
        .clone();
    let t = odd.initializers.shift_remove(&w).unwrap();
    odd.initializers.insert("sss_gate/channel/odd".into(), t);
    for n in odd.nodes.iter_mut() {
        for i in n.inputs.iter_mut() {
            if *i == w {
                *i = "sss_gate/channel/odd".into();
            }
        }
    }
    let op = d.path().join("odd.onnx");
    convert::save(&odd, &op, &Default::default()).unwrap();
    let o = run(&["prune", op.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("feeds a Conv node"), "{}", stderr(&o));
    assert!(!out.exists());
}
