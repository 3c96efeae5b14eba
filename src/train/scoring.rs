//! Top-1 accuracy of the candle model itself (eval mode), beside the
//! runtimes' scoring in `measure::accuracy`: the two agree on a correctly
//! lowered model.

use super::model::Model;
use crate::data::{Dataset, Preprocess};
use crate::error::{Error, Result};
use candle_core::{Tensor, D};

/// The candle model's output (eval mode) for each batch of the first `n`
/// samples, handed to `each` in order.
fn outputs(
    model: &Model,
    ds: &Dataset,
    prep: &Preprocess,
    batch: usize,
    n: usize,
    mut each: impl FnMut(Tensor) -> Result<()>,
) -> Result<()> {
    for start in (0..n).step_by(batch.max(1)) {
        let idx: Vec<usize> = (start..(start + batch).min(n)).collect();
        let x = prep.batch(ds, &idx)?;
        let t = Tensor::from_vec(
            x.iter().copied().collect::<Vec<f32>>(),
            x.shape(),
            &model.device,
        )
        .and_then(|t| t.to_dtype(model.dtype))
        .map_err(|e| Error::during("evaluation", e))?;
        each(model.infer(&t)?)?;
    }
    Ok(())
}

/// The candle model's top-1 class (eval mode) for the first `limit`
/// samples.
pub fn predictions(
    model: &Model,
    ds: &Dataset,
    prep: &Preprocess,
    batch: usize,
    limit: Option<usize>,
) -> Result<Vec<u32>> {
    let n = limit.unwrap_or(ds.len()).min(ds.len());
    let mut out = Vec::with_capacity(n);
    outputs(model, ds, prep, batch, n, |y| {
        let top = y.argmax(D::Minus1).and_then(|p| p.to_vec1::<u32>());
        out.extend(top.map_err(|e| Error::during("evaluation", e))?);
        Ok(())
    })?;
    Ok(out)
}

/// The candle model's channel maps (eval mode) for every sample: the
/// largest channel of its output at every position
/// (`measure::fidelity::channel_argmax`).
pub fn maps(model: &Model, ds: &Dataset, prep: &Preprocess, batch: usize) -> Result<Vec<Vec<u32>>> {
    let mut out = Vec::with_capacity(ds.len());
    outputs(model, ds, prep, batch, ds.len(), |y| {
        let y = crate::train::model::to_ndarray(&y)?;
        out.extend(crate::measure::fidelity::channel_argmax(&y)?);
        Ok(())
    })?;
    Ok(out)
}

/// Top-1 accuracy of the candle model in eval mode on the first `limit` samples.
pub fn top1(
    model: &Model,
    ds: &Dataset,
    prep: &Preprocess,
    batch: usize,
    limit: Option<usize>,
) -> Result<f64> {
    let pred = predictions(model, ds, prep, batch, limit)?;
    let correct = pred.iter().zip(&ds.labels).filter(|(p, l)| p == l).count();
    Ok(correct as f64 / pred.len().max(1) as f64)
}
