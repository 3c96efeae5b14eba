//! im2col / col2im: a convolution becomes one batched matrix product
//! (weights [Cout, C·kh·kw] × columns [C·kh·kw, OH·OW]), and its input
//! gradient a matrix product followed by col2im (a scatter-add), both far
//! cheaper than candle's conv-transpose path on CPU.

use super::{contiguous, dispatch, Elem, Geometry};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// [N, C, H, W] → [N, C·kh·kw, OH·OW].
pub struct Im2Col(pub Geometry);
/// [N, C·kh·kw, OH·OW] → [N, C, H, W] (adds overlapping contributions).
pub struct Col2Im(pub Geometry);

fn im2col<T: Elem>(g: Geometry, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = contiguous::<T>(s, l)?;
    let n = l.dims()[0];
    let (k, ll) = (g.c * g.kh * g.kw, g.oh * g.ow);
    let plane = g.h * g.w;
    let mut out = vec![T::default(); n * k * ll];
    for (b, o) in out.chunks_mut(k * ll).enumerate() {
        let xb = &x[b * g.c * plane..(b + 1) * g.c * plane];
        for c in 0..g.c {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let row = ((c * g.kh + ky) * g.kw + kx) * ll;
                    for oy in 0..g.oh {
                        let Some(iy) = g.iy(oy, ky) else { continue };
                        let src = &xb[c * plane + iy * g.w..c * plane + (iy + 1) * g.w];
                        let dst = &mut o[row + oy * g.ow..row + (oy + 1) * g.ow];
                        for (ox, d) in dst.iter_mut().enumerate() {
                            if let Some(ix) = g.ix(ox, kx) {
                                *d = src[ix];
                            }
                        }
                    }
                }
            }
        }
    }
    Ok((T::to_cpu_storage_owned(out), Shape::from((n, k, ll))))
}

fn col2im<T: Elem>(g: Geometry, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let cols = contiguous::<T>(s, l)?;
    let n = l.dims()[0];
    let (k, ll) = (g.c * g.kh * g.kw, g.oh * g.ow);
    let plane = g.h * g.w;
    let mut out = vec![T::default(); n * g.c * plane];
    for (b, xb) in out.chunks_mut(g.c * plane).enumerate() {
        let o = &cols[b * k * ll..(b + 1) * k * ll];
        for c in 0..g.c {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let row = ((c * g.kh + ky) * g.kw + kx) * ll;
                    for oy in 0..g.oh {
                        let Some(iy) = g.iy(oy, ky) else { continue };
                        let src = &o[row + oy * g.ow..row + (oy + 1) * g.ow];
                        let dst = &mut xb[c * plane + iy * g.w..c * plane + (iy + 1) * g.w];
                        for (ox, &v) in src.iter().enumerate() {
                            if let Some(ix) = g.ix(ox, kx) {
                                dst[ix] += v;
                            }
                        }
                    }
                }
            }
        }
    }
    Ok((T::to_cpu_storage_owned(out), Shape::from((n, g.c, g.h, g.w))))
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "sss-im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s, im2col(self.0, s, l))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Col2Im(self.0))?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "sss-col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s, col2im(self.0, s, l))
    }
}
