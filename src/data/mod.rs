//! Image data sets: idx (MNIST, Fashion-MNIST; `.gz` or raw), CIFAR-10/100
//! binary batches, ImageFolder trees of PNG/JPEG and folders of images
//! without labels, in one form, and fitted to a model's input (pad or resize, channel copy,
//! mean/std normalisation). Training and evaluation share this code. The
//! small formats are held decoded; a folder of photos is decoded image by
//! image when a batch needs it, so its size does not bound memory.

pub mod bundled;
mod cifar;
mod folder;
mod for_model;
mod idx;
pub mod pickle;
mod preprocess;

pub use for_model::load_for;
pub use preprocess::{ChannelOrder, PadValue, Preprocess, Size, Sizing, Spec};

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

/// Images as u8, channel-major per image (C×H×W), with labels: held in
/// `pixels`, or (`files` not empty) decoded from `files[i]` on demand.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub format: &'static str,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<u8>,
    /// One per sample; placeholders (0) when `labelled` is false.
    pub labels: Vec<u32>,
    /// Whether `labels` are the data's own: a folder of images without
    /// class folders has none (and `classes` is 0).
    pub labelled: bool,
    pub classes: usize,
    /// Per-channel mean/std in [0,1] units used to normalise.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// The preprocessing `dataset.json` states (overridden by flags).
    pub spec: Spec,
    /// Per-image (height, width) and pixel offsets when images differ in
    /// size (a folder of photos); empty when all are `height`×`width`.
    pub sizes: Vec<(usize, usize)>,
    pub offsets: Vec<usize>,
    /// One image file per sample when decoded on demand (then `pixels`
    /// and `offsets` are empty).
    pub files: Vec<PathBuf>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Whether every image has the size `height`×`width`.
    pub fn is_uniform(&self) -> bool {
        self.sizes.is_empty()
    }

    /// (height, width) of image `i`.
    pub fn size_of(&self, i: usize) -> (usize, usize) {
        self.sizes
            .get(i)
            .copied()
            .unwrap_or((self.height, self.width))
    }

    /// Image `i`, C×H×W (decoded now when the set is read on demand; an
    /// error names the file).
    pub fn image(&self, i: usize) -> Result<Cow<'_, [u8]>> {
        let (h, w) = self.size_of(i);
        if let Some(file) = self.files.get(i) {
            return folder::decode(file, (h, w)).map(Cow::Owned);
        }
        let n = self.channels * h * w;
        let start = self.offsets.get(i).copied().unwrap_or(i * n);
        Ok(Cow::Borrowed(&self.pixels[start..start + n]))
    }

    /// Keeps the first `n` samples.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            let end = if !self.files.is_empty() {
                0
            } else if self.is_uniform() {
                n * self.channels * self.height * self.width
            } else {
                self.offsets[n]
            };
            self.labels.truncate(n);
            self.pixels.truncate(end);
            self.sizes.truncate(n);
            self.offsets.truncate(n);
            self.files.truncate(n);
        }
    }

    /// Forgets the labels (label-free training and scoring).
    pub fn drop_labels(&mut self) {
        self.labels.iter_mut().for_each(|l| *l = 0);
        self.labelled = false;
        self.classes = 0;
    }

    /// Takes `labels` (one per sample, below `classes`) as the samples'
    /// labels: the original model's predictions when there are none.
    pub fn set_labels(&mut self, labels: Vec<u32>, classes: usize) {
        debug_assert_eq!(labels.len(), self.len());
        self.labels = labels;
        self.classes = classes;
    }

    /// The samples `indices` (in that order) as a data set of their own.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        let mut out = Dataset {
            pixels: Vec::new(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            sizes: Vec::new(),
            offsets: Vec::new(),
            files: indices
                .iter()
                .filter_map(|&i| self.files.get(i).cloned())
                .collect(),
            ..self.clone_meta()
        };
        if !self.is_uniform() {
            out.sizes = indices.iter().map(|&i| self.size_of(i)).collect();
        }
        if self.files.is_empty() {
            for &i in indices {
                if !self.is_uniform() {
                    out.offsets.push(out.pixels.len());
                }
                out.pixels.extend_from_slice(&self.image(i)?);
            }
        }
        Ok(out)
    }

    /// Everything but the samples.
    fn clone_meta(&self) -> Dataset {
        Dataset {
            name: self.name.clone(),
            format: self.format,
            channels: self.channels,
            height: self.height,
            width: self.width,
            pixels: Vec::new(),
            labels: Vec::new(),
            labelled: self.labelled,
            classes: self.classes,
            mean: self.mean.clone(),
            std: self.std.clone(),
            spec: self.spec.clone(),
            sizes: Vec::new(),
            offsets: Vec::new(),
            files: Vec::new(),
        }
    }
}

