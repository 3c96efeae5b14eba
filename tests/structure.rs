//! Residual blocks, shortcuts and gateable structures on every fixture and
//! on full-size built architectures.

mod common;
use common::*;
use sss_onnx::graph::build::{cifar_resnet, torchvision_resnet};
use sss_onnx::structure::{analyse, GateKind, Shortcut};

#[test]
fn blocks_are_found_in_every_export_style() {
    // (architecture, blocks, stages, shortcut kinds in order of non-identity)
    let expect: &[(&str, usize, usize)] = &[
        ("resnet20_a", 9, 3),
        ("resnet20_fmnist", 9, 3),
        ("resnet14_b", 6, 3),
        ("tv_basic", 8, 4),
        ("tv_bottleneck", 5, 4),
        ("resnext", 4, 4),
        ("resnet20_black", 9, 3),
        ("resnet56_fmnist", 27, 3),
        ("regnet_y_small", 8, 4),
    ];
    // the other families have tests of their own below
    let others = [
        "mobilenet_v2",
        "mobilenet_v3_small",
        "efficientnet_b0",
        "mobilenet_v2_fmnist",
        "convnext_small",
        "convnext_fresh",
        "vit_tiny",
    ];
    for p in fixtures() {
        if others.contains(&arch(&p).as_str()) {
            continue;
        }
        let a = analyse(&load(&p));
        let (_, blocks, stages) = expect
            .iter()
            .find(|e| e.0 == arch(&p))
            .unwrap_or_else(|| panic!("{}: no expectation", p.display()));
        assert_eq!(a.blocks.len(), *blocks, "{}", p.display());
        assert_eq!(a.stages(), *stages, "{}", p.display());
        assert!(
            a.blocks.iter().all(|b| b.post_relu.is_some()),
            "post-activation: {}",
            p.display()
        );
        let kinds: Vec<&Shortcut> = a.blocks.iter().map(|b| &b.shortcut).collect();
        match arch(&p).as_str() {
            "resnet20_a" | "resnet20_fmnist" | "resnet20_black" | "resnet56_fmnist" => {
                assert_eq!(
                    kinds
                        .iter()
                        .filter(|k| ***k == Shortcut::SubsamplePad)
                        .count(),
                    2
                )
            }
            // stage 1 keeps the width: projections only where stages change
            "resnet14_b" => {
                assert_eq!(
                    kinds
                        .iter()
                        .filter(|k| ***k == Shortcut::Projection)
                        .count(),
                    2
                )
            }
            "tv_basic" => {
                assert_eq!(
                    kinds
                        .iter()
                        .filter(|k| ***k == Shortcut::Projection)
                        .count(),
                    3
                )
            }
            _ => assert_eq!(
                kinds
                    .iter()
                    .filter(|k| ***k == Shortcut::Projection)
                    .count(),
                4
            ),
        }
        for b in &a.blocks {
            let bottleneck = ["tv_bottleneck", "resnext", "regnet_y_small"];
            let n = if bottleneck.contains(&arch(&p).as_str()) {
                3
            } else {
                2
            };
            assert_eq!(b.convs.len(), n, "{} block {}", p.display(), b.id);
        }
    }
}

#[test]
fn gateable_counts_are_what_the_architecture_implies() {
    // ResNet-20: the first conv of each of 9 branches: 3·16 + 3·32 + 3·64
    let a = analyse(&load(&fixture("resnet20_a.legacy17bn.onnx")));
    assert_eq!(a.count(GateKind::Channel), 336);
    assert_eq!(a.count(GateKind::Block), 9);
    assert_eq!(a.count(GateKind::Group), 0);
    // gates follow the BN when BN is kept, the conv when it is folded
    let kept = &a.blocks[0].convs[0];
    assert!(kept.bn.is_some());
    assert_eq!(kept.gate_at, *kept.bn.as_ref().unwrap());
    let folded = analyse(&load(&fixture("resnet20_a.legacy13.onnx")));
    assert!(folded.blocks[0].convs[0].bn.is_none());
    // ResNeXt: group gates on the grouped 3×3 (4 groups × 4 blocks); the 1×1
    // feeding it is left out with the reason
    let x = analyse(&load(&fixture("resnext.dynamo18.onnx")));
    assert_eq!(x.count(GateKind::Group), 16);
    assert_eq!(x.count(GateKind::Channel), 0);
    assert!(x.skipped.iter().any(|s| s.reason.contains("grouped conv")));
    // bottleneck: two gated convs per block
    let b = analyse(&load(&fixture("tv_bottleneck.legacy13.onnx")));
    assert_eq!(
        b.gateable
            .iter()
            .filter(|g| g.kind == GateKind::Channel)
            .count(),
        10
    );
}

