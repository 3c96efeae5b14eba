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
    /// `Reshape`s whose batch dimension was found inside the target
    /// (sequence-first attention, batch merged with heads): a layout
    /// inference that `measure::rebatch` confirms by running the graph.
    pub inferred: Vec<String>,
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
        inferred: Vec::new(),
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
        let base = shape::infer(&probe, &shape::input_shapes(&probe, batch as usize)?);
        let changed = retarget_reshapes(&mut probe, &facts, &base, batch, &mut fb.inferred)?
            | expand_concatenated_constants(&mut probe, &facts, batch)?;
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

/// The dimension of a value that carries the batch: the one that is
/// `PROBES[0]` times larger at the probe batch than at the fixed batch,
/// all others equal (a sequence-first tensor carries it second).
fn batch_axis(at_probe: &[usize], at_fixed: &[usize], batch: i64) -> Option<usize> {
    if at_probe.len() != at_fixed.len() || batch != 1 {
        return None;
    }
    let mut axis = None;
    for (k, (&p, &f)) in at_probe.iter().zip(at_fixed).enumerate() {
        if p == f {
            continue;
        }
        if p != PROBES[0] * f || axis.is_some() {
            return None;
        }
        axis = Some(k);
    }
    axis
}

/// A target for a `Reshape` whose data carries the batch in dimension
/// `axis` (not first, or merged with another factor): the output
/// dimension that holds the batch gets -1 ("whatever is left"). In
/// row-major order the batch (1 at the fixed batch) sits after the
/// elements before it: `before` when it is the outer factor of its
/// dimension (heads merged as N·H), `before · dim` when the inner one
/// (sequence-first tokens merged as L·N). An output dimension of 1
/// starting there is the batch itself; otherwise the dimension starting
/// there takes it as its outer factor, or, when that is the last one (the
/// features), the one before takes it as its inner factor. `None` when
/// none fits or the target already has a -1.
fn batch_in_target(
    target: &[i64],
    at_fixed_in: &[usize],
    out: &[usize],
    axis: usize,
) -> Option<Vec<i64>> {
    if target.contains(&-1) || target.len() != out.len() || out.is_empty() {
        return None;
    }
    let outer: usize = at_fixed_in[..axis].iter().product();
    let inner = outer * at_fixed_in[axis];
    // prefix[q]: elements before output dimension q
    let prefix: Vec<usize> = (0..out.len()).map(|q| out[..q].iter().product()).collect();
    let with = |q: usize| {
        let mut t = target.to_vec();
        t[q] = -1;
        Some(t)
    };
    for a in [outer, inner] {
        if let Some(q) = (0..out.len()).find(|&q| prefix[q] == a && out[q] == 1) {
            return with(q);
        }
    }
    let q = (0..out.len()).find(|&q| prefix[q] == outer)?;
    if q + 1 < out.len() {
        with(q)
    } else if q > 0 {
        with(q - 1)
    } else {
        None
    }
}

