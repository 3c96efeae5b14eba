//! Training throughput (images/s) of one model at one batch size, with the
//! time split into forward, backward and optimizer update, so the PyTorch
//! comparison can be repeated:
//!
//!     cargo bench --bench train_step -- [model.onnx|resnet18|resnet50|resnext50|mobilenet_v2] [batch] [steps]
//!
//! Defaults: the BN-kept ResNet-20 export (gated), batch 128, 5 timed steps after 1
//! warm-up step. The named ImageNet-size models are torchvision's
//! (224×224, 1000 classes), built in code with random weights; the same
//! names in `pytorch_train_step.py` time PyTorch. Peak RSS is printed.

use candle_core::{Device, Tensor};
use sss_onnx::gate;
use sss_onnx::graph::build;
use sss_onnx::onnx::convert;
use sss_onnx::structure::GateKind;
use sss_onnx::train::kernels::profile;
use sss_onnx::train::model::Model;
use sss_onnx::train::optim::Nag;
use std::time::Instant;

// as in the binary: reuse large buffers instead of returning them to the OS
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    sss_onnx::alloc::keep_freed_pages();
    sss_onnx::threads::tune_for_training();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let root = env!("CARGO_MANIFEST_DIR");
    let path = args
        .first()
        .cloned()
        .unwrap_or_else(|| format!("{root}/fixtures/resnet20_a.legacy17bn.onnx"));
    let batch: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(128);
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let g = match path.as_str() {
        "resnet18" => build::torchvision_resnet([2, 2, 2, 2], false, 64, 1000, 1),
        "resnet50" => build::torchvision_resnet([3, 4, 6, 3], true, 64, 1000, 1),
        "resnext50" => build::torchvision_resnext([3, 4, 6, 3], 32, 4, 1000, 1),
        "mobilenet_v2" => build::mobilenet_v2(32, 6, 224, 1000, 1),
        p => convert::load(p.as_ref()).expect("model"),
    };
    let (g, _) =
        gate::insert(&g, &[GateKind::Channel, GateKind::Group, GateKind::Block]).expect("gates");
    let model = Model::new(&g, &Device::Cpu).expect("lowering");
    let (_, shape) = sss_onnx::graph::io::image_input(&g).expect("image input");
    let x = sss_onnx::measure::inputs::normal(&[batch, shape[0], shape[1], shape[2]], 1);
    let x = Tensor::from_vec(
        x.iter().copied().collect::<Vec<f32>>(),
        x.shape(),
        &Device::Cpu,
    )
    .unwrap();
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    let before = peak_rss_mb();
    let y = Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();
    let mut nag = Nag::new(0.9, 1e-4);
    let (mut tf, mut tb, mut tu) = (0.0, 0.0, 0.0);
    for step in 0..=steps {
        let t0 = Instant::now();
        let (tape, _) = model.forward_taped(&x).unwrap();
        let loss = candle_nn::loss::cross_entropy(tape.output(), &y).unwrap();
        let _ = loss.to_scalar::<f32>().unwrap();
        let t1 = Instant::now();
        let grads = tape.backward(&loss).unwrap();
        let t2 = Instant::now();
        for (name, var) in &model.vars {
            if let Some(gr) = grads.get(var.as_tensor()) {
                let w = var.as_tensor().detach();
                var.set(&nag.update(name, &w, gr, 0.0).unwrap()).unwrap();
            }
        }
        let t3 = Instant::now();
        if step == 0 {
            profile::enable(true);
        }
        if step > 0 {
            tf += (t1 - t0).as_secs_f64();
            tb += (t2 - t1).as_secs_f64();
            tu += (t3 - t2).as_secs_f64();
        }
    }
    let n = steps as f64;
    let kernels = profile::take();
    let total = (tf + tb + tu) / n;
    println!("model {path}, batch {batch}, {steps} steps");
    println!("forward  {:8.1} ms", tf / n * 1e3);
    println!("backward {:8.1} ms", tb / n * 1e3);
    println!("update   {:8.1} ms", tu / n * 1e3);
    println!(
        "step     {:8.1} ms  = {:.1} images/s",
        total * 1e3,
        batch as f64 / total
    );
    // where the step goes: our kernels by name, the rest is candle's own ops
    // (adds, cross-entropy, gradient accumulation, copies) and the framework
    let mut rest = total;
    for (name, t, calls) in kernels {
        println!(
            "  {name:28} {:7.1} ms  {:5.1} %  ({} calls/step)",
            t / n * 1e3,
            t / n / total * 100.0,
            calls / steps.max(1)
        );
        rest -= t / n;
    }
    println!(
        "  {:28} {:7.1} ms  {:5.1} %",
        "other (candle ops)",
        rest * 1e3,
        rest / total * 100.0
    );
    println!(
        "peak RSS {:.0} MB ({:.0} MB before the first step: weights and input)",
        peak_rss_mb(),
        before
    );
}

/// The process's peak resident set (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