#[test]
fn full_size_architectures() {
    let a = analyse(&cifar_resnet(9, 1));
    assert_eq!(a.blocks.len(), 27);
    assert_eq!(a.stages(), 3);
    let r50 = analyse(&torchvision_resnet([3, 4, 6, 3], true, 64, 1000, 1));
    assert_eq!(r50.blocks.len(), 16);
    assert_eq!(r50.stages(), 4);
    assert_eq!(
        r50.blocks
            .iter()
            .filter(|b| b.shortcut == Shortcut::Projection)
            .count(),
        4
    );
    let r18 = analyse(&torchvision_resnet([2, 2, 2, 2], false, 64, 1000, 1));
    assert_eq!(r18.blocks.len(), 8);
}

#[test]
fn inspect_cli_reports_blocks_and_left_out_structures() {
    let p = fixture("resnext.legacy17bn.onnx");
    let o = run(&["inspect", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("blocks     4 in 4 stages"), "{s}");
    assert!(s.contains("left out"), "{s}");
    let o = run(&["inspect", p.to_str().unwrap(), "--json", "--per-node"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["analysis"]["blocks"].as_array().unwrap().len(), 4);
    assert_eq!(v["gates"]["group"], 16);
    let per = v["per_node"].as_array().unwrap();
    let sum: u64 = per.iter().map(|n| n["macs"].as_u64().unwrap()).sum();
    assert_eq!(sum, v["macs"].as_u64().unwrap());
}

/// The factor count of every group gate, in graph order.
/// The blocks `make_fixtures.py` recorded for a family fixture, as
/// torchvision's modules define them.
fn manifest_blocks(name: &str) -> Vec<serde_json::Value> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("manifest.json")).unwrap()).unwrap();
    manifest["models"][name]["blocks"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: no blocks in the manifest"))
        .clone()
}

/// One integer field of every block.
fn field(blocks: &[serde_json::Value], k: &str) -> Vec<usize> {
    blocks
        .iter()
        .map(|b| b[k].as_u64().unwrap_or_else(|| panic!("{k}: {b}")) as usize)
        .collect()
}

/// The gated reduced channels of each block's squeeze-and-excitation, in
/// block order (0 where a block has none).
fn squeeze_counts(a: &sss_onnx::structure::Analysis) -> Vec<usize> {
    a.blocks
        .iter()
        .map(|b| {
            a.gateable
                .iter()
                .filter(|g| g.kind == GateKind::Channel && g.block == b.id)
                .filter(|g| {
                    b.squeezes
                        .iter()
                        .any(|q| Some(&q.reduce.conv) == g.conv.as_ref())
                })
                .map(|g| g.count)
                .sum()
        })
        .collect()
}

fn group_counts(a: &sss_onnx::structure::Analysis) -> Vec<usize> {
    a.gateable
        .iter()
        .filter(|g| g.kind == GateKind::Group)
        .map(|g| g.count)
        .collect()
}

/// torchvision's `_make_divisible(v, 8)`: channel counts of a MobileNet at
/// a width multiplier.
fn divisible8(v: f64) -> usize {
    let d = 8.0;
    let n = (((v + d / 2.0) / d).floor() * d).max(d);
    (if n < 0.9 * v { n + d } else { n }) as usize
}

