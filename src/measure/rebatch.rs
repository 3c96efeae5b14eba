//! A re-batched graph checked by running it: where the batch had to be
//! found inside `Reshape` targets (`graph::batch`), two samples at once
//! must give what each gives alone, or the batch was put in the wrong
//! place and training would mix samples.

use super::inputs;
use crate::error::{Error, Result};
use crate::onnx::import::Imported;
use crate::runtime::{self, Options};
use ndarray::{concatenate, Axis};
use std::path::Path;

/// Largest per-sample difference allowed, relative to the output's scale.
const RTOL: f32 = 1e-4;

/// Errors naming the reshapes when the re-batched graph of `imp` (read
/// from `path`) gives other outputs at batch 2 than sample by sample; a
/// graph re-batched without inferring anything passes unrun.
pub fn check(imp: &Imported, path: &Path) -> Result<()> {
    let Some(fb) = &imp.fixed_batch else {
        return Ok(());
    };
    if fb.inferred.is_empty() {
        return Ok(());
    }
    let g = &imp.graph;
    let mut s = runtime::open_graph(g, path, &Options::default())?;
    let two = inputs::random_inputs(g, 2, 7)?;
    let together = s.run(&two)?;
    let mut alone: Vec<Vec<ndarray::ArrayD<f32>>> = Vec::new();
    for i in 0..2 {
        let one: Vec<_> = two
            .iter()
            .map(|(n, x)| {
                (
                    n.clone(),
                    x.slice_axis(Axis(0), (i..i + 1).into()).to_owned(),
                )
            })
            .collect();
        alone.push(s.run(&one)?.into_iter().map(|(_, y)| y).collect());
    }
    for (k, (name, y)) in together.iter().enumerate() {
        let parts: Vec<_> = alone.iter().map(|a| a[k].view()).collect();
        let want = concatenate(Axis(0), &parts)
            .map_err(|e| Error::Graph(format!("output `{name}` does not follow the batch: {e}")))?;
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let diff = y
            .iter()
            .zip(want.iter())
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        // a NaN difference fails too
        let close = diff <= RTOL * scale;
        if y.shape() != want.shape() || !close {
            return Err(Error::InModel {
                path: path.to_path_buf(),
                source: Box::new(Error::Graph(format!(
                    "the batch is fixed at {} and was made variable through the reshapes {}, but two samples at once give other outputs than each alone (`{name}`: max difference {diff:.2e}); export the model with a dynamic batch",
                    fb.batch,
                    fb.inferred.join(", ")
                ))),
            });
        }
    }
    Ok(())
}
