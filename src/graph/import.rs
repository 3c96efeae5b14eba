//! A model as the pipeline works on it: loaded, exporters' constant
//! subgraphs folded, a fixed batch made symbolic. What the file had is
//! recorded so that what is written can match it.

use super::batch::{self, FixedBatch};
use super::{convert, fold, Graph};
use crate::error::{Error, Result};
use crate::onnx::WriteOptions;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct Imported {
    pub graph: Graph,
    /// `Some` when the file fixed the batch (restored on writing unless a
    /// dynamic batch is asked for).
    pub fixed_batch: Option<FixedBatch>,
    /// Nodes replaced by initializers.
    pub folded: usize,
    /// Whether the file kept its weights in external data.
    pub external_data: bool,
    /// Why a fixed batch could not be made symbolic (the graph then stays
    /// at the file's batch; commands that need another one say this).
    pub batch_locked: Option<String>,
}

/// How a model derived from an imported one is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteChoice {
    /// Keep the batch symbolic even when the source fixed it.
    pub dynamic_batch: bool,
    /// `Some(true)`: weights in `<file>.data`; `Some(false)`: inline;
    /// `None`: as the source had them.
    pub external_data: Option<bool>,
}

impl Imported {
    /// The graph as it should be written: the file's fixed batch back
    /// unless `dynamic_batch`.
    pub fn for_writing(&self, g: &Graph, dynamic_batch: bool) -> Graph {
        let mut out = g.clone();
        if let (Some(fb), false) = (&self.fixed_batch, dynamic_batch) {
            batch::restore(&mut out, fb);
        }
        out
    }

    /// An error unless the graph runs at `batch`.
    pub fn check_batch(&self, batch: usize) -> Result<()> {
        match &self.batch_locked {
            Some(why) if self.fixed_batch.is_none() => {
                let fixed = self
                    .graph
                    .data_inputs()
                    .next()
                    .and_then(|v| v.shape.as_ref()?.first().cloned());
                match fixed {
                    Some(super::Dim::Fixed(b)) if b as usize == batch => Ok(()),
                    _ => Err(Error::Graph(format!(
                        "batch {batch} is not possible: {why}"
                    ))),
                }
            }
            _ => Ok(()),
        }
    }

    /// Writes `g` (derived from this model) as `choice` says.
    pub fn save(&self, g: &Graph, path: &Path, choice: WriteChoice) -> Result<()> {
        let out = self.for_writing(g, choice.dynamic_batch);
        let opts = if choice.external_data.unwrap_or(self.external_data) {
            WriteOptions::external()
        } else {
            WriteOptions::default()
        };
        convert::save(&out, path, &opts)
    }
}

/// Prepares a loaded graph (see the module comment).
fn prepare(mut g: Graph) -> Result<Imported> {
    let folded = fold::fold_constants(&mut g)?;
    let (fixed_batch, batch_locked) = match batch::make_symbolic(&mut g) {
        Ok(fb) => (fb, None),
        Err(Error::Graph(why)) => (None, Some(why)),
        Err(e) => return Err(e),
    };
    Ok(Imported {
        graph: g,
        fixed_batch,
        folded,
        external_data: false,
        batch_locked,
    })
}

/// Loads `path` and prepares it; errors name the file.
pub fn import(path: &Path) -> Result<Imported> {
    let g = convert::load(path)?;
    let external = crate::onnx::io::uses_external_data(path)?;
    let mut imp = prepare(g).map_err(|e| Error::InModel {
        path: path.to_path_buf(),
        source: Box::new(e),
    })?;
    imp.external_data = external;
    Ok(imp)
}

/// Prepares a graph built in memory (no file behind it).
pub fn prepare_graph(g: Graph) -> Result<Imported> {
    prepare(g)
}
