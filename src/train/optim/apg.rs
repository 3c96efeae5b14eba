//! The modified stochastic accelerated proximal gradient of SSS, exactly as
//! the authors' code runs it (per step, per gate tensor, v starting at 0):
//!
//!   v ← μ·v
//!   z ← λ − η·g            (g: the data-loss gradient only)
//!   z ← S_{η·γ}(z)
//!   v ← z − λ + v
//!   λ ← z + μ·v
//!   λ ← max(λ, 0)
//!
//! The threshold uses the scheduled η, so sparsification happens mostly
//! before the first learning-rate drop; the final clip turns the look-ahead
//! value μ·v < 0 into an exact 0.

use super::{soft_threshold, Rule};
use candle_core::{Result, Tensor};
use std::collections::HashMap;

pub struct Apg {
    pub momentum: f64,
    v: HashMap<String, Tensor>,
}

impl Apg {
    pub fn new(momentum: f64) -> Self {
        Apg {
            momentum,
            v: HashMap::new(),
        }
    }
}

impl Rule for Apg {
    fn update(
        &mut self,
        name: &str,
        lambda: &Tensor,
        g: &Tensor,
        lr: f64,
        gamma: f64,
    ) -> Result<Tensor> {
        let v = match self.v.get(name) {
            Some(v) => (v * self.momentum)?,
            None => lambda.zeros_like()?,
        };
        let z = (lambda - (g * lr)?)?;
        let z = soft_threshold(&z, lr * gamma)?;
        let v = ((&z - lambda)? + v)?;
        let new = (&z + (&v * self.momentum)?)?.relu()?;
        self.v.insert(name.to_string(), v);
        Ok(new)
    }

    fn state(&self) -> &HashMap<String, Tensor> {
        &self.v
    }

    fn load_state(&mut self, state: HashMap<String, Tensor>) {
        self.v = state;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f64]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn first_steps_by_hand_reach_an_exact_zero() {
        // λ0 = 1, g = 0.5, η = 0.1, γ = 1, μ = 0.9 (threshold 0.1)
        // 1: z = 0.95 → 0.85; v = −0.15;  λ = 0.85 − 0.135 = 0.715
        // 2: v = −0.135; z = 0.665 → 0.565; v = −0.285; λ = 0.565 − 0.2565 = 0.3085
        // 3: v = −0.2565; z = 0.2585 → 0.1585; v = −0.4065; λ = −0.20735 → 0
        let mut o = Apg::new(0.9);
        let mut l = t(&[1.0]);
        for exp in [0.715, 0.3085, 0.0] {
            l = o.update("g", &l, &t(&[0.5]), 0.1, 1.0).unwrap();
            let got = l.to_vec1::<f64>().unwrap()[0];
            assert!((got - exp).abs() < 1e-12, "{got} vs {exp}");
        }
        assert_eq!(l.to_vec1::<f64>().unwrap()[0], 0.0);
    }

    #[test]
    fn solves_a_non_negative_lasso_with_exact_zeros() {
        // min ½·Σ a_i(λ_i − b_i)² + γ·Σ|λ_i|, λ ≥ 0  →  λ_i = max(b_i − γ/a_i, 0)
        let a = [1.0, 2.0, 0.5, 4.0, 1.0];
        let b = [1.0, 0.1, 3.0, -1.0, 0.3];
        let gamma = 0.4;
        let mut o = Apg::new(0.9);
        let mut l = t(&[1.0; 5]);
        for _ in 0..2000 {
            let lv = l.to_vec1::<f64>().unwrap();
            let g: Vec<f64> = (0..5).map(|i| a[i] * (lv[i] - b[i])).collect();
            l = o.update("x", &l, &t(&g), 0.05, gamma).unwrap();
        }
        let got = l.to_vec1::<f64>().unwrap();
        for i in 0..5 {
            let want = (b[i] - gamma / a[i]).max(0.0);
            if want == 0.0 {
                assert_eq!(got[i], 0.0, "λ{i} must be exactly 0: {got:?}");
            } else {
                assert!((got[i] - want).abs() < 1e-6, "λ{i}: {} vs {want}", got[i]);
            }
        }
    }
}
