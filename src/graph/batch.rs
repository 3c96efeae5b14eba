//! Fixed-batch exports. `torch.onnx.export(model, torch.randn(1, 3, 32, 32),
//! path)` fixes the batch at 1 in the inputs, the outputs and in shape
//! constants such as a classifier's `Reshape` to `[1, 64]`. Inside the tool
//! the batch is made symbolic again; what is written gets the fixed batch
//! back unless the user asks for a dynamic one.

use super::shape::{self, Facts};
use super::{Dim, Graph, Tensor};
use crate::error::{Error, Result};
use ndarray::{ArrayD, IxDyn};
use std::collections::HashMap;

/// The symbol given to the batch dimension.
pub const BATCH_SYMBOL: &str = "N";

/// What was fixed in the file, to be restored on writing.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedBatch {
    pub batch: i64,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// Two batch sizes no exporter fixes a model at: inference at both must
/// give every output their batch.
const PROBES: [usize; 2] = [3, 5];

fn first_dim(dims: &Option<Vec<Dim>>) -> Option<i64> {
    match dims.as_deref() {
        Some([Dim::Fixed(b), ..]) => Some(*b),
        _ => None,
    }
}

/// Makes a fixed batch symbolic. `Ok(None)` when no data input has a fixed
/// first dimension; an error naming the node when the graph cannot be
/// re-batched (the batch is then baked into something other than a
/// `Reshape` target).
pub fn make_symbolic(g: &mut Graph) -> Result<Option<FixedBatch>> {
    let fixed: Vec<(String, i64)> = g
        .data_inputs()
        .filter_map(|v| first_dim(&v.shape).map(|b| (v.name.clone(), b)))
        .collect();
    let Some(&(_, batch)) = fixed.first() else {
        return Ok(None);
    };
    if batch < 1 || fixed.iter().any(|(_, b)| *b != batch) {
        return Ok(None);
    }
    if g.data_inputs().count() != fixed.len() {
        return Err(Error::Graph(
            "some inputs have a fixed batch and others a symbolic one".into(),
        ));
    }
    let mut fb = FixedBatch {
        batch,
        inputs: fixed.into_iter().map(|(n, _)| n).collect(),
        outputs: Vec::new(),
    };
    let mut probe = g.clone();
    set_first_dim(&mut probe, &fb.inputs, Dim::Param(BATCH_SYMBOL.into()));
    // intermediate shape records would contradict the new batch
    probe.value_info.clear();
    for o in probe.outputs.iter_mut() {
        if first_dim(&o.shape) == Some(batch) {
            if let Some(d) = o.shape.as_mut() {
                d[0] = Dim::Param(BATCH_SYMBOL.into());
            }
            fb.outputs.push(o.name.clone());
        }
    }
    // Each pass fixes the Reshapes whose input now carries the probe batch;
    // their outputs then carry it too, so a few passes reach the end.
    for _ in 0..probe.nodes.len().max(1) {
        let facts = shape::infer(&probe, &shape::input_shapes(&probe, PROBES[0])?);
        let changed = retarget_reshapes(&mut probe, &facts, batch)?;
        if !changed {
            break;
        }
    }
    for p in PROBES {
        let facts = shape::infer_strict(&probe, p).map_err(|e| {
            Error::Graph(format!(
                "the batch is fixed at {batch} and cannot be made variable: {e}"
            ))
        })?;
        for o in &fb.outputs {
            if facts.shape(o).and_then(|s| s.first().copied()) != Some(p) {
                return Err(Error::Graph(format!(
                    "the batch is fixed at {batch} and cannot be made variable: output `{o}` does not follow the input's batch"
                )));
            }
        }
    }
    *g = probe;
    Ok(Some(fb))
}

/// Points each `Reshape` whose data carries the probe batch and whose
/// constant target starts with the fixed batch at a target starting with 0
/// ("copy the input's first dimension").
fn retarget_reshapes(g: &mut Graph, facts: &Facts, batch: i64) -> Result<bool> {
    let mut changed = false;
    let mut new_inits: HashMap<String, Tensor> = HashMap::new();
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        if n.op_type != "Reshape" || !n.is_onnx() {
            continue;
        }
        let (Some(data), Some(target)) = (n.input(0), n.input(1)) else {
            continue;
        };
        let shape = facts.shape(data).map(|s| s.to_vec()).unwrap_or_default();
        let allowzero = n.attr_int_or("allowzero", 0)? != 0;
        let Some(t) = g.constant(target) else {
            continue;
        };
        let Some(vals) = t.to_i64() else { continue };
        let mut v: Vec<i64> = vals.iter().copied().collect();
        if v.first() != Some(&batch) {
            continue;
        }
        // a flat value holding the probe batch's samples (an exporter's
        // view through a flattened tensor) unfolds with the batch inferred
        let rest: i64 = v[1..].iter().product();
        let flat = shape.len() == 1 && rest > 0 && shape[0] as i64 == PROBES[0] as i64 * rest;
        if shape.first().copied() != Some(PROBES[0]) && !flat {
            continue;
        }
        v[0] = if flat && !v.contains(&-1) {
            -1
        } else if flat {
            continue;
        } else if !allowzero {
            0
        } else if !v.contains(&-1) {
            -1
        } else {
            continue;
        };
        let name = g.fresh_name(&format!("{target}_batched"));
        let arr = ArrayD::from_shape_vec(IxDyn(&[v.len()]), v).expect("1-D");
        let tensor = Tensor::I64(arr);
        g.nodes[i].inputs[1] = name.clone();
        new_inits.insert(name, tensor);
        changed = true;
    }
    for (k, v) in new_inits {
        g.initializers.insert(k, v);
    }
    if changed {
        g.remove_dead();
    }
    Ok(changed)
}

fn set_first_dim(g: &mut Graph, names: &[String], d: Dim) {
    for v in g.inputs.iter_mut().chain(g.outputs.iter_mut()) {
        if names.contains(&v.name) {
            if let Some(dims) = v.shape.as_mut() {
                if !dims.is_empty() {
                    dims[0] = d.clone();
                }
            }
        }
    }
}

/// Gives the inputs and outputs that were fixed their batch back (the
/// retargeted `Reshape`s copy the batch and stay valid at any batch).
pub fn restore(g: &mut Graph, fb: &FixedBatch) {
    let names: Vec<String> = fb.inputs.iter().chain(&fb.outputs).cloned().collect();
    set_first_dim(g, &names, Dim::Fixed(fb.batch));
    g.value_info.clear();
}
