//! What a graph says of its inputs and outputs as a classifier sees them.

use super::{Dim, Graph};
use crate::error::{Error, Result};

/// The single image input of a classifier: its name and [C, H, W].
pub fn image_input(g: &Graph) -> Result<(String, [usize; 3])> {
    let inputs: Vec<_> = g.data_inputs().collect();
    let [v] = inputs.as_slice() else {
        return Err(Error::Invalid(format!(
            "the model has {} inputs; one image input [N, C, H, W] is needed",
            inputs.len()
        )));
    };
    let dims: Vec<Option<usize>> = v
        .shape
        .as_ref()
        .map(|s| {
            s.iter()
                .map(|d| match d {
                    Dim::Fixed(x) if *x > 0 => Some(*x as usize),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    match dims.as_slice() {
        [_, Some(c), Some(h), Some(w)] => Ok((v.name.clone(), [*c, *h, *w])),
        _ => Err(Error::Invalid(format!(
            "input `{}` is not [N, C, H, W] with fixed C, H, W",
            v.name
        ))),
    }
}

/// The first output's shape at batch 1, if the graph says.
pub fn output_shape(g: &Graph) -> Option<Vec<usize>> {
    let facts = super::shape::infer_strict(g, 1).ok()?;
    facts.shape(&g.outputs.first()?.name).map(|s| s.to_vec())
}

/// The number of classes a classifier's first output gives: its width
/// when it is [N, classes]; `None` for other outputs (maps, boxes) or
/// when the graph does not say.
pub fn output_classes(g: &Graph) -> Option<usize> {
    match output_shape(g)?.as_slice() {
        [_, k] => Some(*k),
        _ => None,
    }
}

/// Whether the first output is a classifier's scores, [N, classes] (true
/// when the graph does not say: the commands then find out).
pub fn outputs_scores(g: &Graph) -> bool {
    output_shape(g).is_none_or(|s| s.len() == 2)
}
