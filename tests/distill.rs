//! Distillation from the model as it was at the start: the loss is
//! α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE, checked by hand in
//! f64 on the logits (at the start, student = teacher, its distillation
//! part is 0), its gradient against finite differences, and without labels
//! the labels are not read.

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
            .0
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let l = to_ndarray(&logits).unwrap();
        let mut want = 0.0;
        for (i, &label) in labels.iter().enumerate() {
            let row: Vec<f64> = (0..l.shape()[1]).map(|j| l[[i, j]] as f64).collect();
            // KL of a distribution to itself is 0: only the labels count
            let ce = -softmax(&row, 1.0)[label as usize].ln();
            want += (1.0 - alpha) * ce / labels.len() as f64;
        }
        assert!(
            (got - want).abs() < 1e-4 * want.abs().max(1.0),
            "α {alpha} T {temp}: {got} vs {want}"
        );
    }
}

/// T²·KL(p ‖ q) per row, averaged, in f64.
fn kl_by_hand(s: &[Vec<f64>], t_logits: &[Vec<f64>], temp: f64) -> f64 {
    let mut sum = 0.0;
    for (row_s, row_t) in s.iter().zip(t_logits) {
        let p = softmax(row_t, temp);
        let q = softmax(row_s, temp);
        sum += p.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum::<f64>();
    }
    temp * temp * sum / s.len() as f64
}

fn random_rows(n: usize, k: usize, seed: u64) -> Vec<Vec<f64>> {
    let v = sss_onnx::measure::inputs::normal(&[n, k], seed);
    v.outer_iter()
        .map(|r| r.iter().map(|&x| 3.0 * x as f64).collect())
        .collect()
}

fn tensor(rows: &[Vec<f64>]) -> Tensor {
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
}

#[test]
fn distillation_is_the_kl_divergence_with_the_gradient_of_finite_differences() {
    use sss_onnx::train::trainer::distillation;
    let (s, t) = (random_rows(3, 7, 1), random_rows(3, 7, 2));
    for temp in [1.0, 4.0] {
        let got = distillation(&tensor(&s), &tensor(&t), temp)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let want = kl_by_hand(&s, &t, temp);
        assert!(want > 1e-3, "the rows must differ");
        assert!((got - want).abs() < 1e-9, "T {temp}: {got} vs {want}");
        // a student equal to its teacher scores 0
        let same = distillation(&tensor(&t), &tensor(&t), temp)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(same.abs() < 1e-12, "{same}");
        // the gradient in the student's logits, against central differences
        let var = candle_core::Var::from_tensor(&tensor(&s)).unwrap();
        let loss = distillation(var.as_tensor(), &tensor(&t), temp).unwrap();
        let grads = loss.backward().unwrap();
        let g = grads
            .get(var.as_tensor())
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        let h = 1e-6;
        for i in 0..s.len() {
            for j in 0..s[0].len() {
                let (mut up, mut down) = (s.clone(), s.clone());
                up[i][j] += h;
                down[i][j] -= h;
                let fd = (kl_by_hand(&up, &t, temp) - kl_by_hand(&down, &t, temp)) / (2.0 * h);
                assert!(
                    (g[i][j] - fd).abs() < 1e-6,
                    "T {temp} [{i},{j}]: {} vs {fd}",
                    g[i][j]
                );
            }
        }
    }
}

#[test]
fn without_labels_the_loss_is_distillation_alone_and_reads_no_label() {
    let g = load(&fixture("resnet20_fmnist.legacy13.onnx"));
    let (gated, _) = gate::insert(&g, &[GateKind::Channel, GateKind::Block]).unwrap();
    let x = sss_onnx::measure::inputs::normal(&[4, 3, 32, 32], 3);
    let xt = Tensor::from_vec(
        x.iter().copied().collect::<Vec<_>>(),
        x.shape(),
        &Device::Cpu,
    )
    .unwrap();
    let cfg = Config {
        label_free: true,
        ..Config::default()
    };
    let tr = Trainer::new(Model::new(&gated, &Device::Cpu).unwrap(), cfg).unwrap();
    let (teacher, _) = tr.model.forward(&xt, false).unwrap();
    // a student that differs from the teacher
    let student = ((&teacher * 0.5).unwrap() + 0.3).unwrap();
    let value = |labels: [u32; 4]| {
        let y = Tensor::new(&labels, &Device::Cpu).unwrap();
        let (loss, t) = tr.loss(&xt, &student, &y).unwrap();
        assert!(t.is_some(), "the teacher's logits come back");
        loss.to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let (a, b) = (value([0, 0, 0, 0]), value([9, 2, 5, 7]));
    assert_eq!(a, b, "labels changed the label-free loss");
    let rows = |m: &Tensor| -> Vec<Vec<f64>> {
        let l = to_ndarray(m).unwrap();
        l.outer_iter()
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect()
    };
    let want = kl_by_hand(&rows(&student), &rows(&teacher), 4.0);
    assert!(want > 1e-3);
    assert!((a - want).abs() < 1e-4 * want, "{a} vs {want}");
}

#[test]
fn output_matching_is_the_relative_squared_error_with_its_gradient() {
    use sss_onnx::train::trainer::output_matching;
    // maps [2, 3, 2, 2], as a segmenter gives
    let v = |seed| -> Vec<f64> {
        sss_onnx::measure::inputs::normal(&[24], seed)
            .iter()
            .map(|&x| x as f64)
            .collect()
    };
    let (s, t) = (v(5), v(6));
    let by_hand = |s: &[f64]| {
        let err: f64 = s.iter().zip(&t).map(|(a, b)| (a - b) * (a - b)).sum();
        err / t.iter().map(|b| b * b).sum::<f64>()
    };
    let tensor = |x: &[f64]| Tensor::from_vec(x.to_vec(), (2, 3, 2, 2), &Device::Cpu).unwrap();
    let got = output_matching(&tensor(&s), &tensor(&t))
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!((got - by_hand(&s)).abs() < 1e-12, "{got}");
    let zero = output_matching(&tensor(&t), &tensor(&t))
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert_eq!(zero, 0.0);
    let var = candle_core::Var::from_tensor(&tensor(&s)).unwrap();
    let grads = output_matching(var.as_tensor(), &tensor(&t))
        .unwrap()
        .backward()
        .unwrap();
    let g: Vec<f64> = grads
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for i in 0..s.len() {
        let (mut up, mut down) = (s.clone(), s.clone());
        up[i] += 1e-6;
        down[i] -= 1e-6;
        let fd = (by_hand(&up) - by_hand(&down)) / 2e-6;
        assert!((g[i] - fd).abs() < 1e-6, "[{i}] {} vs {fd}", g[i]);
    }
}
