//! A split loaded for a particular model: its classes checked against the
//! model's output and its fit to the model's image input planned.

use super::{bad, load, Dataset, Preprocess, Spec, Split};
use crate::error::Result;
use crate::graph::io::{image_input, output_classes};
use crate::graph::Graph;
use std::path::Path;

/// `split` of `dir` for `g`: the data set, its fit (`spec` over the
/// folder's `dataset.json`) and the name of the model's image input.
pub fn load_for(
    dir: &Path,
    split: Split,
    g: &Graph,
    spec: &Spec,
) -> Result<(Dataset, Preprocess, String)> {
    let ds = load(dir, split)?;
    if let Some(k) = output_classes(g) {
        // a model may have more outputs than the data has classes (a
        // subset of them), never fewer
        if ds.classes > k {
            return Err(bad(
                dir,
                format!(
                    "{} classes, but the model's output `{}` has only {k}",
                    ds.classes, g.outputs[0].name
                ),
            ));
        }
    }
    let (name, shape) = image_input(g)?;
    let prep = Preprocess::plan_with(&ds, shape, spec)
        .map_err(|e| bad(dir, format!("preprocessing: {e}")))?;
    Ok((ds, prep, name))
}
