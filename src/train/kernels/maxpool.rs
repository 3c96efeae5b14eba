//! 2-D max pooling with arbitrary kernel, stride and padding, and the
//! correct gradient: each output's gradient goes, whole, to the input
//! position that won the max (the first one on ties, as PyTorch does).

use super::{contiguous, dispatch, Elem, Geometry};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

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

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "sss-maxpool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s, forward(self.0, s, l))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(
            &grad.contiguous()?,
            &MaxPoolGrad(self.0),
        )?))
    }
}

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "sss-maxpool2d-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, backward(self.0, s1, l1, s2, l2))
    }
}
