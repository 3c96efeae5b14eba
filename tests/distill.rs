//! Distillation from the model as it was at the start: the loss is
//! α·T²·H(softmax(t/T), softmax(s/T)) + (1 − α)·CE, checked by hand in f64
//! on the logits; at the start (student = teacher) its distillation part
//! is T² times the entropy of the softened targets.

mod common;
use candle_core::{Device, Tensor};
use common::*;
use sss_onnx::gate;
use sss_onnx::structure::GateKind;
use sss_onnx::train::model::{to_ndarray, Model};
use sss_onnx::train::trainer::{Config, Trainer};

fn softmax(v: &[f64], t: f64) -> Vec<f64> {
    let m = v.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = v.iter().map(|x| ((x - m) / t).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

#[test]
fn distillation_loss_matches_the_definition() {
    let g = load(&fixture("resnet20_fmnist.legacy13.onnx"));
    let (gated, _) = gate::insert(&g, &[GateKind::Channel, GateKind::Block]).unwrap();
    let x = sss_onnx::measure::inputs::normal(&[4, 3, 32, 32], 7);
    let xt = Tensor::from_vec(
        x.iter().copied().collect::<Vec<_>>(),
        x.shape(),
        &Device::Cpu,
    )
    .unwrap();
    let labels = [3u32, 1, 4, 1];
    let y = Tensor::new(&labels, &Device::Cpu).unwrap();
    for (alpha, temp) in [(1.0, 4.0), (0.5, 2.0), (0.0, 4.0)] {
        let cfg = Config {
            distill: alpha,
            distill_temperature: temp,
            ..Config::default()
        };
        let tr = Trainer::new(Model::new(&gated, &Device::Cpu).unwrap(), cfg).unwrap();
        // the student's logits = the teacher's (nothing trained yet)
        let (logits, _) = tr.model.forward(&xt, false).unwrap();
        let got = tr
            .loss(&xt, &logits, &y)
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let l = to_ndarray(&logits).unwrap();
        let mut want = 0.0;
        for (i, &label) in labels.iter().enumerate() {
            let row: Vec<f64> = (0..l.shape()[1]).map(|j| l[[i, j]] as f64).collect();
            let p = softmax(&row, temp);
            let entropy: f64 = -p.iter().map(|&q| q * q.ln()).sum::<f64>();
            let ce = -softmax(&row, 1.0)[label as usize].ln();
            want += (alpha * temp * temp * entropy + (1.0 - alpha) * ce) / labels.len() as f64;
        }
        assert!(
            (got - want).abs() < 1e-4 * want.abs().max(1.0),
            "α {alpha} T {temp}: {got} vs {want}"
        );
    }
}
