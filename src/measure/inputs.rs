//! Seeded random model inputs.

use crate::error::Result;
use crate::graph::Graph;
use crate::runtime::Tensors;
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};

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
