//! Train-mode batch normalisation — or, in BN-folded exports, a conv's bias —
//! fused with what follows it in a gated residual branch: an SSS gate (per
//! channel or one per block) and a ReLU,
//!   y = relu(λ_c · (s_c · x̂ + b_c)),   x̂ = (x − μ_c) / σ_c
//! (for a bias: s = 1, x̂ = x), in one pass forward and two backward (one
//! per-channel reduction, one elementwise), where the ops apart read and
//! write the activations eight more times. Memory traffic, not arithmetic,
//! is what these ops cost.
//!
//! Backward, with m = [y > 0] (or 1 without the ReLU) and g = dy · m; the
//! mask is recomputed from x with the forward's own arithmetic (bit for bit
//! the same), so the backward reads x and dy but not y:
//!   S₁ = Σ g,  S₂ = Σ g · x̂                     (per channel)
//!   dλ_c = s_c·S₂ + b_c·S₁,  db = λ_c·S₁,  ds = λ_c·S₂
//!   dx = s_c/(σ_c·M) · (M·λ_c·g − db − x̂·ds)

use super::{contiguous, custom_op, nchw, par_build, Elem};
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// (x, p, λ [C] or [1]) → y, p as [`Norm`] says.
#[derive(Debug, Clone, Copy)]
pub struct BnChain {
    pub norm: Norm,
    pub relu: bool,
}

/// What precedes the gate.
#[derive(Debug, Clone, Copy)]
pub enum Norm {
    /// Train-mode BN, p [4, C]: scale, bias, batch mean, batch variance;
    /// the statistics come from `ChannelStats` without gradient, as in
    /// `BatchNormTrain`.
    Batch { eps: f64 },
    /// A conv's bias, p [1, C].
    Bias,
}

/// Per channel: the scale s and shift b of the affine map, the mean it
/// subtracts and σ⁻¹ (0 and 1 for a bias).
struct Affine {
    s: Vec<f64>,
    b: Vec<f64>,
    mean: Vec<f64>,
    inv: Vec<f64>,
}

impl Norm {
    fn affine(&self, p: &[f64], c: usize) -> Affine {
        match *self {
            Norm::Batch { eps } => Affine {
                s: p[..c].to_vec(),
                b: p[c..2 * c].to_vec(),
                mean: p[2 * c..3 * c].to_vec(),
                inv: (0..c).map(|i| 1.0 / (p[3 * c + i] + eps).sqrt()).collect(),
            },
            Norm::Bias => Affine {
                s: vec![1.0; c],
                b: p[..c].to_vec(),
                mean: vec![0.0; c],
                inv: vec![1.0; c],
            },
        }
    }
}

/// (x, dy) with (p, λ) carried → [3, C]: ds, db, dλ per channel.
struct ChainSums {
    op: BnChain,
    p: Tensor,
    gate: Tensor,
}

/// (x, dy) with (p, λ) and q [3, C]: a, b, e carried → dx = a·g + b·x + e.
struct ChainGradInput {
    op: BnChain,
    p: Tensor,
    gate: Tensor,
    q: Tensor,
}

/// A small carried tensor's values as f64.
fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.flatten_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1()
}

/// y = relu(x·k + shift) per channel: BN with the gate folded in. Forward
/// and backward both take k and shift from here, so the backward's ReLU
/// mask is the forward's exactly.
fn fold<T: Elem>(a: &Affine, gate: &[f64]) -> (Vec<T>, Vec<T>) {
    (0..a.s.len())
        .map(|i| {
            let l = gate_of(gate, i);
            let k = a.s[i] * a.inv[i];
            let shift = a.b[i] - a.mean[i] * k;
            (T::from_f64(l * k), T::from_f64(l * shift))
        })
        .unzip()
}

fn gate_of(gate: &[f64], ch: usize) -> f64 {
    if gate.len() == 1 {
        gate[0]
    } else {
        gate[ch]
    }
}

