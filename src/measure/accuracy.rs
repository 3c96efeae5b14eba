//! Top-1 / top-5 accuracy of a classifier on a labelled data set.

use crate::data::{Dataset, Preprocess};
use crate::error::{Error, Result};
use crate::runtime::Session;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Accuracy {
    pub samples: usize,
    pub top1: f64,
    pub top5: f64,
    pub preprocess: String,
}

impl Accuracy {
    /// A model scored against its own answers (no labels: agreement with
    /// itself) on `samples` samples.
    pub fn of_itself(samples: usize, prep: &Preprocess) -> Accuracy {
        Accuracy {
            samples,
            top1: 1.0,
            top5: 1.0,
            preprocess: prep.describe(),
        }
    }
}

/// The model's top-1 class for every sample of `ds`, and its number of
/// classes (the width of its first output, which must be [N, classes]).
pub fn predictions(
    s: &mut dyn Session,
    input: &str,
    ds: &Dataset,
    prep: &Preprocess,
    batch: usize,
) -> Result<(Vec<u32>, usize)> {
    let mut out = Vec::with_capacity(ds.len());
    let mut classes = 0;
    super::first_outputs(s, input, ds, prep, batch, ds.len(), |idx, logits| {
        classes = scores_width(logits, idx.len())?;
        let flat = logits.as_standard_layout();
        let flat = flat.as_slice().unwrap_or(&[]);
        for row in flat.chunks(classes) {
            // the first of equal maxima, as argmax in training
            let mut best = 0;
            for (k, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = k;
                }
            }
            out.push(best as u32);
        }
        Ok(())
    })?;
    Ok((out, classes))
}

/// The number of classes of a batch of `n` classifier scores, or an error
/// naming the shape when the output is not [N, classes].
fn scores_width(logits: &ndarray::ArrayD<f32>, n: usize) -> Result<usize> {
    let classes = logits.len() / n.max(1);
    if logits.ndim() != 2 || classes < 2 {
        return Err(Error::Invalid(format!(
            "output shape {:?} is not [N, classes] (a classifier's scores)",
            logits.shape()
        )));
    }
    Ok(classes)
}

/// Evaluates the first `limit` samples (all when `None`) in batches.
pub fn evaluate(
    s: &mut dyn Session,
    input: &str,
    ds: &Dataset,
    prep: &Preprocess,
    batch: usize,
    limit: Option<usize>,
) -> Result<Accuracy> {
    let n = limit.unwrap_or(ds.len()).min(ds.len());
    let (mut top1, mut top5) = (0usize, 0usize);
    super::first_outputs(s, input, ds, prep, batch, n, |idx, logits| {
        let classes = scores_width(logits, idx.len())?;
        let flat = logits.as_standard_layout();
        let flat = flat.as_slice().unwrap_or(&[]);
        for (r, &i) in idx.iter().enumerate() {
            let row = &flat[r * classes..(r + 1) * classes];
            let label = ds.labels[i] as usize;
            let target = row.get(label).copied().unwrap_or(f32::NEG_INFINITY);
            // rank of the true class: how many scores beat it
            let better = row.iter().filter(|&&v| v > target).count();
            top1 += (better == 0) as usize;
            top5 += (better < 5) as usize;
        }
        Ok(())
    })?;
    Ok(Accuracy {
        samples: n,
        top1: top1 as f64 / n.max(1) as f64,
        top5: top5 as f64 / n.max(1) as f64,
        preprocess: prep.describe(),
    })
}
