//! BatchNorm restored in BN-folded exports: the restored network computes
//! what the export does (ONNX Runtime, real images), the fold back gives
//! the export's structure and outputs, and `compress` trains a deep
//! BN-folded net to the end with its defaults.

mod common;
use common::*;
use sss_onnx::bn_restore;
use sss_onnx::data::{self, Preprocess, Split};

fn outputs(g: &sss_onnx::graph::Graph, x: &ndarray::ArrayD<f32>) -> ndarray::ArrayD<f32> {
    let name = g.data_inputs().next().unwrap().name.clone();
    let mut s = sss_onnx::runtime::open_graph(g, std::path::Path::new("t"), &ort()).unwrap();
    s.run(&vec![(name, x.clone())]).unwrap().remove(0).1
}

#[test]
fn restored_batchnorm_changes_nothing_and_folds_back_exactly() {
    let p = fixture("resnet20_fmnist.legacy13.onnx");
    let g = load(&p);
    assert!(bn_restore::is_bn_folded(&g));
    let ds = data::load(&fixture("fmnist"), Split::Train).unwrap();
    let prep = Preprocess::plan(&ds, [3, 32, 32]).unwrap();
    let (restored, n) = bn_restore::restore(&g, &ds, &prep, "input", &ort(), 256, 64).unwrap();
    assert_eq!(n, 19, "every conv of a folded ResNet-20");
    assert_eq!(
        restored
            .nodes
            .iter()
            .filter(|n| n.op_type == "BatchNormalization")
            .count(),
        19
    );
    // the restored statistics are the conv outputs' own: a BN in train
    // mode would normalise them, so scale² − ε is their variance (> 0)
    let var = restored.initializers["sss_bn/0/var"].as_f32().unwrap();
    assert!(var.iter().all(|&v| v > 0.0));
    let test = data::load(&fixture("fmnist"), Split::Test).unwrap();
    let x = prep.batch(&test, &(0..64).collect::<Vec<_>>()).unwrap();
    let y0 = outputs(&g, &x);
    let y1 = outputs(&restored, &x);
    let scale = y0.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        max_abs(&y0, &y1) <= 1e-5 * scale.max(1.0),
        "{}",
        max_abs(&y0, &y1)
    );

    // folding back: the export's ops and outputs again
    let mut back = restored.clone();
    assert_eq!(bn_restore::fold_back(&mut back).unwrap(), 19);
    let ops = |g: &sss_onnx::graph::Graph| {
        let mut v: Vec<String> = g.nodes.iter().map(|n| n.op_type.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(ops(&back), ops(&g));
    let y2 = outputs(&back, &x);
    assert!(
        max_abs(&y0, &y2) <= 1e-5 * scale.max(1.0),
        "{}",
        max_abs(&y0, &y2)
    );
}

#[test]
fn restored_batchnorm_in_squeeze_excitation_prunes_exactly() {
    // MobileNetV3 folded: BN goes back after every conv, the SE's two
    // convs too; a random zero pattern on the expansion channels must cut
    // the BN after the SE's excitation conv with them
    let p = fixture("mobilenet_v3_small.legacy13.onnx");
    let g = load(&p);
    let ds = data::load(&fixture("fmnist"), Split::Train).unwrap();
    let prep = Preprocess::plan(&ds, [3, 64, 64]).unwrap();
    let (restored, n) = bn_restore::restore(&g, &ds, &prep, "input", &ort(), 64, 32).unwrap();
    assert_eq!(n, 52, "every conv of the folded export");
    let kinds = [sss_onnx::structure::GateKind::Group];
    let (mut gated, gates) = sss_onnx::gate::insert(&restored, &kinds).unwrap();
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for gt in &gates {
        let v: Vec<f32> = (0..gt.count)
            .map(|_| {
                if rng.random_bool(0.4) {
                    0.0
                } else {
                    rng.random_range(0.2..1.5)
                }
            })
            .collect();
        sss_onnx::gate::set_factors(&mut gated, gt, &v).unwrap();
    }
    let (pruned, report) = sss_onnx::prune::prune(&gated).unwrap();
    assert!(report.groups_removed > 0);
    assert_eq!(report.after, report.predicted);
    let test = data::load(&fixture("fmnist"), Split::Test).unwrap();
    let x = prep.batch(&test, &(0..16).collect::<Vec<_>>()).unwrap();
    let (y0, y1) = (outputs(&gated, &x), outputs(&pruned, &x));
    let scale = y0.iter().fold(1f32, |m, v| m.max(v.abs()));
    assert!(max_abs(&y0, &y1) <= 1e-4 * scale, "{}", max_abs(&y0, &y1));
}

#[test]
fn a_bn_kept_export_needs_nothing_restored() {
    let g = load(&fixture("resnet20_a.legacy17bn.onnx"));
    assert!(!bn_restore::is_bn_folded(&g));
    assert!(bn_restore::folded_convs(&g).is_empty());
}

#[test]
fn a_layer_norm_network_never_had_a_bn_to_restore() {
    // ConvNeXt: convs and no BatchNormalization, but LayerNorm as the op
    // (opset 17, dynamo, the default export) or as arithmetic (opset 13)
    for v in ["legacy13", "legacy17bn", "dynamo18"] {
        let g = load(&fixture(&format!("convnext_small.{v}.onnx")));
        assert!(!bn_restore::is_bn_folded(&g), "{v}");
    }
    assert!(!bn_restore::is_bn_folded(&load(&fixture(
        "convnext_fresh.default.onnx"
    ))));
    // a BN-folded MobileNetV2 still is one
    assert!(bn_restore::is_bn_folded(&load(&fixture(
        "mobilenet_v2.legacy13.onnx"
    ))));
}

#[test]
fn fold_back_uses_the_trained_statistics() {
    // hand-computed: one 1×1 conv, weight 2, bias 1; BN γ 3, β 0.5,
    // mean 4, var 8 (ε 1e-5): s = 3/√(8+ε); w' = 2s; b' = (1−4)s + 0.5
    use sss_onnx::graph::build::Builder;
    let mut b = Builder::new("x", &[1, 1, 1, 1], 1);
    let y = b.conv("x", 1, 1, 1, 1);
    let mut g = b.finish(&y);
    let conv = g.nodes.iter().position(|n| n.op_type == "Conv").unwrap();
    let w = g.nodes[conv].inputs[1].clone();
    g.initializers.insert(
        w,
        sss_onnx::graph::Tensor::F32(ndarray::ArrayD::from_elem(
            ndarray::IxDyn(&[1, 1, 1, 1]),
            2.0,
        )),
    );
    let bias = "conv_bias_test".to_string();
    g.initializers.insert(
        bias.clone(),
        sss_onnx::graph::Tensor::F32(ndarray::ArrayD::from_elem(ndarray::IxDyn(&[1]), 1.0)),
    );
    g.nodes[conv].inputs.truncate(2);
    g.nodes[conv].inputs.push(bias);
    let out = g.nodes[conv].outputs[0].clone();
    let stats = [(out, (vec![4.0f32], vec![8.0f32]))].into_iter().collect();
    let (mut r, n) = bn_restore::insert(&g, &stats).unwrap();
    assert_eq!(n, 1);
    // pretend training moved γ and β
    for (k, v) in [("scale", 3.0f32), ("bias", 0.5)] {
        r.initializers.insert(
            format!("sss_bn/0/{k}"),
            sss_onnx::graph::Tensor::F32(ndarray::ArrayD::from_elem(ndarray::IxDyn(&[1]), v)),
        );
    }
    bn_restore::fold_back(&mut r).unwrap();
    let c = r.nodes.iter().find(|n| n.op_type == "Conv").unwrap();
    let s = 3.0f32 / (8.0f32 + 1e-5).sqrt();
    let w = r.initializers[&c.inputs[1]].as_f32().unwrap()[[0, 0, 0, 0]];
    let b = r.initializers[&c.inputs[2]].as_f32().unwrap()[[0]];
    assert!((w - 2.0 * s).abs() < 1e-6, "{w}");
    assert!((b - ((1.0 - 4.0) * s + 0.5)).abs() < 1e-6, "{b}");
}

#[test]
fn a_deep_bn_folded_export_compresses_with_the_defaults() {
    // one set of trained ResNet-56 weights, exported BN-folded and BN-kept;
    // the folded export diverged within a few steps before BN was restored
    require_ort();
    let d = tempfile::tempdir().unwrap();
    for v in ["legacy13", "legacy17bn"] {
        let p = fixture(&format!("resnet56_fmnist.{v}.onnx"));
        let out = d.path().join(format!("{v}.sss.onnx"));
        let o = run(&[
            "compress",
            p.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--target-macs",
            "0.5",
            "--steps",
            "24",
            "--batch-size",
            "32",
            "--pad-value",
            "black",
            "--bench-iters",
            "2",
            "--bench-batch",
            "1",
            "--json",
        ]);
        assert_eq!(o.status.code(), Some(0), "{v}: {}", stderr(&o));
        let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(r["training"]["rewinds"], 0, "{v}: the guard had to rewind");
        let kept = 1.0 - r["macs_reduction"].as_f64().unwrap();
        assert!((kept - 0.5).abs() <= 0.05, "{v}: {kept}");
        let bns = load(&out)
            .nodes
            .iter()
            .filter(|n| n.op_type == "BatchNormalization")
            .count();
        if v == "legacy13" {
            assert!(
                stderr(&o).contains("BatchNorm restored after 55 convs"),
                "{}",
                stderr(&o)
            );
            assert_eq!(bns, 0, "restored BatchNorms left in the output");
        } else {
            assert!(!stderr(&o).contains("BatchNorm restored"));
            assert!(bns > 0);
        }
    }
}
