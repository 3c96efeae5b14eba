//! Fitting samples to a model's input: the preprocessing a model was
//! trained with, in torchvision's order — resize (shorter side or exact,
//! antialiased), centre crop, pad (with a pixel value, black by default),
//! scale to [0, 1], normalise with mean/std; channel order RGB or BGR, grey
//! copied to 3 channels (or RGB averaged to 1).
//!
//! A `Spec` is what the user says (flags, `dataset.json`, a recipe); every
//! field left out gets the usual torchvision default for the sizes at hand
//! (`Preprocess::plan`), and the resolved `Preprocess` is what is stated
//! in every command's output and the report.

use super::Dataset;
use crate::error::{Error, Result};
use image::{imageops, ImageBuffer, Luma};
use ndarray::{Array4, ArrayD};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
/// How images are brought to the input's size.
pub enum Sizing {
    Same,
    Pad,
    Resize,
}

/// A resize step: the shorter side to `n` (aspect kept, torchvision's
/// `Resize(n)`) or exactly `h`×`w` (`Resize((h, w))`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Shorter(usize),
    Exact(usize, usize),
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let num = |t: &str| {
            t.trim()
                .parse::<usize>()
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| format!("`{s}`: expected N or HxW with positive integers"))
        };
        match s.split_once(['x', 'X', '×']) {
            Some((h, w)) => Ok(Size::Exact(num(h)?, num(w)?)),
            None => Ok(Size::Shorter(num(s)?)),
        }
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Size::Shorter(n) => write!(f, "{n}"),
            Size::Exact(h, w) => write!(f, "{h}x{w}"),
        }
    }
}

/// What fills the border when an image is smaller than the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadValue {
    /// Pixel value 0 before normalisation (torchvision's `Pad`, the default).
    Black,
    /// 0 after normalisation, i.e. the data set's mean.
    Mean,
    /// This pixel value (0–255) before normalisation.
    Pixel(u8),
}

impl std::str::FromStr for PadValue {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "black" => Ok(PadValue::Black),
            "mean" => Ok(PadValue::Mean),
            t => t
                .parse::<u8>()
                .map(PadValue::Pixel)
                .map_err(|_| format!("`{s}`: expected black, mean or a pixel value 0-255")),
        }
    }
}

impl std::fmt::Display for PadValue {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            PadValue::Black => write!(f, "black"),
            PadValue::Mean => write!(f, "mean"),
            PadValue::Pixel(v) => write!(f, "{v}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    #[default]
    Rgb,
    Bgr,
}

impl std::str::FromStr for ChannelOrder {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "rgb" => Ok(ChannelOrder::Rgb),
            "bgr" => Ok(ChannelOrder::Bgr),
            _ => Err(format!("`{s}`: expected rgb or bgr")),
        }
    }
}

/// Values written as text (`"256"`, `"224x224"`, `"black"`) or, where a
/// number means the same, as a number (`256`, `0`), through `FromStr` and
/// `Display`.
macro_rules! text_serde {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Raw {
                    N(u64),
                    S(String),
                }
                let text = match Raw::deserialize(d)? {
                    Raw::N(n) => n.to_string(),
                    Raw::S(s) => s,
                };
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

text_serde!(Size, PadValue);

/// The preprocessing a user states; `None` fields take the defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center_crop: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_value: Option<PadValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_order: Option<ChannelOrder>,
}

impl Spec {
    /// `self` with every field that `over` sets taken from `over`.
    pub fn overridden_by(&self, over: &Spec) -> Spec {
        Spec {
            resize: over.resize.or(self.resize),
            center_crop: over.center_crop.or(self.center_crop),
            pad_value: over.pad_value.or(self.pad_value),
            mean: over.mean.clone().or_else(|| self.mean.clone()),
            std: over.std.clone().or_else(|| self.std.clone()),
            channel_order: over.channel_order.or(self.channel_order),
        }
    }
}

/// How samples become model input, every step resolved; stated in reports.
#[derive(Debug, Clone, Serialize)]
pub struct Preprocess {
    pub channels: String,
    pub sizing: Sizing,
    /// The first image's [C, H, W] (images of a folder may differ).
    pub from: [usize; 3],
    pub to: [usize; 3],
    pub resize: Option<Size>,
    pub center_crop: Option<(usize, usize)>,
    pub pad_value: PadValue,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub channel_order: ChannelOrder,
}

/// The output size of `Size` applied to an h×w image (torchvision's
/// rounding: the longer side truncated).
fn resized(size: Size, h: usize, w: usize) -> (usize, usize) {
    match size {
        Size::Exact(a, b) => (a, b),
        Size::Shorter(s) if h <= w => (s, (s * w / h.max(1)).max(1)),
        Size::Shorter(s) => ((s * h / w.max(1)).max(1), s),
    }
}