#[test]
fn mobilenet_v2_exports_gate_expansion_channels_as_torchvision_defines_them() {
    // torchvision's inverted-residual table (t, c, n, s) at width 0.25:
    // a block has a shortcut where stride is 1 and width is kept; its
    // expansion (t ≠ 1) is one group gate per channel of the depthwise conv
    let width = 0.25;
    let table = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ];
    let mut cin = divisible8(32.0 * width);
    let (mut residual, mut expansions, mut plain) = (0, vec![], 0);
    for (t, c, n, s) in table {
        let cout = divisible8(c as f64 * width);
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            residual += (stride == 1 && cin == cout) as usize;
            if t != 1 {
                expansions.push(cin * t);
            } else {
                plain += 1;
            }
            cin = cout;
        }
    }
    // at width 0.25 the t = 1 block keeps its width (8 → 8): 11 shortcuts
    assert_eq!((residual, expansions.len(), plain), (11, 16, 1));
    for v in ["legacy13", "legacy17bn", "dynamo18"] {
        let p = fixture(&format!("mobilenet_v2.{v}.onnx"));
        let a = analyse(&load(&p));
        assert_eq!(a.blocks.len(), 17, "{v}");
        assert_eq!(a.count(GateKind::Block), residual, "{v}");
        assert_eq!(a.count(GateKind::Channel), 0, "{v}");
        assert_eq!(group_counts(&a), expansions, "{v}");
        // stages: the seven rows of the table
        assert_eq!(a.stages(), 7, "{v}");
        // the block without an expansion is listed with its reason
        assert!(
            a.skipped
                .iter()
                .any(|s| s.reason.contains("reads the block input")),
            "{v}: {:?}",
            a.skipped
        );
    }
}

#[test]
fn inverted_residual_families_gate_what_their_torchvision_modules_define() {
    // the manifest lists, per inverted residual of each model as
    // torchvision's modules build it (make_fixtures.py), the depthwise
    // conv's channels, whether an expand conv feeds it and whether the
    // block adds its input back. Every block is found; every residual one
    // has a block gate; every depthwise conv fed by a conv of its own (an
    // expand conv, or the stem for a first block without a shortcut) has
    // one gate per channel; the rest are listed with the reason.
    for name in ["mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"] {
        let blocks = manifest_blocks(name);
        let residual = blocks.iter().filter(|b| b["residual"] == true).count();
        let gated: Vec<usize> = blocks
            .iter()
            .filter(|b| b["expand"] == true || b["residual"] == false)
            .map(|b| b["depthwise"].as_u64().unwrap() as usize)
            .collect();
        for v in ["legacy13", "legacy17bn", "dynamo18"] {
            let p = fixture(&format!("{name}.{v}.onnx"));
            let a = analyse(&load(&p));
            assert_eq!(a.blocks.len(), blocks.len(), "{name}.{v}");
            assert_eq!(a.count(GateKind::Block), residual, "{name}.{v}");
            assert_eq!(group_counts(&a), gated, "{name}.{v}");
            // every squeeze-and-excitation's reduced channels, one gate each
            assert_eq!(squeeze_counts(&a), field(&blocks, "se"), "{name}.{v}");
            let unexplained = blocks.len() - gated.len();
            let listed = a
                .skipped
                .iter()
                .filter(|s| s.reason.contains("reads the block input"))
                .count();
            assert_eq!(listed, unexplained, "{name}.{v}: {:?}", a.skipped);
        }
    }
}

#[test]
fn regnet_gates_its_groups_squeezes_and_blocks_as_torchvision_defines_them() {
    // the manifest lists, per bottleneck of the RegNetY fixture as
    // torchvision's modules build it, the grouped conv's width and groups
    // (group width 8), the SE's reduced channels and the shortcut kind:
    // one block gate per bottleneck, one group gate per group, one channel
    // gate per reduced SE channel; stages as the design's four widths
    let blocks = manifest_blocks("regnet_y_small");
    let (groups, se) = (field(&blocks, "groups"), field(&blocks, "se"));
    let projections: Vec<bool> = blocks
        .iter()
        .map(|b| b["projection"].as_bool().unwrap())
        .collect();
    for v in ["legacy13", "legacy17bn", "dynamo18"] {
        let p = fixture(&format!("regnet_y_small.{v}.onnx"));
        let a = analyse(&load(&p));
        assert_eq!(a.blocks.len(), blocks.len(), "{v}");
        assert_eq!(a.count(GateKind::Block), blocks.len(), "{v}");
        assert_eq!(group_counts(&a), groups, "{v}");
        assert_eq!(squeeze_counts(&a), se, "{v}");
        let proj: Vec<bool> = a
            .blocks
            .iter()
            .map(|b| b.shortcut == Shortcut::Projection)
            .collect();
        assert_eq!(proj, projections, "{v}");
        let stages: Vec<usize> = a.blocks.iter().map(|b| b.stage).collect();
        assert_eq!(stages, [0, 1, 1, 2, 2, 2, 2, 3], "{v}");
    }
}

