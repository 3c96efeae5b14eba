//! Fitting samples to a model's input: normalise with the data set's
//! mean/std, copy or average channels, then zero-pad (centred) when the
//! image is smaller than the input or resize bilinearly when larger. The
//! zero pad is applied after normalisation, i.e. it pads with the mean.

use super::Dataset;
use crate::error::{Error, Result};
use ndarray::{Array4, ArrayD};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    Same,
    Pad,
    Resize,
}

/// How samples become model input; stated in reports.
#[derive(Debug, Clone, Serialize)]
pub struct Preprocess {
    pub channels: String,
    pub fit: Fit,
    pub from: [usize; 3],
    pub to: [usize; 3],
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Preprocess {
    /// Plans the fit of `ds` to an input of shape [C, H, W].
    pub fn plan(ds: &Dataset, input: [usize; 3]) -> Result<Preprocess> {
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
        let fit = if (ds.height, ds.width) == (h, w) {
            Fit::Same
        } else if ds.height <= h && ds.width <= w {
            Fit::Pad
        } else {
            Fit::Resize
        };
        Ok(Preprocess {
            channels,
            fit,
            from: [ds.channels, ds.height, ds.width],
            to: input,
            mean: ds.mean.clone(),
            std: ds.std.clone(),
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "{}×{}×{} → {}×{}×{}: {}, {}, normalised with mean {:?} std {:?}",
            self.from[0],
            self.from[1],
            self.from[2],
            self.to[0],
            self.to[1],
            self.to[2],
            self.channels,
            match self.fit {
                Fit::Same => "same size",
                Fit::Pad => "zero-padded (centred)",
                Fit::Resize => "resized (bilinear)",
            },
            self.mean,
            self.std
        )
    }

    /// The samples `indices` of `ds` as an input batch [N, C, H, W].
    pub fn batch(&self, ds: &Dataset, indices: &[usize]) -> ArrayD<f32> {
        let [c, h, w] = self.to;
        let (sc, sh, sw) = (ds.channels, ds.height, ds.width);
        let mut out = Array4::<f32>::zeros((indices.len(), c, h, w));
        let (oy, ox) = ((h.saturating_sub(sh)) / 2, (w.saturating_sub(sw)) / 2);
        for (b, &i) in indices.iter().enumerate() {
            let img = ds.image(i);
            // normalised source channel k
            let norm = |k: usize, y: usize, x: usize| -> f32 {
                let v = img[(k * sh + y) * sw + x] as f32 / 255.0;
                (v - self.mean[k]) / self.std[k]
            };
            let src = |k: usize, y: usize, x: usize| -> f32 {
                if sc == c {
                    norm(k, y, x)
                } else if sc == 1 {
                    norm(0, y, x)
                } else {
                    (0..sc).map(|j| norm(j, y, x)).sum::<f32>() / sc as f32
                }
            };
            for k in 0..c {
                match self.fit {
                    Fit::Same | Fit::Pad => {
                        for y in 0..sh {
                            for x in 0..sw {
                                out[[b, k, y + oy, x + ox]] = src(k, y, x);
                            }
                        }
                    }
                    Fit::Resize => {
                        for y in 0..h {
                            let fy = ((y as f32 + 0.5) * sh as f32 / h as f32 - 0.5)
                                .clamp(0.0, (sh - 1) as f32);
                            let (y0, ty) = (fy.floor() as usize, fy.fract());
                            let y1 = (y0 + 1).min(sh - 1);
                            for x in 0..w {
                                let fx = ((x as f32 + 0.5) * sw as f32 / w as f32 - 0.5)
                                    .clamp(0.0, (sw - 1) as f32);
                                let (x0, tx) = (fx.floor() as usize, fx.fract());
                                let x1 = (x0 + 1).min(sw - 1);
                                let top = src(k, y0, x0) * (1.0 - tx) + src(k, y0, x1) * tx;
                                let bot = src(k, y1, x0) * (1.0 - tx) + src(k, y1, x1) * tx;
                                out[[b, k, y, x]] = top * (1.0 - ty) + bot * ty;
                            }
                        }
                    }
                }
            }
        }
        out.into_dyn()
    }
}
