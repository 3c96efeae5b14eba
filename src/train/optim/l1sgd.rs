//! SGD with momentum on the L1-penalised loss: g' = g + γ·sign(λ);
//! v = μ·v + g'; λ = λ − η·v. It gives no exact zeros (the paper's point);
//! a magnitude threshold has to follow it.

use super::Rule;
use candle_core::{Result, Tensor};
use std::collections::HashMap;

pub struct L1Sgd {
    pub momentum: f64,
    v: HashMap<String, Tensor>,
}

impl L1Sgd {
    pub fn new(momentum: f64) -> Self {
        L1Sgd {
            momentum,
            v: HashMap::new(),
        }
    }
}

impl Rule for L1Sgd {
    fn update(
        &mut self,
        name: &str,
        lambda: &Tensor,
        g: &Tensor,
        lr: f64,
        gamma: f64,
    ) -> Result<Tensor> {
        let d = (g + (lambda.sign()? * gamma)?)?;
        let v = match self.v.get(name) {
            Some(v) => ((v * self.momentum)? + &d)?,
            None => d,
        };
        let out = (lambda - (&v * lr)?)?;
        self.v.insert(name.to_string(), v);
        Ok(out)
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

    #[test]
    fn hand_computed_steps() {
        // λ0 = 1, g = 0.5, γ = 1, μ = 0.9, η = 0.1
        // 1: g' = 1.5, v = 1.5, λ = 0.85;  2: v = 1.35 + 1.5 = 2.85, λ = 0.565
        let mut o = L1Sgd::new(0.9);
        let mut l = Tensor::new(&[1.0f64], &Device::Cpu).unwrap();
        let g = Tensor::new(&[0.5f64], &Device::Cpu).unwrap();
        for exp in [0.85, 0.565] {
            l = o.update("x", &l, &g, 0.1, 1.0).unwrap();
            assert!((l.to_vec1::<f64>().unwrap()[0] - exp).abs() < 1e-12);
        }
    }
}