#[allow(clippy::too_many_arguments)]
fn forward<T: Elem>(
    op: &BnChain,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    s3: &CpuStorage,
    l3: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (x, p, gate) = (
        contiguous::<T>(s1, l1)?,
        contiguous::<T>(s2, l2)?,
        contiguous::<T>(s3, l3)?,
    );
    let (_, c, hw) = nchw(l1);
    let p: Vec<f64> = p.iter().map(|v| v.to_f64()).collect();
    let gate: Vec<f64> = gate.iter().map(|v| v.to_f64()).collect();
    let (k, shift) = fold::<T>(&op.norm.affine(&p, c), &gate);
    let zero = T::default();
    let relu = op.relu;
    let y = par_build(x.len(), hw, |plane| {
        let (kk, sh) = (k[plane % c], shift[plane % c]);
        x[plane * hw..(plane + 1) * hw].iter().map(move |&v| {
            let u = v * kk + sh;
            // NaN goes to 0 as in the ReLU kernel
            if !relu || u > zero {
                u
            } else {
                zero
            }
        })
    });
    Ok((T::to_cpu_storage_owned(y), l1.shape().clone()))
}

/// Σ g and Σ g·(x − μ) over one plane, g = dy where y > 0 (or dy), in 16
/// independent lanes.
/// Σ g and Σ g·(x − μ) over one plane, g = dy where x·k + shift > 0 (or
/// dy), in 16 independent lanes.
#[inline]
fn plane_sums<T: Elem>(x: &[T], dy: &[T], mean: T, mask: Option<(T, T)>) -> (f64, f64) {
    const L: usize = 16;
    let zero = T::default();
    let pass = |g: T, v: T| match mask {
        Some((k, sh)) if v * k + sh > zero => g,
        Some(_) => zero,
        None => g,
    };
    let (mut s1, mut s2) = ([zero; L], [zero; L]);
    let (xc, dc) = (x.chunks_exact(L), dy.chunks_exact(L));
    let (xr, dr) = (xc.remainder(), dc.remainder());
    for (xs, ds) in xc.zip(dc) {
        for j in 0..L {
            let g = pass(ds[j], xs[j]);
            s1[j] += g;
            s2[j] += g * (xs[j] - mean);
        }
    }
    let mut a: f64 = s1.iter().map(|v| v.to_f64()).sum();
    let mut b: f64 = s2.iter().map(|v| v.to_f64()).sum();
    for (&xv, &g) in xr.iter().zip(dr) {
        let g = pass(g, xv);
        a += g.to_f64();
        b += (g * (xv - mean)).to_f64();
    }
    (a, b)
}

fn sums<T: Elem>(
    op: &ChainSums,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (x, dy) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
    let (n, c, hw) = nchw(l1);
    let (p, gate) = (values(&op.p)?, values(&op.gate)?);
    let af = op.op.norm.affine(&p, c);
    let (k, shift) = fold::<T>(&af, &gate);
    let out: Vec<[f64; 3]> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let mean = T::from_f64(af.mean[ch]);
            let mask = op.op.relu.then_some((k[ch], shift[ch]));
            let (mut a, mut b) = (0f64, 0f64);
            for i in 0..n {
                let r = (i * c + ch) * hw..(i * c + ch + 1) * hw;
                let (pa, pb) = plane_sums(&x[r.clone()], &dy[r], mean, mask);
                a += pa;
                b += pb;
            }
            // S₁ = Σ g, S₂ = Σ g·x̂
            let (s1, s2) = (a, b * af.inv[ch]);
            let l = gate_of(&gate, ch);
            // ds, db, dλ (ds unused for a bias)
            [l * s2, l * s1, af.s[ch] * s2 + af.b[ch] * s1]
        })
        .collect();
    let flat: Vec<T> = (0..3)
        .flat_map(|r| out.iter().map(move |v| T::from_f64(v[r])))
        .collect();
    Ok((T::to_cpu_storage_owned(flat), Shape::from((3, c))))
}

