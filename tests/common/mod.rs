//! Helpers shared by the integration tests.
#![allow(dead_code)]

use sss_onnx::graph::{Graph, Tensor};
use sss_onnx::onnx::convert;
use sss_onnx::onnx::convert::tensor_from_proto;
use sss_onnx::onnx::proto::TensorProto;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("fixtures").join(name)
}

/// Every fixture model file.
pub fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures"))
        .expect("fixtures folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        // `compress` writes <model>.sss.onnx beside its input (the README's
        // main command does so in fixtures/): outputs, not fixtures
        .filter(|p| !p.to_string_lossy().contains(".sss."))
        .collect();
    v.sort();
    assert!(v.len() >= 18, "fixtures missing: {v:?}");
    v
}

/// The architecture name of a fixture file: `resnet20_a.legacy13.onnx` → `resnet20_a`.
pub fn arch(p: &Path) -> String {
    let f = p.file_name().unwrap().to_string_lossy();
    f.split('.').next().unwrap().to_string()
}

/// The file's graph as written (no folding, batch as the file has it).
pub fn load_file(p: &Path) -> Graph {
    convert::load(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The graph as the pipeline works on it (constants folded, a fixed batch
/// made symbolic), as every command loads models.
pub fn load(p: &Path) -> Graph {
    sss_onnx::onnx::import::import(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .graph
}

pub fn read_tensor(p: &Path) -> Tensor {
    use prost::Message;
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    tensor_from_proto(&TensorProto::decode(bytes.as_slice()).unwrap()).unwrap()
}

/// The PyTorch input and output stored by the export script.
pub fn reference(arch: &str) -> (ndarray::ArrayD<f32>, ndarray::ArrayD<f32>) {
    let dir = root().join("fixtures").join("ref");
    let x = read_tensor(&dir.join(format!("{arch}.in.pb")));
    let y = read_tensor(&dir.join(format!("{arch}.out.pb")));
    (x.as_f32().unwrap().clone(), y.as_f32().unwrap().clone())
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sss-onnx"))
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run sss-onnx")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// ONNX Runtime must be present for the tests that compare with it: CI and
/// the README fetch it first. A missing library fails those tests loudly.
pub fn require_ort() {
    if let Err(why) = sss_onnx::runtime::find_onnxruntime() {
        panic!("{why}");
    }
}

pub fn ort() -> sss_onnx::runtime::Options {
    require_ort();
    sss_onnx::runtime::Options {
        kind: sss_onnx::runtime::Kind::Ort,
        threads: 1,
        ep: sss_onnx::runtime::Ep::Cpu,
    }
}

pub fn tract() -> sss_onnx::runtime::Options {
    sss_onnx::runtime::Options {
        kind: sss_onnx::runtime::Kind::Tract,
        threads: 1,
        ep: sss_onnx::runtime::Ep::Cpu,
    }
}

pub fn run_model(
    p: &Path,
    opts: &sss_onnx::runtime::Options,
    input: &str,
    x: &ndarray::ArrayD<f32>,
) -> ndarray::ArrayD<f32> {
    // a fixed-batch export runs re-batched, as the commands run it; a
    // single input is fed whatever the exporter named it
    let imp = sss_onnx::onnx::import::import(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut s = if imp.fixed_batch.is_some() {
        sss_onnx::runtime::open_graph(&imp.graph, p, opts)
    } else {
        sss_onnx::runtime::open(p, opts)
    }
    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let inputs: Vec<String> = imp.graph.data_inputs().map(|v| v.name.clone()).collect();
    let name = match inputs.as_slice() {
        [only] => only.clone(),
        _ => input.to_string(),
    };
    let out = s.run(&vec![(name, x.clone())]).unwrap();
    out.into_iter().next().unwrap().1
}

pub fn max_abs(a: &ndarray::ArrayD<f32>, b: &ndarray::ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Normal samples (seed 3) as an f64 candle tensor of `shape`.
pub fn f64_input(shape: &[usize]) -> candle_core::Tensor {
    let a = sss_onnx::measure::inputs::normal(shape, 3);
    candle_core::Tensor::from_vec(
        a.iter().map(|&v| v as f64).collect::<Vec<f64>>(),
        shape,
        &candle_core::Device::Cpu,
    )
    .unwrap()
}

/// The largest absolute difference between two f64 tensors.
pub fn max_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}
