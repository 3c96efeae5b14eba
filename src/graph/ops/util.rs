//! Small shared pieces of the op rules.

use crate::error::Result;
use crate::graph::shape::Fact;
use crate::graph::tensor::Tensor;
use ndarray::{ArrayD, IxDyn};

/// Normalises a possibly negative axis against `rank`.
pub fn axis(cx: &super::Ctx, a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r).contains(&v) {
        Ok(v as usize)
    } else {
        Err(cx.err(format!("axis {a} is out of range for rank {rank}")))
    }
}

/// NumPy-style broadcast of two shapes.
pub fn broadcast(cx: &super::Ctx, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let x = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let y = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (x, y) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(cx.err(format!("shapes {a:?} and {b:?} do not broadcast"))),
        };
    }
    Ok(out)
}

/// A fact with a known integer value.
pub fn int_fact(values: ArrayD<i64>) -> Fact {
    Fact {
        dtype: crate::graph::tensor::dtype::INT64,
        shape: values.shape().to_vec(),
        value: Some(Tensor::I64(values)),
    }
}

pub fn vec_fact(values: Vec<i64>) -> Fact {
    let n = values.len();
    int_fact(ArrayD::from_shape_vec(IxDyn(&[n]), values).expect("1-D shape matches length"))
}

/// Values are propagated only for small tensors: shape arithmetic, never
/// activations.
pub const MAX_FOLD: usize = 4096;
