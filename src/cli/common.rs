//! Pieces several commands share: runtime selection, data loading, loading
//! models with the file name in errors.

use anyhow::Context;
use sss_onnx::data::{self, ChannelOrder, Dataset, PadValue, Preprocess, Size, Spec, Split};
use sss_onnx::graph::import::{self, Imported, WriteChoice};
use sss_onnx::graph::Graph;
use sss_onnx::runtime::{self, Ep, Kind, Options, Session};
use std::path::Path;

#[derive(clap::Args, Clone)]
#[command(next_help_heading = "Runtime")]
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

/// How written models store their weights and batch.
#[derive(clap::Args, Clone, Default)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Weights in `<output>.data` beside the model (default: as the input
    /// had them).
    #[arg(long, conflicts_with = "inline_data")]
    pub external_data: bool,
    /// Weights inline, even when the input kept them in external data.
    #[arg(long)]
    pub inline_data: bool,
    /// A symbolic batch dimension, even when the input fixed the batch.
    #[arg(long)]
    pub dynamic_batch: bool,
}

impl OutputArgs {
    /// How `command` writes its model.
    pub fn choice(&self, command: &'static str) -> WriteChoice {
        WriteChoice {
            command,
            recipe: None,
            dynamic_batch: self.dynamic_batch,
            external_data: match (self.external_data, self.inline_data) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
        }
    }
}

/// Loads a model as the pipeline works on it (constants folded, a fixed
/// batch made symbolic) and says so on stderr; the library's errors
/// already name the file.
pub fn import_model(path: &Path) -> anyhow::Result<Imported> {
    let imp = import::import(path)?;
    if let Some(why) = &imp.batch_locked {
        eprintln!(
            "note: {}: {why}; it runs at its own batch only",
            path.display()
        );
    }
    if let Some(fb) = &imp.fixed_batch {
        eprintln!(
            "note: {} fixes the batch at {}; it runs at any batch inside the tool, and models written from it keep batch {} (--dynamic-batch to change)",
            path.display(),
            fb.batch,
            fb.batch
        );
    }
    Ok(imp)
}

pub fn load_graph(path: &Path) -> anyhow::Result<Graph> {
    Ok(import_model(path)?.graph)
}

/// Opens a model file in the runtime: the file itself, or, when it fixes
/// the batch, its re-batched graph.
pub fn open(path: &Path, opts: &Options) -> anyhow::Result<Box<dyn Session>> {
    let imp = import::import(path)?;
    open_imported(&imp, path, opts)
}

pub fn open_imported(
    imp: &Imported,
    path: &Path,
    opts: &Options,
) -> anyhow::Result<Box<dyn Session>> {
    let s = if imp.fixed_batch.is_some() {
        runtime::open_graph(&imp.graph, path, opts)
    } else {
        runtime::open(path, opts)
    };
    s.with_context(|| format!("opening {} in the runtime", path.display()))
}

/// The model's preprocessing, as flags (they override `dataset.json`).
#[derive(clap::Args, Clone, Default, Debug)]
#[command(next_help_heading = "Preprocessing (how the model was trained; overrides dataset.json)")]
pub struct PrepArgs {
    /// Resize: the shorter side to N, or exactly HxW (antialiased).
    #[arg(long, value_name = "N|HxW")]
    pub resize: Option<Size>,
    /// Centre crop to N×N or HxW after the resize.
    #[arg(long, value_name = "N|HxW")]
    pub center_crop: Option<Size>,
    /// Border of images smaller than the input: black (pixel 0, before
    /// normalising: torchvision's Pad), mean (0 after normalising), or a
    /// pixel value 0-255. Default black.
    #[arg(long, value_name = "black|mean|0-255")]
    pub pad_value: Option<PadValue>,
    /// Per-channel mean in [0, 1] units (RGB order), comma separated.
    #[arg(long, value_delimiter = ',')]
    pub mean: Option<Vec<f32>>,
    /// Per-channel std in [0, 1] units (RGB order), comma separated.
    #[arg(long, value_delimiter = ',')]
    pub std: Option<Vec<f32>>,
    /// Channel order the model expects.
    #[arg(long, value_name = "rgb|bgr")]
    pub channel_order: Option<ChannelOrder>,
}

impl PrepArgs {
    pub fn spec(&self) -> Spec {
        Spec {
            resize: self.resize,
            center_crop: self.center_crop,
            pad_value: self.pad_value,
            mean: self.mean.clone(),
            std: self.std.clone(),
            channel_order: self.channel_order,
        }
    }
}

/// The number of classes a classifier's first output gives (its last
/// dimension), if the graph says.
pub fn model_classes(g: &Graph) -> Option<usize> {
    let facts = sss_onnx::graph::shape::infer_strict(g, 1).ok()?;
    facts.shape(&g.outputs.first()?.name)?.last().copied()
}

/// Loads a split of `dir`, checks its classes against the model's output
/// and plans its fit to `g`'s image input with `prep` over `dataset.json`.
pub fn load_data(
    dir: &Path,
    split: Split,
    g: &Graph,
    prep: &PrepArgs,
) -> anyhow::Result<(Dataset, Preprocess, String)> {
    let ds =
        data::load(dir, split).with_context(|| format!("loading data from {}", dir.display()))?;
    if let Some(k) = model_classes(g) {
        // a model may have more outputs than the data has classes (a
        // subset of them), never fewer
        if ds.classes > k {
            anyhow::bail!(
                "{}: the data has {} classes, the model's output `{}` only {k}",
                dir.display(),
                ds.classes,
                g.outputs[0].name
            );
        }
    }
    let (name, shape) = sss_onnx::measure::inputs::image_input(g)?;
    let prep = Preprocess::plan_with(&ds, shape, &prep.spec())
        .with_context(|| format!("preprocessing {}", dir.display()))?;
    Ok((ds, prep, name))
}
