//! Nesterov momentum SGD with decoupled-from-nothing (L2) weight decay, in
//! the form PyTorch uses:
//!   d = g + wd·w;  v = μ·v + d;  w = w − η·(d + μ·v)

use crate::train::kernels::{contiguous, custom_op, Elem};
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
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
        if w.device().is_cpu() && w.dtype() == g.dtype() {
            // one pass over w, g and v instead of eight tensor operations
            let first = !self.v.contains_key(name);
            let v = self.v.get(name).unwrap_or(g);
            let op = Step {
                momentum: self.momentum,
                lr,
                wd,
                first,
            };
            let out = w
                .contiguous()?
                .apply_op3_no_bwd(&g.contiguous()?, &v.contiguous()?, &op)?;
            let v = out.get(1)?.reshape(w.shape())?;
            self.v.insert(name.to_string(), v);
            return out.get(0)?.reshape(w.shape());
        }
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

/// The NAG step of a whole tensor on the CPU: (w, g, v) → [w', v']
/// stacked; v is not read on the first step (`first`: v' = d).
#[derive(Debug, Clone, Copy)]
struct Step {
    momentum: f64,
    lr: f64,
    wd: f64,
    first: bool,
}

fn step<T: Elem>(
    op: &Step,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    s3: &CpuStorage,
    l3: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (w, g, v) = (
        contiguous::<T>(s1, l1)?,
        contiguous::<T>(s2, l2)?,
        contiguous::<T>(s3, l3)?,
    );
    let n = w.len();
    if g.len() != n || (!op.first && v.len() != n) {
        candle_core::bail!("NAG step: weights, gradient and momentum differ in size");
    }
    let (mu, lr, wd) = (
        T::from_f64(op.momentum),
        T::from_f64(op.lr),
        T::from_f64(op.wd),
    );
    let mut out: Vec<T> = Vec::with_capacity(2 * n);
    let (wo, vo) = out.spare_capacity_mut()[..2 * n].split_at_mut(n);
    const CHUNK: usize = 1 << 15;
    wo.par_chunks_mut(CHUNK)
        .zip(vo.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(i, (wo, vo))| {
            let at = i * CHUNK;
            for j in 0..wo.len() {
                let wj = w[at + j];
                let d = g[at + j] + wd * wj;
                let vn = if op.first { d } else { mu * v[at + j] + d };
                vo[j].write(vn);
                wo[j].write(wj - lr * (d + mu * vn));
            }
        });
    // SAFETY: both halves were written in full above
    unsafe { out.set_len(2 * n) };
    Ok((T::to_cpu_storage_owned(out), Shape::from((2, n))))
}

custom_op!(CustomOp3 for Step {
    name(&self) {
        "sss-nag-step"
    }
    fwd(s1: l1, s2: l2, s3: l3) => step(self, s1, l1, s2, l2, s3, l3);
});

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The one-pass CPU step against the same formula in tensor
    /// operations, over three steps (the first without momentum).
    #[test]
    fn one_pass_step_matches_the_formula() {
        let dev = Device::Cpu;
        let mut o = Nag::new(0.9, 5e-4);
        let mut w = Tensor::randn(0f64, 1.0, (70_001,), &dev).unwrap();
        let mut v: Option<Tensor> = None;
        for k in 0..3 {
            let g = Tensor::randn(0f64, 1.0, (70_001,), &dev).unwrap();
            let d = (&g + (&w * 5e-4).unwrap()).unwrap();
            let vn = match &v {
                Some(v) => ((v * 0.9).unwrap() + &d).unwrap(),
                None => d.clone(),
            };
            let want = (&w - ((&d + (&vn * 0.9).unwrap()).unwrap() * 0.05).unwrap()).unwrap();
            w = o.update("w", &w, &g, 0.05).unwrap();
            let diff = (&w - &want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f64>().unwrap() < 1e-12, "step {k}");
            v = Some(vn);
        }
    }

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
