//! Training on real data: the full Fashion-MNIST (scripts/fetch-fashion-mnist.sh
//! puts it in .data/; the README's test command and CI run that script).
//! Fine-tuning the trained fixture keeps its test accuracy; one epoch from
//! random initialisation learns; the written ONNX gives the accuracy candle
//! saw, in ONNX Runtime.

mod common;
use candle_core::Device;
use common::*;
use sss_onnx::data::{self, Dataset, Preprocess, Split};
use sss_onnx::graph::{Graph, Tensor};
use sss_onnx::measure::accuracy;
use sss_onnx::onnx::convert;
use sss_onnx::train::model::Model;
use sss_onnx::train::schedule::{Kind, Schedule};
use sss_onnx::train::scoring;
use sss_onnx::train::trainer::{Config, Trainer};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn full_data() -> PathBuf {
    let p = root().join(".data").join("fashion-mnist");
    assert!(
        p.join("train-images-idx3-ubyte.gz").is_file(),
        "run scripts/fetch-fashion-mnist.sh first (the README's test command does)"
    );
    p
}

fn config(steps: usize, lr: f64) -> Config {
    Config {
        steps,
        schedule: Schedule::new(Kind::Cosine, lr, steps, 0),
        gamma: 0.0,
        seed: 3,
        log_every: 50,
        checkpoint_every: 1000,
        budget_steps: 1,
        blocks_first: false,
        ..Config::default()
    }
}

fn train(g: &Graph, train: Dataset, prep: &Preprocess, cfg: Config) -> Graph {
    let mut t = Trainer::new(Model::new(g, &Device::Cpu).unwrap(), cfg).unwrap();
    t.run(Arc::new(train), prep, &AtomicBool::new(false), &mut |r| {
        eprintln!("{r:?}")
    })
    .unwrap();
    t.model.write_back().unwrap()
}

/// ORT accuracy of `g` written to disk, and candle's on the same data.
fn both_accuracies(g: &Graph, test: &Dataset, prep: &Preprocess) -> (f64, f64) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("m.onnx");
    convert::save(g, &p, &Default::default()).unwrap();
    let mut s = sss_onnx::runtime::open(&p, &ort()).unwrap();
    let a = accuracy::evaluate(s.as_mut(), "input", test, prep, 500, None)
        .unwrap()
        .top1;
    let c = scoring::top1(&Model::new(g, &Device::Cpu).unwrap(), test, prep, 500, None).unwrap();
    (a, c)
}

#[test]
fn fine_tuning_the_trained_fixture_keeps_its_accuracy() {
    let dir = full_data();
    let g = load(&fixture("resnet20_fmnist.legacy13.onnx"));
    let (tr, te) = (
        data::load(&dir, Split::Train).unwrap(),
        data::load(&dir, Split::Test).unwrap(),
    );
    let prep = Preprocess::plan(&tr, [3, 32, 32]).unwrap();
    let (before, _) = both_accuracies(&g, &te, &prep);
    assert!(
        (before - 0.9118).abs() < 1e-9,
        "the export script measured 91.18 %: {before}"
    );
    let tuned = train(&g, tr, &prep, config(200, 0.002));
    let (ort_acc, candle_acc) = both_accuracies(&tuned, &te, &prep);
    assert!(
        (ort_acc - before).abs() <= 0.005,
        "fine-tuned {ort_acc} vs {before}"
    );
    assert!(
        (ort_acc - candle_acc).abs() <= 0.0005,
        "ORT {ort_acc} vs candle {candle_acc}"
    );
}

/// He-normal convolutions, identity BatchNorm, small fully connected layer.
fn reinitialise(g: &mut Graph) {
    let bn: Vec<(String, f32)> = g
        .nodes
        .iter()
        .filter(|n| n.op_type == "BatchNormalization")
        .flat_map(|n| {
            [
                (n.inputs[1].clone(), 1.0),
                (n.inputs[2].clone(), 0.0),
                (n.inputs[3].clone(), 0.0),
                (n.inputs[4].clone(), 1.0),
            ]
        })
        .collect();
    let mut seed = 11;
    for (name, t) in g.initializers.iter_mut() {
        let Tensor::F32(a) = t else { continue };
        if let Some((_, v)) = bn.iter().find(|(n, _)| n == name) {
            a.fill(*v);
        } else if a.ndim() >= 2 {
            let fan_in: usize = a.shape()[1..].iter().product();
            let scale = if a.ndim() == 4 {
                (2.0 / fan_in as f32).sqrt()
            } else {
                (1.0 / fan_in as f32).sqrt()
            };
            seed += 1;
            *a = sss_onnx::measure::inputs::normal(a.shape(), seed).mapv(|v| v * scale);
        } else {
            a.fill(0.0);
        }
    }
}

#[test]
fn one_epoch_from_random_initialisation_learns_fashion_mnist() {
    let dir = full_data();
    let mut g = load(&fixture("resnet20_a.legacy17bn.onnx"));
    reinitialise(&mut g);
    let (tr, te) = (
        data::load(&dir, Split::Train).unwrap(),
        data::load(&dir, Split::Test).unwrap(),
    );
    let prep = Preprocess::plan(&tr, [3, 32, 32]).unwrap();
    let steps = tr.len() / 128;
    let trained = train(&g, tr, &prep, config(steps, 0.1));
    let (ort_acc, candle_acc) = both_accuracies(&trained, &te, &prep);
    assert!(ort_acc >= 0.80, "one epoch: {ort_acc}");
    assert!(
        (ort_acc - candle_acc).abs() <= 0.0005,
        "ORT {ort_acc} vs candle {candle_acc}"
    );
}
