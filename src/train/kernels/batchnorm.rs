//! Train-mode batch normalisation fused into custom ops: per-channel batch
//! statistics in one pass (f64 accumulation), the normalisation in another,
//! and the closed-form backward
//!   db = Σ dy,  ds = Σ dy·x̂,  dx = s·σ⁻¹/M · (M·dy − db − x̂·ds).

use super::{contiguous, dispatch, Elem};
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// x [N, C, H, W] → [2, C]: mean and biased variance per channel.
pub struct ChannelStats;

/// (x, scale [C], bias [C]) → y, with batch statistics.
pub struct BatchNormTrain {
    pub eps: f64,
}

/// (x, dy, stats [2, C]) → [2, C]: ds and db.
struct GradParams {
    eps: f64,
}

/// (x, dy, packed [5, C]: scale, ds, db, mean, var) → dx.
struct GradInput {
    eps: f64,
}

fn nchw(l: &Layout) -> (usize, usize, usize) {
    let d = l.dims();
    (d[0], d[1], d[2..].iter().product())
}

fn stats_of<T: Elem>(x: &[T], n: usize, c: usize, hw: usize) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut s, mut q) = (0f64, 0f64);
            for b in 0..n {
                for &v in &x[(b * c + ch) * hw..(b * c + ch + 1) * hw] {
                    let v = v.to_f64();
                    s += v;
                    q += v * v;
                }
            }
            let m = (n * hw) as f64;
            let mean = s / m;
            (mean, (q / m - mean * mean).max(0.0))
        })
        .collect()
}

fn stats<T: Elem>(s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = contiguous::<T>(s, l)?;
    let (n, c, hw) = nchw(l);
    let st = stats_of(x, n, c, hw);
    let mut out: Vec<T> = st.iter().map(|p| T::from_f64(p.0)).collect();
    out.extend(st.iter().map(|p| T::from_f64(p.1)));
    Ok((T::to_cpu_storage_owned(out), Shape::from((2, c))))
}

#[allow(clippy::too_many_arguments)]
fn forward<T: Elem>(
    eps: f64,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    s3: &CpuStorage,
    l3: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (x, scale, bias) = (
        contiguous::<T>(s1, l1)?,
        contiguous::<T>(s2, l2)?,
        contiguous::<T>(s3, l3)?,
    );
    let (n, c, hw) = nchw(l1);
    let st = stats_of(x, n, c, hw);
    // y = x·k + shift per channel
    let k: Vec<f64> = (0..c)
        .map(|i| scale[i].to_f64() / (st[i].1 + eps).sqrt())
        .collect();
    let shift: Vec<f64> = (0..c).map(|i| bias[i].to_f64() - st[i].0 * k[i]).collect();
    let mut y = vec![T::default(); x.len()];
    y.par_chunks_mut(hw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .for_each(|(p, (yp, xp))| {
            let ch = p % c;
            let (kk, sh) = (T::from_f64(k[ch]), T::from_f64(shift[ch]));
            for (o, &v) in yp.iter_mut().zip(xp) {
                *o = v * kk + sh;
            }
        });
    Ok((T::to_cpu_storage_owned(y), l1.shape().clone()))
}

#[allow(clippy::too_many_arguments)]
fn grad_params<T: Elem>(
    eps: f64,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    s3: &CpuStorage,
    l3: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (x, dy, st) = (
        contiguous::<T>(s1, l1)?,
        contiguous::<T>(s2, l2)?,
        contiguous::<T>(s3, l3)?,
    );
    let (n, c, hw) = nchw(l1);
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mean, inv) = (st[ch].to_f64(), 1.0 / (st[c + ch].to_f64() + eps).sqrt());
            let (mut ds, mut db) = (0f64, 0f64);
            for b in 0..n {
                let r = (b * c + ch) * hw..(b * c + ch + 1) * hw;
                for (&xv, &g) in x[r.clone()].iter().zip(&dy[r]) {
                    let g = g.to_f64();
                    db += g;
                    ds += g * (xv.to_f64() - mean) * inv;
                }
            }
            (ds, db)
        })
        .collect();
    let mut out: Vec<T> = sums.iter().map(|p| T::from_f64(p.0)).collect();
    out.extend(sums.iter().map(|p| T::from_f64(p.1)));
    Ok((T::to_cpu_storage_owned(out), Shape::from((2, c))))
}

#[allow(clippy::too_many_arguments)]
fn grad_input<T: Elem>(
    eps: f64,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    s3: &CpuStorage,
    l3: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (x, dy, p) = (
        contiguous::<T>(s1, l1)?,
        contiguous::<T>(s2, l2)?,
        contiguous::<T>(s3, l3)?,
    );
    let (n, c, hw) = nchw(l1);
    let m = (n * hw) as f64;
    let mut dx = vec![T::default(); x.len()];
    dx.par_chunks_mut(hw).enumerate().for_each(|(pi, out)| {
        let ch = pi % c;
        let (scale, ds, db, mean, var) = (
            p[ch].to_f64(),
            p[c + ch].to_f64(),
            p[2 * c + ch].to_f64(),
            p[3 * c + ch].to_f64(),
            p[4 * c + ch].to_f64(),
        );
        let inv = 1.0 / (var + eps).sqrt();
        let k = scale * inv / m;
        let r = pi * hw..(pi + 1) * hw;
        for ((o, &xv), &g) in out.iter_mut().zip(&x[r.clone()]).zip(&dy[r]) {
            let xhat = (xv.to_f64() - mean) * inv;
            *o = T::from_f64(k * (m * g.to_f64() - db - xhat * ds));
        }
    });
    Ok((T::to_cpu_storage_owned(dx), l1.shape().clone()))
}

impl CustomOp1 for ChannelStats {
    fn name(&self) -> &'static str {
        "sss-channel-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s, stats(s, l))
    }
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "sss-batchnorm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, forward(self.eps, s1, l1, s2, l2, s3, l3))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        _bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let x = x.contiguous()?;
        let dy = dy.contiguous()?;
        let st = x.apply_op1_no_bwd(&ChannelStats)?;
        let p = x.apply_op3_no_bwd(&dy, &st, &GradParams { eps: self.eps })?;
        let (ds, db) = (p.get(0)?, p.get(1)?);
        let packed = Tensor::stack(
            &[
                scale.flatten_all()?,
                ds.clone(),
                db.clone(),
                st.get(0)?,
                st.get(1)?,
            ],
            0,
        )?;
        let dx = x.apply_op3_no_bwd(&dy, &packed, &GradInput { eps: self.eps })?;
        Ok((
            Some(dx),
            Some(ds.reshape(scale.shape())?),
            Some(db.reshape(scale.shape())?),
        ))
    }
}

impl CustomOp3 for GradParams {
    fn name(&self) -> &'static str {
        "sss-batchnorm-grad-params"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, grad_params(self.eps, s1, l1, s2, l2, s3, l3))
    }
}

impl CustomOp3 for GradInput {
    fn name(&self) -> &'static str {
        "sss-batchnorm-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, grad_input(self.eps, s1, l1, s2, l2, s3, l3))
    }
}