impl Preprocess {
    /// Plans the fit of `ds` to an input of shape [C, H, W] with the
    /// data set's own spec (`dataset.json`).
    pub fn plan(ds: &Dataset, input: [usize; 3]) -> Result<Preprocess> {
        Self::plan_with(ds, input, &Spec::default())
    }

    /// Plans with `over` (flags, a recipe) taking precedence over the data
    /// set's spec; unset steps get torchvision's defaults for these sizes:
    /// the same size as is; a little smaller (a pad of at most a quarter of
    /// the input, 28×28 into 32×32, or any smaller size when a pad value
    /// is stated) padded with black; much smaller resized up to the input; larger, or of mixed sizes, resized on the
    /// shorter side to 256/224 of the input and centre-cropped.
    pub fn plan_with(ds: &Dataset, input: [usize; 3], over: &Spec) -> Result<Preprocess> {
        let spec = ds.spec.overridden_by(over);
        let [c, h, w] = input;
        let channels = match (ds.channels, c) {
            (a, b) if a == b => "as is".to_string(),
            (1, b) => format!("1 channel copied to {b}"),
            (3, 1) => "RGB averaged to 1 channel".into(),
            (a, b) => {
                return Err(Error::Invalid(format!(
                    "{} has {a} channels; the model wants {b}",
                    ds.name
                )))
            }
        };
        let mean = spec.mean.clone().unwrap_or_else(|| ds.mean.clone());
        let std = spec.std.clone().unwrap_or_else(|| ds.std.clone());
        if mean.len() != ds.channels || std.len() != ds.channels || std.iter().any(|&s| s <= 0.0) {
            return Err(Error::Invalid(format!(
                "mean {mean:?} / std {std:?}: one entry per channel of {} ({} channels), std > 0",
                ds.name, ds.channels
            )));
        }
        let (sh, sw) = (ds.height, ds.width);
        let explicit = spec.resize.is_some() || spec.center_crop.is_some();
        let (resize, crop) = if explicit {
            (spec.resize, spec.center_crop.map(|s| resized(s, h, w)))
        } else if !ds.is_uniform() || sh > h || sw > w {
            let side = ((h.min(w) as f64) * 256.0 / 224.0).round() as usize;
            (Some(Size::Shorter(side)), Some((h, w)))
        } else if (sh, sw) == (h, w)
            || spec.pad_value.is_some()
            || (h - sh <= h / 4 && w - sw <= w / 4)
        {
            (None, None)
        } else {
            (Some(Size::Exact(h, w)), None)
        };
        if let Some((ch, cw)) = crop {
            if ch > h || cw > w {
                return Err(Error::Invalid(format!(
                    "centre crop {ch}x{cw} is larger than the model's input {h}x{w}"
                )));
            }
        }
        // where a uniform data set ends up, to refuse a spec that overflows
        if ds.is_uniform() {
            let (mut eh, mut ew) = (sh, sw);
            if let Some(r) = resize {
                (eh, ew) = resized(r, eh, ew);
            }
            if let Some((ch, cw)) = crop {
                (eh, ew) = (ch.min(eh), cw.min(ew));
            }
            if eh > h || ew > w {
                return Err(Error::Invalid(format!(
                    "the preprocessing makes {sh}x{sw} images {eh}x{ew}, larger than the model's input {h}x{w}: add a centre crop or a resize"
                )));
            }
        } else if crop.is_none() {
            return Err(Error::Invalid(format!(
                "{} holds images of different sizes: the preprocessing needs a centre crop (or an exact resize) to the input",
                ds.name
            )));
        }
        let sizing = if resize.is_some() || crop.is_some() {
            Sizing::Resize
        } else if (sh, sw) == (h, w) {
            Sizing::Same
        } else {
            Sizing::Pad
        };
        Ok(Preprocess {
            channels,
            sizing,
            from: [ds.channels, sh, sw],
            to: input,
            resize,
            center_crop: crop,
            pad_value: spec.pad_value.unwrap_or(PadValue::Black),
            mean,
            std,
            channel_order: spec.channel_order.unwrap_or_default(),
        })
    }

