//! Nesterov momentum SGD with decoupled-from-nothing (L2) weight decay, in
//! the form PyTorch uses:
//!   d = g + wd·w;  v = μ·v + d;  w = w − η·(d + μ·v)

use candle_core::{Result, Tensor};
use std::collections::HashMap;

pub struct Nag {
    pub momentum: f64,
    pub weight_decay: f64,
    v: HashMap<String, Tensor>,
}

impl Nag {
    pub fn new(momentum: f64, weight_decay: f64) -> Self {
        Nag {
            momentum,
            weight_decay,
            v: HashMap::new(),
        }
    }

    /// The step with an explicit weight decay (0 for BN and gates).
    pub fn update_with_decay(
        &mut self,
        name: &str,
        w: &Tensor,
        g: &Tensor,
        lr: f64,
        wd: f64,
    ) -> Result<Tensor> {
        let d = if wd != 0.0 {
            (g + (w * wd)?)?
        } else {
            g.clone()
        };
        let v = match self.v.get(name) {
            Some(v) => ((v * self.momentum)? + &d)?,
            None => d.clone(),
        };
        let step = (&d + (&v * self.momentum)?)?;
        self.v.insert(name.to_string(), v);
        w - (step * lr)?
    }
}

impl Nag {
    pub fn update(&mut self, name: &str, w: &Tensor, g: &Tensor, lr: f64) -> Result<Tensor> {
        let wd = self.weight_decay;
        self.update_with_decay(name, w, g, lr, wd)
    }

    pub fn state(&self) -> &HashMap<String, Tensor> {
        &self.v
    }

    pub fn load_state(&mut self, state: HashMap<String, Tensor>) {
        self.v = state;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_a_hand_computed_sequence() {
        // w0 = 1, g = 0.5 each step, η = 0.1, μ = 0.9, wd = 0.1
        // step 1: d = 0.5 + 0.1 = 0.6; v = 0.6; w = 1 − 0.1·(0.6 + 0.54) = 0.886
        // step 2: d = 0.5 + 0.0886 = 0.5886; v = 0.54 + 0.5886 = 1.1286;
        //         w = 0.886 − 0.1·(0.5886 + 1.01574) = 0.7255660
        let mut o = Nag::new(0.9, 0.1);
        let g = Tensor::new(&[0.5f64], &Device::Cpu).unwrap();
        let mut w = Tensor::new(&[1.0f64], &Device::Cpu).unwrap();
        let want = [0.886, 0.725_566];
        for exp in want {
            w = o.update("w", &w, &g, 0.1).unwrap();
            let got = w.to_vec1::<f64>().unwrap()[0];
            assert!((got - exp).abs() < 1e-9, "{got} vs {exp}");
        }
    }
}
