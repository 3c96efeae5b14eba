//! The candle lowering in eval mode computes what ONNX Runtime and tract
//! compute, on every fixture (and on gated graphs), in `forward` and in
//! the scoring path `infer`.

mod common;
use candle_core::{Device, Tensor};
use common::*;
use sss_onnx::train::model::{to_ndarray, Model};

fn candle_out(g: &sss_onnx::graph::Graph, x: &ndarray::ArrayD<f32>) -> ndarray::ArrayD<f32> {
    let m = Model::new(g, &Device::Cpu).unwrap();
    let t = Tensor::from_vec(
        x.iter().copied().collect::<Vec<_>>(),
        x.shape(),
        &Device::Cpu,
    )
    .unwrap();
    let y = to_ndarray(&m.forward(&t, false).unwrap().0).unwrap();
    // scoring's path (detached weights, values dropped after their last
    // use) computes the same numbers
    let scored = to_ndarray(&m.infer(&t).unwrap()).unwrap();
    assert_eq!(y, scored);
    y
}

#[test]
fn eval_mode_matches_pytorch_and_the_runtimes_on_every_fixture() {
    for p in fixtures() {
        let (x, y) = reference(&arch(&p));
        let g = load(&p);
        let c = candle_out(&g, &x);
        assert!(
            max_abs(&c, &y) <= 1e-4,
            "{}: candle vs PyTorch {}",
            p.display(),
            max_abs(&c, &y)
        );
        let t = run_model(&p, &tract(), "input", &x);
        assert!(max_abs(&c, &t) <= 1e-4, "{}: candle vs tract", p.display());
    }
    require_ort();
    let p = fixture("resnext.legacy17bn.onnx");
    let x = sss_onnx::measure::inputs::normal(&[5, 3, 64, 64], 3);
    let o = run_model(&p, &ort(), "input", &x);
    assert!(max_abs(&candle_out(&load(&p), &x), &o) <= 1e-4);
}
