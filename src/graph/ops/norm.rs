//! `BatchNormalization` (inference form: scale, bias, mean, var).

use super::{Ctx, OpRule};
use crate::error::Result;
use crate::graph::shape::Fact;

pub struct BatchNorm;

impl OpRule for BatchNorm {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        if x.rank() < 2 {
            return Err(cx.err(format!("input shape {:?} has no channel axis", x.shape)));
        }
        let c = x.shape[1];
        for i in 1..5 {
            let p = cx.input(i)?;
            if p.shape != [c] {
                return Err(cx.err(format!(
                    "parameter input {i} has shape {:?}, expected [{c}]",
                    p.shape
                )));
            }
        }
        if cx.node.outputs.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(
                cx.err("training-mode BatchNormalization (running-stat outputs) is not supported")
            );
        }
        Ok(vec![Fact {
            dtype: x.dtype,
            shape: x.shape.clone(),
            value: None,
        }])
    }

    /// Learned: scale and bias; the running mean and variance are statistics.
    fn param_inputs(&self) -> Option<&'static [usize]> {
        Some(&[1, 2])
    }
}
