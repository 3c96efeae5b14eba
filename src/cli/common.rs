//! Pieces several commands share: runtime selection, data loading, loading
//! models with the file name in errors.

use anyhow::Context;
use sss_onnx::data::{self, Dataset, Preprocess, Split};
use sss_onnx::graph::{convert, Graph};
use sss_onnx::runtime::{self, Ep, Kind, Options, Session};
use std::path::Path;

#[derive(clap::Args, Clone)]
pub struct RuntimeArgs {
    /// Runtime: ONNX Runtime (ort), tract, or auto (ORT when its library is found).
    #[arg(long, value_enum, default_value = "auto")]
    pub runtime: Kind,
    /// Intra-op threads (0: the runtime's default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// ONNX Runtime execution provider: cpu, or cuda (GPU build of the
    /// library; an error when it cannot start).
    #[arg(long, value_enum, default_value = "cpu")]
    pub ep: Ep,
}

impl RuntimeArgs {
    /// Resolves `auto`, saying on stderr when it falls back to tract.
    pub fn options(&self) -> Options {
        let (kind, note) = runtime::resolve(self.runtime);
        if let Some(n) = note {
            eprintln!("note: {n}");
        }
        Options {
            kind,
            threads: self.threads,
            ep: self.ep,
        }
    }
}

/// Loads a model; the library's errors already name the file.
pub fn load_graph(path: &Path) -> anyhow::Result<Graph> {
    Ok(convert::load(path)?)
}

pub fn open(path: &Path, opts: &Options) -> anyhow::Result<Box<dyn Session>> {
    runtime::open(path, opts).with_context(|| format!("opening {} in the runtime", path.display()))
}

/// Loads a split of `dir` and plans its fit to `g`'s image input.
pub fn load_data(
    dir: &Path,
    split: Split,
    g: &Graph,
) -> anyhow::Result<(Dataset, Preprocess, String)> {
    let ds =
        data::load(dir, split).with_context(|| format!("loading data from {}", dir.display()))?;
    let (name, shape) = sss_onnx::measure::inputs::image_input(g)?;
    let prep = Preprocess::plan(&ds, shape)?;
    Ok((ds, prep, name))
}
