//! Validate and measure: output agreement of two models, accuracy on a
//! labelled data set, agreement with the original where there are no
//! labels, a re-batched graph's check, and latency, each on a runtime
//! from `runtime`.

pub mod accuracy;
pub mod bench;
pub mod fidelity;
pub mod inputs;
pub mod rebatch;
pub mod validate;

use crate::data::{Dataset, Preprocess};
use crate::error::{Error, Result};
use crate::runtime::Session;

/// Runs the first `n` samples of `ds` through `s` in batches and hands
/// each batch's sample indices and first output to `each`, in order.
pub(crate) fn first_outputs(
    s: &mut dyn Session,
    input: &str,
    ds: &Dataset,
    prep: &Preprocess,
    batch: usize,
    n: usize,
    mut each: impl FnMut(&[usize], &ndarray::ArrayD<f32>) -> Result<()>,
) -> Result<()> {
    for start in (0..n).step_by(batch.max(1)) {
        let idx: Vec<usize> = (start..(start + batch).min(n)).collect();
        let x = prep.batch(ds, &idx)?;
        let out = s.run(&vec![(input.to_string(), x)])?;
        let first = &out
            .first()
            .ok_or_else(|| Error::Invalid("the model has no output".into()))?
            .1;
        each(&idx, first)?;
    }
    Ok(())
}
