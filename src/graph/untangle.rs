//! Rewrites at import that keep what the graph computes and give the
//! analysis and the pruner a plain graph:
//!
//! * parameters shared by several nodes get a copy each. Exporters merge
//!   initializers that happen to be equal (the zero biases of a freshly
//!   initialised model, often across layers of different blocks); pruning
//!   one layer's channels must not cut another's, and training must be free
//!   to move them apart, as the source model's parameters were.
//! * a `Gather` that reads a flat tensor at every index in order (an
//!   exporter's spelling of a contiguous `as_strided` view) becomes the
//!   `Reshape` it is, so the batch stays free.

use super::{Graph, Node, Tensor};
use ndarray::{ArrayD, IxDyn};

/// Applies both rewrites; returns how many copies and reshapes were made.
pub fn untangle(g: &mut Graph) -> (usize, usize) {
    (unshare_parameters(g), gathers_as_reshapes(g))
}

/// Gives every node reading a shared float initializer (more than one
/// value) a copy of its own, but the first.
fn unshare_parameters(g: &mut Graph) -> usize {
    let mut seen = std::collections::HashSet::new();
    let mut copies = 0;
    for k in 0..g.nodes.len() {
        for i in 0..g.nodes[k].inputs.len() {
            let name = g.nodes[k].inputs[i].clone();
            let shared = match g.initializers.get(&name) {
                Some(t @ Tensor::F32(_)) if t.len() > 1 => t.clone(),
                _ => continue,
            };
            if seen.insert(name.clone()) {
                continue;
            }
            let fresh = g.fresh_name(&name);
            g.initializers.insert(fresh.clone(), shared);
            g.nodes[k].inputs[i] = fresh;
            copies += 1;
        }
    }
    copies
}

/// `Gather(x, idx)` on axis 0 of a 1-D `x` of length L, with `idx` a
/// constant holding 0, 1, …, L−1 in order: `Reshape(x, shape of idx)`.
fn gathers_as_reshapes(g: &mut Graph) -> usize {
    let mut rewritten = 0;
    for k in 0..g.nodes.len() {
        let n = &g.nodes[k];
        if n.op_type != "Gather" || !n.is_onnx() || n.inputs.len() != 2 {
            continue;
        }
        if n.attr_int_or("axis", 0).unwrap_or(0) != 0 {
            continue;
        }
        let Some(Tensor::I64(idx)) = g.initializers.get(&n.inputs[1]) else {
            continue;
        };
        let in_order = idx.iter().enumerate().all(|(i, &v)| v == i as i64);
        // the data must be 1-D of exactly that length: a Reshape to [-1]
        // or a known flat value before it
        let flat = data_length(g, &n.inputs[0]);
        if !in_order || flat != Some(idx.len()) {
            continue;
        }
        let shape: Vec<i64> = idx.shape().iter().map(|&d| d as i64).collect();
        let name = g.fresh_name(&format!("{}/shape", n.display_name()));
        let t = ArrayD::from_shape_vec(IxDyn(&[shape.len()]), shape).expect("1-D");
        g.initializers.insert(name.clone(), Tensor::I64(t));
        let old = &g.nodes[k];
        let mut r = Node::new(
            "Reshape",
            &old.name,
            &[&old.inputs[0], &name],
            &[&old.outputs[0]],
        );
        r.preserved = old.preserved.clone();
        g.nodes[k] = r;
        rewritten += 1;
    }
    if rewritten > 0 {
        g.remove_dead();
    }
    rewritten
}

/// The length of `v` when it is a 1-D value the graph says so of: the
/// output of a Reshape to a constant 1-D shape from a value of known size.
fn data_length(g: &Graph, v: &str) -> Option<usize> {
    let facts = super::shape::infer(g, &super::shape::input_shapes(g, 1).ok()?);
    let s = facts.shape(v)?;
    (s.len() == 1).then(|| s[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::build::Builder;

    #[test]
    fn shared_parameters_are_copied_and_an_in_order_gather_is_a_reshape() {
        let mut b = Builder::new("x", &[1, 4, 2, 2], 0);
        let w = b.weight("w", &[4, 4, 1, 1], 0.5);
        let bias = b.weight("b", &[4], 0.5);
        let half = b.weight("half", &[], 1.0);
        let y = b.node("Conv", &["x", &w, &bias], vec![]);
        let y = b.node("Conv", &[&y, &w, &bias], vec![]);
        let y = b.node("Mul", &[&y, &half], vec![]);
        let y = b.node("Mul", &[&y, &half], vec![]);
        let flat = b.ints("flat", &[-1]);
        let y = b.node("Reshape", &[&y, &flat], vec![]);
        let idx = b.ints("idx", &(0..16).collect::<Vec<i64>>());
        let out = b.node("Gather", &[&y, &idx], vec![]);
        let mut g = b.finish(&out);
        g.outputs[0].shape = None;
        let (copies, reshapes) = untangle(&mut g);
        // the second conv's weight and bias; a scalar stays shared
        assert_eq!((copies, reshapes), (2, 1));
        let convs: Vec<&Node> = g.nodes.iter().filter(|n| n.op_type == "Conv").collect();
        assert_ne!(convs[0].inputs[1], convs[1].inputs[1]);
        assert_eq!(
            g.initializers[&convs[0].inputs[1]].as_f32(),
            g.initializers[&convs[1].inputs[1]].as_f32()
        );
        assert!(g.nodes.iter().all(|n| n.op_type != "Gather"));
        // out of order: left as it is
        let mut b = Builder::new("x", &[4], 0);
        let idx = b.ints("idx", &[1, 0, 2, 3]);
        let out = b.node("Gather", &["x", &idx], vec![]);
        let mut g = b.finish(&out);
        g.outputs[0].shape = None;
        assert_eq!(untangle(&mut g), (0, 0));
    }
}
