//! Model inputs: the declared input shape, seeded random batches.

use crate::error::{Error, Result};
use crate::graph::{Dim, Graph};
use crate::runtime::Tensors;
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};

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

/// The number of classes a classifier's first output gives (its last
/// dimension), if the graph says.
pub fn output_classes(g: &Graph) -> Option<usize> {
    let facts = crate::graph::shape::infer_strict(g, 1).ok()?;
    facts.shape(&g.outputs.first()?.name)?.last().copied()
}

/// Standard-normal values (Box–Muller), reproducible from `seed`.
pub fn normal(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let u1: f32 = rng.random_range(f32::EPSILON..1.0);
            let u2: f32 = rng.random_range(0.0..1.0);
            (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("length matches shape")
}

/// One random batch for every data input of `g` (symbolic batch → `batch`).
pub fn random_inputs(g: &Graph, batch: usize, seed: u64) -> Result<Tensors> {
    let shapes = crate::graph::shape::input_shapes(g, batch)?;
    let mut out = Vec::new();
    for (i, v) in g.data_inputs().enumerate() {
        let shape = &shapes[&v.name];
        out.push((v.name.clone(), normal(shape, seed.wrapping_add(i as u64))));
    }
    Ok(out)
}
