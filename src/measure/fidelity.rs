//! How closely a model answers as the original does, for outputs that
//! are not a classifier's scores (a segmenter's maps, a detector's
//! per-anchor scores): at every position of the first output, the index
//! of the largest channel (axis 1), compared with the original's.

use crate::data::{Dataset, Preprocess};
use crate::error::{Error, Result};
use crate::runtime::Session;
use ndarray::{ArrayD, Axis};

/// Per sample of `out` ([N, C, ...]), the largest channel's index at
/// every position, in row-major order of the positions.
pub fn channel_argmax(out: &ArrayD<f32>) -> Result<Vec<Vec<u32>>> {
    if out.ndim() < 3 {
        return Err(Error::Invalid(format!(
            "output shape {:?} has no positions: [N, C, ...] expected",
            out.shape()
        )));
    }
    let mut maps = Vec::with_capacity(out.shape()[0]);
    for sample in out.axis_iter(Axis(0)) {
        let c = sample.shape()[0];
        let per = sample.len() / c.max(1);
        let flat = sample.as_standard_layout();
        let flat = flat.as_slice().unwrap_or(&[]);
        let mut map = vec![0u32; per];
        for (p, m) in map.iter_mut().enumerate() {
            let mut best = 0;
            for k in 1..c {
                // first of equal maxima, as argmax in training
                if flat[k * per + p] > flat[best * per + p] {
                    best = k;
                }
            }
            *m = best as u32;
        }
        maps.push(map);
    }
    Ok(maps)
}

/// The channel maps of the first output for every sample of `ds`.
pub fn maps(
    s: &mut dyn Session,
    input: &str,
    ds: &Dataset,
    prep: &Preprocess,
    batch: usize,
) -> Result<Vec<Vec<u32>>> {
    let mut out = Vec::with_capacity(ds.len());
    super::first_outputs(s, input, ds, prep, batch, ds.len(), |_, y| {
        out.extend(channel_argmax(y)?);
        Ok(())
    })?;
    Ok(out)
}

/// Mean over samples of the fraction of positions where `maps` agree
/// with `reference`.
pub fn agreement(maps: &[Vec<u32>], reference: &[Vec<u32>]) -> f64 {
    let per_sample = maps.iter().zip(reference).map(|(a, b)| {
        let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
        same as f64 / a.len().max(b.len()).max(1) as f64
    });
    per_sample.sum::<f64>() / maps.len().max(1) as f64
}
