//! ISTA, the proximal-gradient baseline: λ ← S_{η·γ}(λ − η·g), no momentum.

use super::{soft_threshold, Rule};
use candle_core::{Result, Tensor};
use std::collections::HashMap;

#[derive(Default)]
pub struct Ista {
    none: HashMap<String, Tensor>,
}

impl Ista {
    pub fn new() -> Self {
        Ista::default()
    }
}

impl Rule for Ista {
    fn update(
        &mut self,
        _name: &str,
        lambda: &Tensor,
        g: &Tensor,
        lr: f64,
        gamma: f64,
    ) -> Result<Tensor> {
        soft_threshold(&(lambda - (g * lr)?)?, lr * gamma)
    }

    fn state(&self) -> &HashMap<String, Tensor> {
        &self.none
    }

    fn load_state(&mut self, _state: HashMap<String, Tensor>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn hand_computed_steps() {
        // λ = [1, 0.05, −0.3], g = [0.5, 0, 1], η = 0.1, γ = 1 (threshold 0.1)
        // z = [0.95, 0.05, −0.4] → S = [0.85, 0, −0.3]
        let mut o = Ista::new();
        let l = Tensor::new(&[1.0f64, 0.05, -0.3], &Device::Cpu).unwrap();
        let g = Tensor::new(&[0.5f64, 0.0, 1.0], &Device::Cpu).unwrap();
        let out = o
            .update("x", &l, &g, 0.1, 1.0)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let want = [0.85, 0.0, -0.3];
        for i in 0..3 {
            assert!((out[i] - want[i]).abs() < 1e-12, "{out:?}");
        }
        assert_eq!(out[1], 0.0);
    }
}
