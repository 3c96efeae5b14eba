//! Pieces several commands share: runtime selection, data loading, loading
//! models with the file name in errors.

use sss_onnx::data::{self, ChannelOrder, Dataset, PadValue, Preprocess, Size, Spec, Split};
use sss_onnx::graph::Graph;
use sss_onnx::onnx::import::{self, Imported, WriteChoice};
use sss_onnx::runtime::{self, Ep, Kind, Options, Session};
use std::path::Path;

#[derive(clap::Args, Clone, Default)]
#[command(next_help_heading = "Runtime")]
pub struct RuntimeArgs {
    /// Runtime: ONNX Runtime (ort), tract, or auto (ORT when its library
    /// is found) [default: auto].
    #[arg(long, value_enum)]
    pub runtime: Option<Kind>,
    /// Intra-op threads (0: the runtime's default) [default: 0].
    #[arg(long)]
    pub threads: Option<usize>,
    /// ONNX Runtime execution provider: cpu, or cuda (GPU build of the
    /// library; an error when it cannot start) [default: cpu].
    #[arg(long, value_enum)]
    pub ep: Option<Ep>,
}

impl RuntimeArgs {
    /// `o` with the flags given set.
    pub fn apply(&self, o: &mut Options) {
        if let Some(k) = self.runtime {
            o.kind = k;
        }
        if let Some(t) = self.threads {
            o.threads = t;
        }
        if let Some(e) = self.ep {
            o.ep = e;
        }
    }

    /// The defaults with the flags given, `auto` resolved (saying on
    /// stderr when it falls back to tract).
    pub fn options(&self) -> Options {
        let mut o = Options::default();
        self.apply(&mut o);
        let (kind, note) = runtime::resolve(o.kind);
        if let Some(n) = note {
            eprintln!("note: {n}");
        }
        Options { kind, ..o }
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
    /// `w` with the flags given set.
    pub fn apply(&self, w: &mut sss_onnx::compress::WriteOptions) {
        if let Some(e) = self.choice("compress").external_data {
            w.external_data = Some(e);
        }
        if self.dynamic_batch {
            w.dynamic_batch = true;
        }
    }
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
    for n in imp.notes(path) {
        eprintln!("{n}");
    }
    sss_onnx::measure::rebatch::check(&imp, path)?;
    Ok(imp)
}

pub fn load_graph(path: &Path) -> anyhow::Result<Graph> {
    Ok(import_model(path)?.graph)
}

/// Opens an imported model in the runtime (its re-batched graph when the
/// file fixes the batch).
pub fn open_imported(
    imp: &Imported,
    path: &Path,
    opts: &Options,
) -> anyhow::Result<Box<dyn Session>> {
    Ok(runtime::open_imported(imp, path, opts)?)
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

/// Loads a split of `dir` for the model `g` (classes checked, fit
/// planned with `prep` over `dataset.json`).
pub fn load_data(
    dir: &Path,
    split: Split,
    g: &Graph,
    prep: &PrepArgs,
) -> anyhow::Result<(Dataset, Preprocess, String)> {
    Ok(data::load_for(dir, split, g, &prep.spec())?)
}
