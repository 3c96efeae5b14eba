//! 2-D max pooling with arbitrary kernel, stride and padding, and the
//! correct gradient: each output's gradient goes, whole, to the input
//! position that won the max (the first one on ties, as PyTorch does).

use super::{contiguous, custom_op, Elem, Geometry};
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};

pub struct MaxPool(pub Geometry);
/// (input, output gradient) → input gradient.
struct MaxPoolGrad(Geometry);

/// Index (within the plane) of the winning input of output (oy, ox).
#[inline]
fn argmax<T: Elem>(g: &Geometry, x: &[T], oy: usize, ox: usize) -> Option<usize> {
    let mut best: Option<(usize, T)> = None;
    for ky in 0..g.kh {
        let Some(iy) = g.iy(oy, ky) else { continue };
        for kx in 0..g.kw {
            let Some(ix) = g.ix(ox, kx) else { continue };
            let v = x[iy * g.w + ix];
            if best.is_none_or(|(_, b)| v > b || v.is_nan()) {
                best = Some((iy * g.w + ix, v));
            }
        }
    }
    best.map(|(i, _)| i)
}

fn forward<T: Elem>(g: Geometry, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = contiguous::<T>(s, l)?;
    let n = l.dims()[0];
    let (plane, oplane) = (g.h * g.w, g.oh * g.ow);
    let mut out = vec![T::neg_infinity(); n * g.c * oplane];
    for p in 0..n * g.c {
        let xp = &x[p * plane..(p + 1) * plane];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                if let Some(i) = argmax(&g, xp, oy, ox) {
                    out[p * oplane + oy * g.ow + ox] = xp[i];
                }
            }
        }
    }
    Ok((
        T::to_cpu_storage_owned(out),
        Shape::from((n, g.c, g.oh, g.ow)),
    ))
}

fn backward<T: Elem>(
    g: Geometry,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (x, dy) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
    let n = l1.dims()[0];
    let (plane, oplane) = (g.h * g.w, g.oh * g.ow);
    let mut dx = vec![T::default(); n * g.c * plane];
    for p in 0..n * g.c {
        let xp = &x[p * plane..(p + 1) * plane];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                if let Some(i) = argmax(&g, xp, oy, ox) {
                    dx[p * plane + i] += dy[p * oplane + oy * g.ow + ox];
                }
            }
        }
    }
    Ok((T::to_cpu_storage_owned(dx), Shape::from((n, g.c, g.h, g.w))))
}

custom_op!(CustomOp1 for MaxPool {
    name(&self) {
        "sss-maxpool2d"
    }
    fwd(s: l) => forward(self.0, s, l);

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(
            &grad.contiguous()?,
            &MaxPoolGrad(self.0),
        )?))
    }
});

custom_op!(CustomOp2 for MaxPoolGrad {
    name(&self) {
        "sss-maxpool2d-grad"
    }
    fwd(s1: l1, s2: l2) => backward(self.0, s1, l1, s2, l2);
});

/// Max pooling from candle's own ops, for devices without the custom
/// kernel (CUDA): pad with the lowest finite value, take each of the
/// kh·kw strided views, fold them with `maximum`. Its gradient is
/// candle's `maximum` backward, which sends each output's gradient to one
/// winner like the CPU kernel (not candle's max_pool2d, which scales it by
/// 1/(k·k)). Dilation 1 only, as in ResNets.
pub fn max_pool_generic(x: &Tensor, g: &Geometry) -> Result<Tensor> {
    if g.dh != 1 || g.dw != 1 {
        candle_core::bail!("max-pool with dilation is not supported on this device");
    }
    let (n, c) = (x.dim(0)?, x.dim(1)?);
    // every strided view takes oh·sh rows from offset ky ≤ kh − 1
    let need_h = (g.kh - 1 + g.oh * g.sh).max(g.h + g.ph);
    let need_w = (g.kw - 1 + g.ow * g.sw).max(g.w + g.pw);
    let low = match x.dtype() {
        candle_core::DType::F64 => f64::MIN,
        _ => f32::MIN as f64,
    };
    let fill = |h: usize, w: usize| {
        Tensor::full(low, (n, c, h, w), x.device()).and_then(|t| t.to_dtype(x.dtype()))
    };
    let mut rows = vec![];
    if g.ph > 0 {
        rows.push(fill(g.ph, g.w)?);
    }
    rows.push(x.clone());
    if need_h > g.h + g.ph {
        rows.push(fill(need_h - g.h - g.ph, g.w)?);
    }
    let xp = Tensor::cat(&rows, 2)?;
    let mut cols = vec![];
    if g.pw > 0 {
        cols.push(fill(need_h, g.pw)?);
    }
    cols.push(xp);
    if need_w > g.w + g.pw {
        cols.push(fill(need_h, need_w - g.w - g.pw)?);
    }
    let xp = Tensor::cat(&cols, 3)?;
    let mut out: Option<Tensor> = None;
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            // rows ky, ky + sh, …: a window of oh·sh rows, reshaped so the
            // stride is its own axis, of which index 0 is kept
            let v = xp
                .narrow(2, ky, g.oh * g.sh)?
                .narrow(3, kx, g.ow * g.sw)?
                .reshape((n, c, g.oh, g.sh, g.ow, g.sw))?
                .narrow(3, 0, 1)?
                .narrow(5, 0, 1)?
                .reshape((n, c, g.oh, g.ow))?;
            out = Some(match out {
                Some(o) => o.maximum(&v)?,
                None => v,
            });
        }
    }
    out.ok_or_else(|| candle_core::Error::Msg("empty max-pool window".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// The generic (any-device) path against the CPU kernel: same values,
    /// same gradient, on windows with padding, stride and a ragged edge.
    #[test]
    fn generic_max_pool_matches_the_cpu_kernel() {
        for (h, k, s, p) in [(9, 3, 2, 1), (8, 3, 2, 1), (7, 2, 2, 0), (6, 3, 1, 1)] {
            let g = Geometry::new(2, h, h, [k, k], [s, s], [p, p, p, p], [1, 1]);
            let x = Tensor::randn(0f64, 1.0, (2, 2, h, h), &Device::Cpu).unwrap();
            let x = Var::from_tensor(&x).unwrap();
            let w = Tensor::randn(0f64, 1.0, (2, 2, g.oh, g.ow), &Device::Cpu).unwrap();
            let a = x.as_tensor().apply_op1(MaxPool(g)).unwrap();
            let b = max_pool_generic(x.as_tensor(), &g).unwrap();
            assert_eq!(a.dims(), b.dims());
            let d = (&a - &b).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(d.to_scalar::<f64>().unwrap(), 0.0, "{h} {k} {s} {p}");
            let ga = (a * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (b * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let (ga, gb) = (ga.get(&x).unwrap(), gb.get(&x).unwrap());
            let d = (ga - gb).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f64>().unwrap() < 1e-12, "{h} {k} {s} {p}");
            assert_eq!(ga.dtype(), DType::F64);
        }
    }
}
