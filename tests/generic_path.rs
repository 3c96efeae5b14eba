//! The lowering other devices (CUDA) run, candle's own ops instead of the
//! CPU custom kernels, checked here on the CPU against the custom kernels:
//! same outputs and same gradients (f64, train and eval mode) on every
//! architecture the fixtures have, with gates in. So a GPU run computes what
//! the tested CPU path computes, up to the device's float arithmetic.

mod common;
use candle_core::{DType, Device, Var};
use common::*;
use sss_onnx::gate;
use sss_onnx::structure::GateKind;
use sss_onnx::train::model::Model;

#[test]
fn candle_ops_path_matches_the_custom_kernels() {
    let mut seen = 0;
    for name in [
        "resnet20_a.legacy13.onnx",   // option-A shortcut, folded BN
        "resnet14_b.legacy17bn.onnx", // projection, BN kept
        "tv_basic.legacy17bn.onnx",   // stem max-pool 3×3/2 pad 1
        "resnext.legacy17bn.onnx",    // grouped convs
        "tv_bottleneck.dynamo18.onnx",
        "vit_tiny.legacy17.onnx", // attention, channels-last gates
    ] {
        let g = load(&fixture(name));
        let (g, _) =
            gate::insert(&g, &[GateKind::Channel, GateKind::Group, GateKind::Block]).unwrap();
        let fused = Model::with_dtype(&g, &Device::Cpu, DType::F64).unwrap();
        let generic = Model::with_dtype(&g, &Device::Cpu, DType::F64)
            .unwrap()
            .without_custom_kernels();
        let (_, shape) = sss_onnx::graph::io::image_input(&g).unwrap();
        let shape: Vec<usize> = [2].into_iter().chain(shape.iter().copied()).collect();
        let x = f64_input(&shape);
        for train in [false, true] {
            let (ya, sa) = fused.forward(&x, train).unwrap();
            let (yb, sb) = generic.forward(&x, train).unwrap();
            let d = max_diff(&ya, &yb);
            assert!(d < 1e-9, "{name} train={train}: outputs differ by {d}");
            // running statistics: the same updates
            assert_eq!(sa.len(), sb.len(), "{name}");
            for ((ka, va), (kb, vb)) in sa.iter().zip(&sb) {
                assert_eq!(ka, kb);
                assert!(max_diff(va, vb) < 1e-9, "{name}: {ka}");
            }
            let r = f64_input(ya.dims());
            let ga = (&ya * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (&yb * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for (k, va) in &fused.vars {
                let vb: &Var = &generic.vars[k];
                match (ga.get(va.as_tensor()), gb.get(vb.as_tensor())) {
                    (Some(a), Some(b)) => {
                        let d = max_diff(a, b);
                        let scale = 1.0 + max_diff(a, &a.zeros_like().unwrap());
                        assert!(
                            d <= 1e-9 * scale,
                            "{name} train={train}: ∂/∂{k} differs by {d}"
                        );
                    }
                    (None, None) => {}
                    (a, b) => panic!(
                        "{name}: gradient for {k}: {} vs {}",
                        a.is_some(),
                        b.is_some()
                    ),
                }
            }
        }
        seen += 1;
    }
    assert_eq!(seen, 6);
}