/// Points each `Reshape` whose data carries the probe batch and whose
/// constant target has the fixed batch at a target that follows the
/// batch: a leading batch becomes 0 ("copy the input's first dimension"),
/// a batch inside (sequence-first attention) or merged with heads the
/// -1 of the dimension that holds it.
fn retarget_reshapes(
    g: &mut Graph,
    facts: &Facts,
    base: &Facts,
    batch: i64,
    inferred: &mut Vec<String>,
) -> Result<bool> {
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
        let inner = match (base.shape(data), base.shape(&n.outputs[0])) {
            (Some(fixed_in), Some(out)) => batch_axis(&shape, fixed_in, batch)
                .filter(|&a| a > 0 || fixed_in[0] > 1)
                .and_then(|a| batch_in_target(&v, fixed_in, out, a)),
            _ => None,
        };
        if let Some(t) = &inner {
            v = t.clone();
            inferred.push(n.name.clone());
        } else if v.first() != Some(&batch) {
            continue;
        }
        // a flat value holding the probe batch's samples (an exporter's
        // view through a flattened tensor) unfolds with the batch inferred
        let rest: i64 = v[1..].iter().product();
        let flat = shape.len() == 1 && rest > 0 && shape[0] as i64 == PROBES[0] as i64 * rest;
        if inner.is_none() && shape.first().copied() != Some(PROBES[0]) && !flat {
            continue;
        }
        v[0] = if inner.is_some() {
            v[0]
        } else if flat && !v.contains(&-1) {
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

/// Gives a batch-1 value that a `Concat` joins to one carrying the probe
/// batch (a ViT's class token, which an export at batch 1 leaves
/// unexpanded or expands to 1) the batch of that value: `Expand(c, [N, 1, …])` with `N`
/// read from the value's shape, valid at any batch.
fn expand_concatenated_constants(g: &mut Graph, facts: &Facts, batch: i64) -> Result<bool> {
    if batch != 1 {
        return Ok(false);
    }
    let mut changed = false;
    let mut i = 0;
    while i < g.nodes.len() {
        let n = &g.nodes[i];
        if n.op_type != "Concat" || !n.is_onnx() {
            i += 1;
            continue;
        }
        let batched = n
            .inputs
            .iter()
            .find(|x| facts.shape(x).and_then(|s| s.first().copied()) == Some(PROBES[0]))
            .cloned();
        // the inputs left at batch 1 (a constant, or a constant expanded to
        // the fixed batch), joined along another axis
        let rank = facts.shape(&n.outputs[0]).map_or(0, |s| s.len()) as i64;
        let axis = n.attr_int_or("axis", 0)?;
        let along_batch = axis == 0 || axis == -rank;
        let consts: Vec<(usize, usize)> = n
            .inputs
            .iter()
            .enumerate()
            .filter_map(|(k, x)| {
                let s = facts.shape(x)?;
                (s.len() >= 2 && s[0] == 1 && !along_batch).then_some((k, s.len()))
            })
            .collect();
        let (Some(batched), false) = (batched, consts.is_empty()) else {
            i += 1;
            continue;
        };
        let mut added = Vec::new();
        for (k, rank) in consts {
            let c = g.nodes[i].inputs[k].clone();
            let shape_of = g.fresh_name(&format!("{c}_batch_shape"));
            let first = g.fresh_name(&format!("{c}_batch"));
            let zero = g.fresh_name(&format!("{c}_batch_index"));
            let ones = g.fresh_name(&format!("{c}_ones"));
            let target = g.fresh_name(&format!("{c}_expand_shape"));
            let expanded = g.fresh_name(&format!("{c}_expanded"));
            g.initializers.insert(
                zero.clone(),
                Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[1]), vec![0]).expect("1-D")),
            );
            g.initializers.insert(
                ones.clone(),
                Tensor::I64(
                    ArrayD::from_shape_vec(IxDyn(&[rank - 1]), vec![1; rank - 1]).expect("1-D"),
                ),
            );
            let mut concat = super::Node::new("Concat", &target, &[&first, &ones], &[&target]);
            concat.set_attr("axis", super::attr::Attr::Int(0));
            added.extend([
                super::Node::new("Shape", &shape_of, &[&batched], &[&shape_of]),
                super::Node::new("Gather", &first, &[&shape_of, &zero], &[&first]),
                concat,
                super::Node::new("Expand", &expanded, &[&c, &target], &[&expanded]),
            ]);
            g.nodes[i].inputs[k] = expanded;
        }
        let n_added = added.len();
        g.nodes.splice(i..i, added);
        i += n_added + 1;
        changed = true;
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

#[cfg(test)]
mod inner_batch_tests {
    use super::*;

    #[test]
    fn the_batch_is_found_in_the_reshapes_of_sequence_first_attention() {
        // PyTorch's multi-head attention at batch 1, tokens first (L 17,
        // width 48, 3 heads of 16): (input at the fixed batch, batch axis
        // of the input, target, output) → the target that follows the batch
        type Case<'a> = (&'a [usize], usize, &'a [i64], &'a [i64]);
        let cases: &[Case] = &[
            // [L, N, 3E] unflattened to [L, N, 3, E]: an explicit 1
            (&[17, 1, 144], 1, &[17, 1, 3, 48], &[17, -1, 3, 48]),
            // q.view(L, N·H, Dh): the batch outer in the merged dimension
            (&[17, 1, 48], 1, &[17, 3, 16], &[17, -1, 16]),
            // [N·H, L, Dh].view(N, H, L, Dh): an explicit 1 first
            (&[3, 17, 16], 0, &[1, 3, 17, 16], &[-1, 3, 17, 16]),
            // [L, N, H, Dh].view(L·N, E): not the features, the tokens
            (&[17, 1, 3, 16], 1, &[17, 48], &[-1, 48]),
            // [L·N, E].view(L, N, E): the batch inner in the merged input
            (&[17, 48], 0, &[17, 1, 48], &[17, -1, 48]),
        ];
        for &(input, axis, target, want) in cases {
            let out: Vec<usize> = target.iter().map(|&d| d as usize).collect();
            let got = batch_in_target(target, input, &out, axis);
            assert_eq!(got.as_deref(), Some(want), "{input:?} → {target:?}");
        }
        // a target with its own -1 is left alone
        assert_eq!(batch_in_target(&[17, -1], &[17, 1, 48], &[17, 48], 1), None);
    }
}