#[test]
fn convnext_gates_its_blocks_and_mlp_neurons_as_torchvision_defines_them() {
    // the manifest lists, per ConvNeXt block as torchvision's modules build
    // it, its width and its MLP's hidden neurons: every block is found with
    // an identity shortcut and a block gate, its convs are the 7×7
    // depthwise and the two Linears (channels last), and every hidden
    // neuron has a gate; the depthwise conv reads the residual stream and
    // is listed with the reason. Stages: the four widths.
    let blocks = manifest_blocks("convnext_small");
    let (width, hidden) = (field(&blocks, "width"), field(&blocks, "hidden"));
    for v in ["legacy13", "legacy17bn", "dynamo18"] {
        let p = fixture(&format!("convnext_small.{v}.onnx"));
        let a = analyse(&load(&p));
        assert_eq!(a.blocks.len(), blocks.len(), "{v}");
        assert_eq!(a.count(GateKind::Block), blocks.len(), "{v}");
        assert!(a.blocks.iter().all(|b| b.shortcut == Shortcut::Identity));
        let layers: Vec<Vec<(usize, bool)>> = a
            .blocks
            .iter()
            .map(|b| b.convs.iter().map(|c| (c.out_channels, c.linear)).collect())
            .collect();
        let expected: Vec<Vec<(usize, bool)>> = width
            .iter()
            .zip(&hidden)
            .map(|(&w, &h)| vec![(w, false), (h, true), (w, true)])
            .collect();
        assert_eq!(layers, expected, "{v}");
        let neurons: Vec<usize> = a
            .gateable
            .iter()
            .filter(|g| g.kind == GateKind::Channel)
            .map(|g| g.count)
            .collect();
        assert_eq!(neurons, hidden, "{v}");
        let stages: Vec<usize> = a.blocks.iter().map(|b| b.stage).collect();
        assert_eq!(stages, [0, 1, 2, 2, 2, 3], "{v}");
        let listed = a
            .skipped
            .iter()
            .filter(|s| s.reason.contains("reads the block input"))
            .count();
        assert_eq!(listed, blocks.len(), "{v}");
    }
}

#[test]
fn vision_transformer_gates_its_sub_blocks_and_mlp_neurons() {
    // per encoder layer of torchvision's VisionTransformer (the manifest
    // lists heads, width and MLP neurons): an attention sub-block (the
    // packed QKV projection, the attention core walked through as one
    // unit, the out-projection) and an MLP sub-block, each with an identity
    // shortcut and a block gate; every MLP neuron has a gate; the QKV and
    // out-projection channels are not gated (heads are not gated yet). One
    // stage: the width never changes. Exports with a dynamic batch and
    // with the batch fixed at 1, legacy and dynamo.
    let layers = manifest_blocks("vit_tiny");
    let (width, mlp) = (field(&layers, "width"), field(&layers, "mlp"));
    for v in ["legacy17", "dynamo18", "legacy17fixed", "default"] {
        let p = fixture(&format!("vit_tiny.{v}.onnx"));
        let a = analyse(&load(&p));
        assert_eq!(a.blocks.len(), 2 * layers.len(), "{v}");
        assert_eq!(a.count(GateKind::Block), 2 * layers.len(), "{v}");
        assert!(a.blocks.iter().all(|b| b.shortcut == Shortcut::Identity));
        let convs: Vec<Vec<(usize, bool)>> = a
            .blocks
            .iter()
            .map(|b| b.convs.iter().map(|c| (c.out_channels, c.linear)).collect())
            .collect();
        let expected: Vec<Vec<(usize, bool)>> = width
            .iter()
            .zip(&mlp)
            .flat_map(|(&w, &h)| [vec![(3 * w, true), (w, true)], vec![(h, true), (w, true)]])
            .collect();
        assert_eq!(convs, expected, "{v}");
        let neurons: Vec<usize> = a
            .gateable
            .iter()
            .filter(|g| g.kind == GateKind::Channel)
            .map(|g| g.count)
            .collect();
        assert_eq!(neurons, mlp, "{v}");
        assert!(a.blocks.iter().all(|b| b.stage == 0), "{v}");
        assert!(
            a.skipped
                .iter()
                .any(|s| s.reason.contains("Gemm's channels are not gated")),
            "{v}: {:?}",
            a.skipped
        );
    }
}
