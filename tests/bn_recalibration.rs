//! BatchNorm recalibration after training: the running statistics become
//! the plain average of the batch statistics over the picked training
//! images, checked against the same average computed by hand in f64.

mod common;
use common::*;
use sss_onnx::batching::spread;
use sss_onnx::data::{self, Spec, Split};
use sss_onnx::graph::build::Builder;
use sss_onnx::train::model::{to_ndarray, Model};
use sss_onnx::train::options::{TrainOptions, Unset};
use sss_onnx::train::trainer::Trainer;

#[test]
fn recalibration_averages_the_batch_statistics() {
    // BN straight on the image: its batch statistics are the pixels'
    let mut b = Builder::new("input", &[-1, 1, 28, 28], 4);
    let y = b.bn("input", 1);
    let mut g = b.finish(&y);
    let bn = g
        .nodes
        .iter()
        .find(|n| n.op_type == "BatchNormalization")
        .unwrap();
    let (mean_name, var_name) = (bn.inputs[3].clone(), bn.inputs[4].clone());
    // stale statistics, far from the data's
    g.initializers.insert(
        mean_name.clone(),
        sss_onnx::graph::Tensor::F32(ndarray::arr1(&[5.0f32]).into_dyn()),
    );
    let (ds, prep, _) =
        data::load_for(&fixture("fmnist"), Split::Train, &g, &Spec::default()).unwrap();
    let batch = 48;
    let samples = 200; // 4 batches of 48 and one of 8
    let cfg = TrainOptions::default().config(batch, ds.len(), Unset::OneEpoch, None);
    let model = Model::new(&g, &candle_core::Device::Cpu).unwrap();
    let mut t = Trainer::new(model, cfg).unwrap();
    let used = t.recalibrate_bn(&ds, &prep, samples).unwrap();
    assert_eq!(used, 5);

    // by hand: per batch the mean and the unbiased variance, averaged
    let picks = spread(ds.len(), samples);
    let (mut means, mut vars) = (Vec::new(), Vec::new());
    for chunk in picks.chunks(batch) {
        let x = prep.batch(&ds, chunk).unwrap();
        let v: Vec<f64> = x.iter().map(|&p| p as f64).collect();
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|p| (p - m) * (p - m)).sum::<f64>() / (n - 1.0);
        means.push(m);
        vars.push(var);
    }
    let want_m = means.iter().sum::<f64>() / means.len() as f64;
    let want_v = vars.iter().sum::<f64>() / vars.len() as f64;
    let got_m = to_ndarray(&t.model.stats[&mean_name]).unwrap()[[0]] as f64;
    let got_v = to_ndarray(&t.model.stats[&var_name]).unwrap()[[0]] as f64;
    assert!((got_m - want_m).abs() < 1e-4, "mean {got_m} vs {want_m}");
    assert!(
        (got_v - want_v).abs() < 1e-4 * want_v,
        "var {got_v} vs {want_v}"
    );
    // one batch at the node's momentum (0.9) would have left 4.5 of the 5
    assert!(want_m.abs() < 1.0, "{want_m}");
    // no momentum override is left behind
    assert!(t.model.stat_momentum.is_none());
}