/// Optional `dataset.json` in a data folder: a name and the normalisation
/// the data's models were trained with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    name: Option<String>,
    mean: Option<Vec<f32>>,
    std: Option<Vec<f32>>,
    resize: Option<Size>,
    center_crop: Option<Size>,
    pad_value: Option<PadValue>,
    channel_order: Option<ChannelOrder>,
}

pub(crate) fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Loads `split` from `dir`, recognising the format by its files.
pub fn load(dir: &Path, split: Split) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(bad(dir, "not a directory"));
    }
    let mut ds = if let Some((images, labels)) = idx::find(dir, split) {
        idx::load(&images, &labels)?
    } else if let Some(files) = cifar::find(dir, split) {
        cifar::load(&files)?
    } else if let Some(root) = folder::find(dir, split) {
        folder::load(&root)?
    } else if let Some(files) = folder::loose_images(dir, split)? {
        folder::unlabelled(dir, files)?
    } else {
        return Err(bad(
            dir,
            format!(
                "no {split:?} data found: expected idx files ({{train,t10k}}-images-idx3-ubyte[.gz]), \
                 CIFAR batches (binary data_batch_N.bin/test_batch.bin, train.bin/test.bin; python cifar-10-batches-py/, cifar-100-python/) \
                 or PNG/JPEG images: an ImageFolder tree ({{train,test,val}}/<class>/*), or without labels in any layout"
            ),
        ));
    };
    let meta_path: PathBuf = dir.join("dataset.json");
    if meta_path.is_file() {
        let text = std::fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
        let meta: Meta = serde_json::from_str(&text).map_err(|e| bad(&meta_path, e.to_string()))?;
        if let Some(n) = meta.name {
            ds.name = n;
        }
        ds.spec = Spec {
            resize: meta.resize,
            center_crop: meta.center_crop,
            pad_value: meta.pad_value,
            channel_order: meta.channel_order,
            mean: None,
            std: None,
        };
        if let (Some(m), Some(s)) = (meta.mean, meta.std) {
            if m.len() != ds.channels || s.len() != ds.channels || s.iter().any(|&v| v <= 0.0) {
                return Err(bad(
                    &meta_path,
                    "mean/std must have one positive entry per channel",
                ));
            }
            ds.mean = m;
            ds.std = s;
        }
    }
    if ds.is_empty() {
        return Err(bad(dir, format!("the {split:?} split holds no samples")));
    }
    Ok(ds)
}

/// Mean and std per channel of the images (for formats without published
/// statistics).
pub(crate) fn statistics(channels: usize, hw: usize, pixels: &[u8]) -> (Vec<f32>, Vec<f32>) {
    let mut sum = vec![0f64; channels];
    let mut sq = vec![0f64; channels];
    let n_img = pixels.len() / (channels * hw).max(1);
    for (i, &p) in pixels.iter().enumerate() {
        let c = (i / hw) % channels;
        let v = p as f64 / 255.0;
        sum[c] += v;
        sq[c] += v * v;
    }
    let n = (n_img * hw).max(1) as f64;
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, &m)| ((q / n - (m as f64).powi(2)).max(1e-12).sqrt()) as f32)
        .collect();
    (mean, std)
}
