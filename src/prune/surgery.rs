//! Weight surgery on the graph's initializers: keep a subset of channels
//! along an axis, scale channels. Each touched initializer must belong to a
//! single node, or the edit would change another part of the model.

use crate::error::{Error, Result};
use crate::graph::{Graph, Tensor};
use ndarray::{ArrayD, Axis};

/// The initializer `name` for editing; it must be read by exactly one node.
pub fn owned<'a>(g: &'a mut Graph, name: &str) -> Result<&'a mut ArrayD<f32>> {
    let readers = g
        .nodes
        .iter()
        .filter(|n| n.inputs.iter().any(|i| i == name))
        .count();
    if readers != 1 {
        return Err(Error::tensor(
            name,
            format!("is read by {readers} nodes; pruning it would change the others"),
        ));
    }
    match g.initializers.get_mut(name) {
        Some(Tensor::F32(a)) => Ok(a),
        _ => Err(Error::tensor(name, "expected a float initializer")),
    }
}

/// Keeps the entries `keep` along `axis`.
pub fn select(g: &mut Graph, name: &str, axis: usize, keep: &[usize]) -> Result<()> {
    let a = owned(g, name)?;
    if a.ndim() <= axis {
        return Err(Error::tensor(name, format!("has no axis {axis}")));
    }
    *a = a.select(Axis(axis), keep);
    Ok(())
}

/// Multiplies entry `i` along `axis` by `s[i]`.
pub fn scale(g: &mut Graph, name: &str, axis: usize, s: &[f32]) -> Result<()> {
    let a = owned(g, name)?;
    if a.ndim() <= axis || a.shape()[axis] != s.len() {
        return Err(Error::tensor(
            name,
            format!(
                "shape {:?} does not have {} entries on axis {axis}",
                a.shape(),
                s.len()
            ),
        ));
    }
    for (i, mut lane) in a.axis_iter_mut(Axis(axis)).enumerate() {
        lane.mapv_inplace(|v| v * s[i]);
    }
    Ok(())
}
