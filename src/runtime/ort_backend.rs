//! ONNX Runtime (CPU or CUDA execution provider) through `ort` with a
//! dynamically loaded library.

use super::{find_onnxruntime, Ep, Session, Tensors};
use crate::error::{Error, Result};
use std::path::Path;
use std::sync::OnceLock;

const BACKEND: &str = "onnxruntime";

fn err(reason: impl std::fmt::Display) -> Error {
    Error::Runtime {
        backend: BACKEND,
        reason: reason.to_string(),
    }
}

/// One environment per process; ort keeps only a weak reference to it.
fn environment() -> Result<&'static ort::environment::Environment> {
    static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> =
        OnceLock::new();
    ENV.get_or_init(|| {
        let lib = find_onnxruntime()?;
        let builder = ort::init_from(&lib.path).map_err(|e| e.to_string())?;
        builder
            .with_name("sss-onnx")
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(err)
}

enum Source<'a> {
    File(&'a Path),
    Bytes(&'a [u8], &'a Path),
}

impl Source<'_> {
    fn label(&self) -> &Path {
        match self {
            Source::File(p) | Source::Bytes(_, p) => p,
        }
    }
}

pub struct OrtSession {
    session: ort::session::Session,
    version: String,
    ep: Ep,
}

impl OrtSession {
    pub fn open(model: &Path, threads: usize, ep: Ep) -> Result<Self> {
        Self::open_from(Source::File(model), threads, ep)
    }

    /// A model serialised in memory (a re-batched fixed-batch export);
    /// `label` names it in errors.
    pub fn open_bytes(bytes: &[u8], label: &Path, threads: usize, ep: Ep) -> Result<Self> {
        Self::open_from(Source::Bytes(bytes, label), threads, ep)
    }

    fn open_from(model: Source, threads: usize, ep: Ep) -> Result<Self> {
        let env = environment()?;
        let mut b = ort::session::Session::builder(env)
            .map_err(err)?
            .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level3)
            .map_err(err)?;
        if threads > 0 {
            b = b.with_intra_threads(threads).map_err(err)?;
        }
        if ep == Ep::Cuda {
            // error_on_failure: a CPU library or a missing GPU must not pass
            // silently for a CUDA measurement
            b = b
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| {
                    err(format!(
                        "the CUDA execution provider did not start ({e}); it needs the GPU build of ONNX Runtime (scripts/fetch-onnxruntime.sh --gpu, then ORT_DYLIB_PATH) and a visible GPU"
                    ))
                })?;
        }
        let session = match model {
            Source::File(p) => b.commit_from_file(p),
            Source::Bytes(bytes, _) => b.commit_from_memory(bytes),
        }
        .map_err(|e| err(format!("{}: {e}", model.label().display())))?;
        Ok(OrtSession {
            session,
            version: super::locate::ORT_VERSION.to_string(),
            ep,
        })
    }
}

impl Session for OrtSession {
    fn describe(&self) -> String {
        let ep = match self.ep {
            Ep::Cpu => "CPU",
            Ep::Cuda => "CUDA",
        };
        format!("onnxruntime {} ({ep})", self.version)
    }

    fn run(&mut self, inputs: &Tensors) -> Result<Tensors> {
        let mut values: Vec<(String, ort::session::SessionInputValue)> = Vec::new();
        for (name, a) in inputs {
            let t = ort::value::Tensor::from_array(a.clone()).map_err(err)?;
            values.push((name.clone(), t.into()));
        }
        let names: Vec<String> = self
            .session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let outs = self.session.run(values).map_err(err)?;
        let mut result = Vec::new();
        for name in names {
            let v = outs
                .get(name.as_str())
                .ok_or_else(|| err(format!("output `{name}` missing")))?;
            let a = v.try_extract_array::<f32>().map_err(err)?;
            result.push((name, a.to_owned()));
        }
        Ok(result)
    }
}
