//! A model as the pipeline works on it: loaded, exporters' constant
//! subgraphs folded, a fixed batch made symbolic. What the file had is
//! recorded so that what is written can match it.

use super::convert;
use crate::error::{Error, Result};
use crate::graph::batch::{self, FixedBatch};
use crate::graph::{fold, untangle, Graph};
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
    /// The source file's name and SHA-256 (hex), recorded in what is
    /// written from it.
    pub source: Option<(String, String)>,
    /// Why a fixed batch could not be made symbolic (the graph then stays
    /// at the file's batch; commands that need another one say this).
    pub batch_locked: Option<String>,
}

impl Imported {
    /// What the user should know about how `path` was imported: a batch
    /// it fixes (made symbolic inside the tool, restored on writing) or one
    /// that could not be freed.
    pub fn notes(&self, path: &Path) -> Vec<String> {
        let mut out = vec![];
        if let Some(why) = &self.batch_locked {
            out.push(format!(
                "note: {}: {why}; it runs at its own batch only",
                path.display()
            ));
        }
        if let Some(fb) = &self.fixed_batch {
            out.push(format!(
                "note: {} fixes the batch at {}; it runs at any batch inside the tool, and models written from it keep batch {} (--dynamic-batch to change)",
                path.display(),
                fb.batch,
                fb.batch
            ));
        }
        out
    }
}

/// How a model derived from an imported one is written.
#[derive(Debug, Clone, Default)]
pub struct WriteChoice {
    /// The command that wrote it (`compress`, `gate`, ...).
    pub command: &'static str,
    /// The recipe it ran with (TOML, `compress --config` reads it), to
    /// repeat the run.
    pub recipe: Option<String>,
    /// Keep the batch symbolic even when the source fixed it.
    pub dynamic_batch: bool,
    /// `Some(true)`: weights in `<file>.data`; `Some(false)`: inline;
    /// `None`: as the source had them.
    pub external_data: Option<bool>,
}

impl Imported {
    /// The graph as it should be written: the file's fixed batch back
    /// unless `dynamic_batch`.
    fn for_writing(&self, g: &Graph, dynamic_batch: bool) -> Graph {
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
                    Some(crate::graph::Dim::Fixed(b)) if b as usize == batch => Ok(()),
                    _ => Err(Error::Graph(format!(
                        "batch {batch} is not possible: {why}"
                    ))),
                }
            }
            _ => Ok(()),
        }
    }

    /// Writes `g` (derived from this model) as `choice` says, saying who
    /// made it: producer sss-onnx and its version, the source's name and
    /// digest and `choice.recipe` in the metadata.
    pub fn save(&self, g: &Graph, path: &Path, choice: WriteChoice) -> Result<()> {
        let mut out = self.for_writing(g, choice.dynamic_batch);
        out.producer_name = "sss-onnx".into();
        out.producer_version = env!("CARGO_PKG_VERSION").into();
        let mut meta = vec![("sss_onnx.command".to_string(), choice.command.to_string())];
        if let Some((name, digest)) = &self.source {
            meta.push(("sss_onnx.source".into(), name.clone()));
            meta.push(("sss_onnx.source_sha256".into(), digest.clone()));
        }
        if let Some(r) = &choice.recipe {
            meta.push(("sss_onnx.recipe".into(), r.clone()));
        }
        out.metadata.retain(|(k, _)| !k.starts_with("sss_onnx."));
        out.metadata.extend(meta);
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
    untangle::untangle(&mut g);
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
        source: None,
        batch_locked,
    })
}

/// Loads `path` and prepares it (the file read once); errors name the file.
pub fn import(path: &Path) -> Result<Imported> {
    let (g, facts) = convert::load_with_facts(path)?;
    let mut imp = prepare(g).map_err(|e| Error::InModel {
        path: path.to_path_buf(),
        source: Box::new(e),
    })?;
    imp.external_data = facts.external_data;
    imp.source = Some((
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        facts.sha256,
    ));
    Ok(imp)
}