fn grad_input<T: Elem>(
    op: &ChainGradInput,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (x, dy) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
    let (_, c, hw) = nchw(l1);
    let (p, gate, q) = (values(&op.p)?, values(&op.gate)?, values(&op.q)?);
    let (k, shift) = fold::<T>(&op.op.norm.affine(&p, c), &gate);
    let coef: Vec<(T, T, T)> = (0..c)
        .map(|i| {
            (
                T::from_f64(q[i]),
                T::from_f64(q[c + i]),
                T::from_f64(q[2 * c + i]),
            )
        })
        .collect();
    let (zero, relu) = (T::default(), op.op.relu);
    let dx = par_build(x.len(), hw, |plane| {
        let ch = plane % c;
        let (a, b, e) = coef[ch];
        let (kk, sh) = (k[ch], shift[ch]);
        let r = plane * hw..(plane + 1) * hw;
        dy[r.clone()].iter().zip(&x[r]).map(move |(&g, &xv)| {
            let g = if !relu || xv * kk + sh > zero {
                g
            } else {
                zero
            };
            a * g + b * xv + e
        })
    });
    Ok((T::to_cpu_storage_owned(dx), l1.shape().clone()))
}

custom_op!(CustomOp3 for BnChain {
    name(&self) {
        match self.norm {
            Norm::Batch { .. } => "sss-bn-gate-relu",
            Norm::Bias => "sss-bias-gate-relu",
        }
    }
    fwd(s1: l1, s2: l2, s3: l3) => forward(self, s1, l1, s2, l2, s3, l3);

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        gate: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (x, dy) = (x.contiguous()?, dy.contiguous()?);
        let c = p.dims()[1];
        let m = (x.elem_count() / c) as f64;
        let sums = x.apply_op2_no_bwd(
            &dy,
            &ChainSums {
                op: *self,
                p: p.clone(),
                gate: gate.clone(),
            },
        )?;
        let (ds, db, dl) = (sums.get(0)?, sums.get(1)?, sums.get(2)?);
        // dx = a·g + b·x + e per channel (the module comment's dx expanded;
        // for a bias dx = λ·g)
        let (pv, gv, dsv, dbv) = (values(p)?, values(gate)?, values(&ds)?, values(&db)?);
        let af = self.norm.affine(&pv, c);
        let mut q = vec![0f64; 3 * c];
        for ch in 0..c {
            let l = gate_of(&gv, ch);
            match self.norm {
                Norm::Batch { .. } => {
                    let (inv, mean) = (af.inv[ch], af.mean[ch]);
                    let k = af.s[ch] * inv / m;
                    q[ch] = k * m * l;
                    q[c + ch] = -k * dsv[ch] * inv;
                    q[2 * c + ch] = k * (mean * inv * dsv[ch] - dbv[ch]);
                }
                Norm::Bias => q[ch] = l,
            }
        }
        let q = Tensor::from_vec(q, (3, c), x.device())?.to_dtype(x.dtype())?;
        let dx = x.apply_op2_no_bwd(
            &dy,
            &ChainGradInput {
                op: *self,
                p: p.clone(),
                gate: gate.clone(),
                q,
            },
        )?;
        let dp = match self.norm {
            Norm::Batch { .. } => Tensor::cat(
                &[sums.narrow(0, 0, 2)?, p.narrow(0, 2, 2)?.zeros_like()?],
                0,
            )?,
            Norm::Bias => db.reshape(p.shape())?,
        };
        let dgate = if gate.elem_count() == 1 {
            dl.sum_all()?.reshape(gate.shape())?
        } else {
            dl.reshape(gate.shape())?
        };
        Ok((Some(dx), Some(dp), Some(dgate)))
    }
});

custom_op!(CustomOp2 for ChainSums {
    name(&self) {
        "sss-chain-sums"
    }
    fwd(s1: l1, s2: l2) => sums(self, s1, l1, s2, l2);
});

custom_op!(CustomOp2 for ChainGradInput {
    name(&self) {
        "sss-chain-grad-input"
    }
    fwd(s1: l1, s2: l2) => grad_input(self, s1, l1, s2, l2);
});
