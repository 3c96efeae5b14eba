//! MAC and parameter counts against published figures. The full-size
//! architectures are built in code (random weights) exactly as torchvision
//! and He et al. define them: counting must give the published numbers.

mod common;
use sss_onnx::graph::build::{cifar_resnet, torchvision_resnet, torchvision_resnext};
use sss_onnx::graph::{counts, shape, Graph};

fn count(g: &Graph) -> (u64, u64) {
    let facts = shape::infer_strict(g, 1).unwrap();
    let c = counts::count(g, &facts);
    (c.macs, c.params)
}

#[test]
fn torchvision_resnet18_and_50_match_published_figures() {
    let (macs, params) = count(&torchvision_resnet([2, 2, 2, 2], false, 64, 1000, 1));
    // torchvision: 1.81 GFLOPs (multiply-adds), 11,689,512 parameters
    assert!(
        (macs as f64 / 1e9 - 1.82).abs() < 0.01,
        "ResNet-18 MACs {macs}"
    );
    assert_eq!(params, 11_689_512);
    let (macs, params) = count(&torchvision_resnet([3, 4, 6, 3], true, 64, 1000, 2));
    // torchvision: 4.09 GFLOPs, 25,557,032 parameters
    assert!(
        (macs as f64 / 1e9 - 4.1).abs() < 0.02,
        "ResNet-50 MACs {macs}"
    );
    assert_eq!(params, 25_557_032);
}

#[test]
fn torchvision_resnext50_matches_published_figures() {
    let (macs, params) = count(&torchvision_resnext([3, 4, 6, 3], 32, 4, 1000, 3));
    // torchvision resnext50_32x4d: 4.23 GFLOPs, 25,028,904 parameters
    assert!(
        (macs as f64 / 1e9 - 4.23).abs() < 0.03,
        "ResNeXt-50 MACs {macs}"
    );
    assert_eq!(params, 25_028_904);
}

#[test]
fn cifar_resnet20_and_56_match_published_figures() {
    // He et al. 2016: ResNet-20 0.27 M params, ~41 M MACs; ResNet-56 0.85 M, ~125 M
    let (macs, params) = count(&cifar_resnet(3, 1));
    assert!(
        (macs as f64 / 1e6 - 41.0).abs() < 0.6,
        "ResNet-20 MACs {macs}"
    );
    assert!(
        (params as f64 / 1e6 - 0.27).abs() < 0.005,
        "ResNet-20 params {params}"
    );
    let (macs, params) = count(&cifar_resnet(9, 1));
    assert!(
        (macs as f64 / 1e6 - 125.0).abs() < 1.0,
        "ResNet-56 MACs {macs}"
    );
    assert!(
        (params as f64 / 1e6 - 0.85).abs() < 0.01,
        "ResNet-56 params {params}"
    );
}

#[test]
fn conv_macs_follow_the_hand_formula_on_an_export() {
    // resnet20_a at batch 1, by hand: stem 32·32·16·27; stage 1: 6 convs of
    // 32·32·16·144; stage 2: first conv 16·16·32·144, 5 of 16·16·32·288;
    // stage 3: 8·8·64·288 then 5 of 8·8·64·576; fc 64·10.
    let hand: u64 = 32 * 32 * 16 * 27
        + 6 * 32 * 32 * 16 * 144
        + 16 * 16 * 32 * 144
        + 5 * 16 * 16 * 32 * 288
        + 8 * 8 * 64 * 288
        + 5 * 8 * 8 * 64 * 576
        + 64 * 10;
    for v in ["legacy13", "legacy17bn", "dynamo18", "dynamo18ext"] {
        let g = common::load(&common::fixture(&format!("resnet20_a.{v}.onnx")));
        assert_eq!(count(&g).0, hand, "{v}");
        let facts = shape::infer_strict(&g, 8).unwrap();
        assert_eq!(counts::count(&g, &facts).macs, 8 * hand, "{v} at batch 8");
    }
}

#[test]
fn built_models_are_valid_onnx_that_runs() {
    let g = cifar_resnet(3, 5);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r20.onnx");
    sss_onnx::onnx::convert::save(&g, &p, &Default::default()).unwrap();
    let x = sss_onnx::measure::inputs::normal(&[2, 3, 32, 32], 1);
    let a = common::run_model(&p, &common::tract(), "input", &x);
    assert_eq!(a.shape(), &[2, 10]);
    assert!(a.iter().all(|v| v.is_finite()));
}

#[test]
fn vision_transformer_macs_follow_the_hand_count() {
    // vit_tiny: patch 8 on 32×32 (16 patches + a class token = 17
    // tokens), width 48, 3 heads of 16, MLP 96, 2 layers, 10 classes
    let (t, d, m, heads, dh) = (17u64, 48u64, 96u64, 3u64, 16u64);
    let patch = d * 3 * 8 * 8 * 16;
    let layer = t * d * 3 * d // packed QKV
        + 2 * heads * t * t * dh // scores and their product with V
        + t * d * d // out-projection
        + 2 * t * d * m; // MLP
    let want = patch + 2 * layer + d * 10;
    for v in ["legacy17", "dynamo18", "legacy17fixed", "default"] {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(format!("vit_tiny.{v}.onnx"));
        let g = sss_onnx::onnx::import::import(&p).unwrap().graph;
        assert_eq!(count(&g).0, want, "{v}");
    }
}
