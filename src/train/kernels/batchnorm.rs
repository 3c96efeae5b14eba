//! Train-mode batch normalisation fused into custom ops: per-channel batch
//! statistics in one pass (computed once per step and shared by forward and
//! backward), the normalisation in another, and the closed-form backward
//!   db = Σ dy,  ds = Σ dy·x̂,  dx = s·σ⁻¹/M · (M·dy − db − x̂·ds).

use super::{contiguous, custom_op, nchw, par_build, sum_pairs, Elem};
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// x [N, C, H, W] → [2, C]: mean and biased variance per channel.
pub struct ChannelStats;

/// (x, p [4, C]: scale, bias, batch mean, batch variance) → y. The
/// statistics come from [`ChannelStats`] without gradient: the backward's
/// closed form already carries their dependence on x, and the gradient it
/// returns for `p` is zero in their rows.
pub struct BatchNormTrain {
    pub eps: f64,
}

/// (x, dy, p [4, C]) → [2, C]: ds and db.
struct GradParams {
    eps: f64,
}

/// (x, dy, q [5, C]: scale, ds, db, mean, var) → dx.
struct GradInput {
    eps: f64,
}

/// Σ over the N planes of channel `ch` of `f(plane of a, plane of b)`.
fn channel_total<T: Elem>(
    a: &[T],
    b: &[T],
    (n, c, hw): (usize, usize, usize),
    ch: usize,
    f: impl Fn(&[T], &[T]) -> f64,
) -> f64 {
    (0..n)
        .map(|i| {
            let r = (i * c + ch) * hw..(i * c + ch + 1) * hw;
            f(&a[r.clone()], &b[r])
        })
        .sum()
}

fn stats<T: Elem>(s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = contiguous::<T>(s, l)?;
    let dims = nchw(l);
    let (n, c, hw) = dims;
    let m = (n * hw) as f64;
    let st: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let sum = channel_total(x, x, dims, ch, |a, b| sum_pairs(a, b, |v, _| v));
            let sq = channel_total(x, x, dims, ch, |a, b| sum_pairs(a, b, |v, w| v * w));
            let mean = sum / m;
            (mean, (sq / m - mean * mean).max(0.0))
        })
        .collect();
    let mut out: Vec<T> = st.iter().map(|p| T::from_f64(p.0)).collect();
    out.extend(st.iter().map(|p| T::from_f64(p.1)));
    Ok((T::to_cpu_storage_owned(out), Shape::from((2, c))))
}

fn forward<T: Elem>(
    eps: f64,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (x, p) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
    let (_, c, hw) = nchw(l1);
    // y = x·k + shift per channel
    let (k, shift): (Vec<T>, Vec<T>) = (0..c)
        .map(|i| {
            let k = p[i].to_f64() / (p[3 * c + i].to_f64() + eps).sqrt();
            let shift = p[c + i].to_f64() - p[2 * c + i].to_f64() * k;
            (T::from_f64(k), T::from_f64(shift))
        })
        .unzip();
    let y = par_build(x.len(), hw, |plane| {
        let (kk, sh) = (k[plane % c], shift[plane % c]);
        x[plane * hw..(plane + 1) * hw]
            .iter()
            .map(move |&v| v * kk + sh)
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
    let (x, dy, p) = (
        contiguous::<T>(s1, l1)?,
        contiguous::<T>(s2, l2)?,
        contiguous::<T>(s3, l3)?,
    );
    let dims = nchw(l1);
    let c = dims.1;
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mean, inv) = (p[2 * c + ch], 1.0 / (p[3 * c + ch].to_f64() + eps).sqrt());
            let db = channel_total(dy, dy, dims, ch, |g, _| sum_pairs(g, g, |v, _| v));
            let ds = channel_total(dy, x, dims, ch, |g, xv| {
                sum_pairs(g, xv, |g, v| g * (v - mean))
            });
            (ds * inv, db)
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
    let (x, dy, q) = (
        contiguous::<T>(s1, l1)?,
        contiguous::<T>(s2, l2)?,
        contiguous::<T>(s3, l3)?,
    );
    let (n, c, hw) = nchw(l1);
    let m = (n * hw) as f64;
    // dx = k·(M·dy − db − x̂·ds) with x̂ = (x − mean)·inv, expanded to
    // a·dy + b·x + e per channel so the inner loop is two multiply-adds
    let coef: Vec<(T, T, T)> = (0..c)
        .map(|ch| {
            let (scale, ds, db, mean, var) = (
                q[ch].to_f64(),
                q[c + ch].to_f64(),
                q[2 * c + ch].to_f64(),
                q[3 * c + ch].to_f64(),
                q[4 * c + ch].to_f64(),
            );
            let inv = 1.0 / (var + eps).sqrt();
            let k = scale * inv / m;
            (
                T::from_f64(k * m),
                T::from_f64(-k * ds * inv),
                T::from_f64(k * (mean * inv * ds - db)),
            )
        })
        .collect();
    let dx = par_build(x.len(), hw, |plane| {
        let (a, b, e) = coef[plane % c];
        let r = plane * hw..(plane + 1) * hw;
        dy[r.clone()]
            .iter()
            .zip(&x[r])
            .map(move |(&g, &v)| a * g + b * v + e)
    });
    Ok((T::to_cpu_storage_owned(dx), l1.shape().clone()))
}

custom_op!(CustomOp1 for ChannelStats {
    name(&self) {
        "sss-channel-stats"
    }
    fwd(s: l) => stats(s, l);
});

custom_op!(CustomOp2 for BatchNormTrain {
    name(&self) {
        "sss-batchnorm-train"
    }
    fwd(s1: l1, s2: l2) => forward(self.eps, s1, l1, s2, l2);

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let x = x.contiguous()?;
        let dy = dy.contiguous()?;
        let p = p.contiguous()?;
        let g = x.apply_op3_no_bwd(&dy, &p, &GradParams { eps: self.eps })?;
        let (ds, db) = (g.get(0)?, g.get(1)?);
        let q = Tensor::stack(&[p.get(0)?, ds, db, p.get(2)?, p.get(3)?], 0)?;
        let dx = x.apply_op3_no_bwd(&dy, &q, &GradInput { eps: self.eps })?;
        // no gradient for the statistics rows (see the type's comment)
        let dp = Tensor::cat(&[g, p.narrow(0, 2, 2)?.zeros_like()?], 0)?;
        Ok((Some(dx), Some(dp)))
    }
});

custom_op!(CustomOp3 for GradParams {
    name(&self) {
        "sss-batchnorm-grad-params"
    }
    fwd(s1: l1, s2: l2, s3: l3) => grad_params(self.eps, s1, l1, s2, l2, s3, l3);
});

custom_op!(CustomOp3 for GradInput {
    name(&self) {
        "sss-batchnorm-grad-input"
    }
    fwd(s1: l1, s2: l2, s3: l3) => grad_input(self.eps, s1, l1, s2, l2, s3, l3);
});
