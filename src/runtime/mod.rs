//! Runtimes that execute ONNX files, behind one small trait: ONNX Runtime
//! (the deployment target, loaded at run time from a shared library) and
//! tract (pure Rust, always compiled in, so the tool works with nothing
//! installed).

pub mod compare;
mod locate;
mod ort_backend;
mod tract_backend;

pub use locate::{find_onnxruntime, OrtLibrary};

use crate::error::Result;
use ndarray::ArrayD;
use std::path::Path;
use std::time::{Duration, Instant};

/// Named f32 tensors in and out.
pub type Tensors = Vec<(String, ArrayD<f32>)>;

pub trait Session {
    /// "onnxruntime 1.32.0 (CPU)" or "tract".
    fn describe(&self) -> String;
    fn run(&mut self, inputs: &Tensors) -> Result<Tensors>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// ONNX Runtime when its library is found, else tract.
    Auto,
    Ort,
    Tract,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    pub kind: Kind,
    /// Intra-op threads; 0 = the runtime's default.
    pub threads: usize,
    /// ONNX Runtime's execution provider (tract is CPU only).
    pub ep: Ep,
}

/// Where ONNX Runtime executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Ep {
    #[default]
    Cpu,
    /// The CUDA execution provider; needs the GPU build of the library
    /// (`scripts/fetch-onnxruntime.sh --gpu`) and is an error, not a silent
    /// CPU fallback, when it cannot start.
    Cuda,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kind: Kind::Auto,
            threads: 0,
            ep: Ep::Cpu,
        }
    }
}

/// Which runtime `Kind::Auto` resolves to, and why (said to the user).
pub fn resolve(kind: Kind) -> (Kind, Option<String>) {
    match kind {
        Kind::Auto => match find_onnxruntime() {
            Ok(_) => (Kind::Ort, None),
            Err(why) => (Kind::Tract, Some(format!("{why}; using tract instead"))),
        },
        k => (k, None),
    }
}

fn tract_has_no_cuda() -> crate::error::Error {
    crate::error::Error::Runtime {
        backend: "tract",
        reason: "tract runs on the CPU only; --ep cuda needs ONNX Runtime's GPU library".into(),
    }
}

/// Opens `model` on the runtime `opts.kind` names.
pub fn open(model: &Path, opts: &Options) -> Result<Box<dyn Session>> {
    match (resolve(opts.kind).0, opts.ep) {
        (Kind::Ort, ep) => Ok(Box::new(ort_backend::OrtSession::open(
            model,
            opts.threads,
            ep,
        )?)),
        (_, Ep::Cuda) => Err(tract_has_no_cuda()),
        (_, Ep::Cpu) => Ok(Box::new(tract_backend::TractSession::open(model)?)),
    }
}

/// Opens a graph held in memory (serialised here; external data inline);
/// `label` names it in errors.
pub fn open_graph(
    g: &crate::graph::Graph,
    label: &Path,
    opts: &Options,
) -> Result<Box<dyn Session>> {
    use prost::Message;
    let bytes = crate::onnx::convert::to_proto(g).encode_to_vec();
    match (resolve(opts.kind).0, opts.ep) {
        (Kind::Ort, ep) => Ok(Box::new(ort_backend::OrtSession::open_bytes(
            &bytes,
            label,
            opts.threads,
            ep,
        )?)),
        (_, Ep::Cuda) => Err(tract_has_no_cuda()),
        (_, Ep::Cpu) => Ok(Box::new(tract_backend::TractSession::open_bytes(
            &bytes, label,
        )?)),
    }
}

/// Opens an imported model: the file itself, or, when the file fixes the
/// batch, its re-batched graph; errors name the file.
pub fn open_imported(
    imp: &crate::onnx::import::Imported,
    path: &Path,
    opts: &Options,
) -> Result<Box<dyn Session>> {
    let s = if imp.fixed_batch.is_some() {
        open_graph(&imp.graph, path, opts)
    } else {
        open(path, opts)
    };
    s.map_err(|e| crate::error::Error::InModel {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// Opens a model file as the pipeline imports it (see `open_imported`).
pub fn open_file(path: &Path, opts: &Options) -> Result<Box<dyn Session>> {
    open_imported(&crate::onnx::import::import(path)?, path, opts)
}

/// Runs `inputs` `warmup` times untimed, then times each run until both
/// `iters` runs and `min_time` have passed (at most `max_iters`).
pub fn time_runs(
    s: &mut dyn Session,
    inputs: &Tensors,
    warmup: usize,
    iters: usize,
) -> Result<Vec<Duration>> {
    for _ in 0..warmup {
        s.run(inputs)?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        s.run(inputs)?;
        times.push(t.elapsed());
    }
    Ok(times)
}