    pub fn describe(&self) -> String {
        let mut steps = Vec::new();
        if let Some(r) = self.resize {
            steps.push(match r {
                Size::Shorter(n) => format!("resize shorter side to {n} (antialiased)"),
                Size::Exact(a, b) => format!("resize to {a}x{b} (antialiased)"),
            });
        }
        if let Some((a, b)) = self.center_crop {
            steps.push(format!("centre crop {a}x{b}"));
        }
        if self.sizing == Sizing::Pad || self.resize.is_some() || self.center_crop.is_some() {
            steps.push(format!("pad to the input with {}", self.pad_value));
        }
        steps.push("/255".into());
        steps.push(format!(
            "normalise with mean {:?} std {:?}",
            self.mean, self.std
        ));
        steps.push(self.channels.clone());
        if self.channel_order == ChannelOrder::Bgr {
            steps.push("BGR order".into());
        }
        format!(
            "{}×{}×{} → {}×{}×{}: {}",
            self.from[0],
            self.from[1],
            self.from[2],
            self.to[0],
            self.to[1],
            self.to[2],
            steps.join(", ")
        )
    }

    /// The border value of source channel `k` after normalisation.
    fn pad_of(&self, k: usize) -> f32 {
        match self.pad_value {
            PadValue::Mean => 0.0,
            PadValue::Black => -self.mean[k] / self.std[k],
            PadValue::Pixel(v) => (v as f32 / 255.0 - self.mean[k]) / self.std[k],
        }
    }

    /// The samples `indices` of `ds` as an input batch [N, C, H, W] (an
    /// image file that fails to decode is an error naming it).
    pub fn batch(&self, ds: &Dataset, indices: &[usize]) -> Result<ArrayD<f32>> {
        let [c, h, w] = self.to;
        let sc = ds.channels;
        let mut out = Array4::<f32>::zeros((indices.len(), c, h, w));
        for (b, &i) in indices.iter().enumerate() {
            let (sh, sw) = ds.size_of(i);
            let img = ds.image(i)?;
            // per source channel: [0, 1], resize/crop, pad, normalise
            let planes: Vec<Vec<f32>> = (0..sc)
                .map(|s| {
                    let p01: Vec<f32> = img[s * sh * sw..(s + 1) * sh * sw]
                        .iter()
                        .map(|&v| v as f32 / 255.0)
                        .collect();
                    let (p, ph, pw) = self.geometry(p01, sh, sw);
                    let (m, d) = (self.mean[s], self.std[s]);
                    let mut full = vec![self.pad_of(s); h * w];
                    let (oy, ox) = (h.saturating_sub(ph) / 2, w.saturating_sub(pw) / 2);
                    for y in 0..ph.min(h) {
                        for x in 0..pw.min(w) {
                            full[(y + oy) * w + x + ox] = (p[y * pw + x] - m) / d;
                        }
                    }
                    full
                })
                .collect();
            for k in 0..c {
                let mut view = out.slice_mut(ndarray::s![b, k, .., ..]);
                let src = |j: usize| -> f32 {
                    match (sc == c, sc, self.channel_order) {
                        (true, 3, ChannelOrder::Bgr) => planes[2 - k][j],
                        (true, _, _) => planes[k][j],
                        (false, 1, _) => planes[0][j],
                        _ => planes.iter().map(|q| q[j]).sum::<f32>() / sc as f32,
                    }
                };
                for (j, v) in view.iter_mut().enumerate() {
                    *v = src(j);
                }
            }
        }
        Ok(out.into_dyn())
    }

    /// Resize and centre crop of one plane of [0, 1] values.
    fn geometry(&self, p: Vec<f32>, h: usize, w: usize) -> (Vec<f32>, usize, usize) {
        let (mut p, mut h, mut w) = (p, h, w);
        if let Some(r) = self.resize {
            let (rh, rw) = resized(r, h, w);
            if (rh, rw) != (h, w) {
                p = resize_plane(p, h, w, rh, rw);
                (h, w) = (rh, rw);
            }
        }
        if let Some((ch, cw)) = self.center_crop {
            let (ch, cw) = (ch.min(h), cw.min(w));
            let top = ((h - ch) as f64 / 2.0).round() as usize;
            let left = ((w - cw) as f64 / 2.0).round() as usize;
            let mut q = Vec::with_capacity(ch * cw);
            for y in 0..ch {
                q.extend_from_slice(&p[(y + top) * w + left..(y + top) * w + left + cw]);
            }
            (p, h, w) = (q, ch, cw);
        }
        (p, h, w)
    }
}

/// Bilinear (triangle-filter) resize, antialiased when shrinking: the
/// `image` crate's filter widens with the scale, as PIL's and
/// torchvision's antialiased resize do.
fn resize_plane(p: Vec<f32>, h: usize, w: usize, nh: usize, nw: usize) -> Vec<f32> {
    let Some(buf) = ImageBuffer::<Luma<f32>, Vec<f32>>::from_raw(w as u32, h as u32, p) else {
        return vec![0.0; nh * nw];
    };
    imageops::resize(&buf, nw as u32, nh as u32, imageops::FilterType::Triangle).into_raw()
}
