//! 2-D max pooling with arbitrary kernel, stride and padding, and the
//! correct gradient: each output's gradient goes, whole, to the input
//! position that won the max (the first one on ties, as PyTorch does).

use super::{contiguous, custom_op, Elem, Geometry};
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};

pub struct MaxPool(pub Geometry);
/// (input, output gradient) → input gradient.
struct MaxPoolGrad(Geometry);

/// The in-image taps of each output row or column: `(first, count)` of
/// the input positions `o·stride − pad + k·dilation`, k in 0..kernel.
fn taps(
    out: usize,
    size: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dil: usize,
) -> Vec<Vec<usize>> {
    (0..out)
        .map(|o| {
            (0..k)
                .filter_map(|t| {
                    let i = (o * stride + t * dil) as isize - pad as isize;
                    (i >= 0 && (i as usize) < size).then_some(i as usize)
                })
                .collect()
        })
        .collect()
}

/// The winning index of every output of one plane (`u32::MAX` for a
/// window wholly outside the image), the first one on ties, NaN winning.
/// The window starts from its first tap and the rest are chosen without
/// branches: a forward pass over every tap of a 224×224 stem's output.
fn winners<T: Elem>(
    g: &Geometry,
    rows: &[Vec<usize>],
    cols: &[Vec<usize>],
    xp: &[T],
    out: &mut [u32],
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(x) = T::as_f32(xp) {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F; rows hold in-image row indices.
            unsafe { avx512::winners(g, rows, x, out) };
            return;
        }
    }
    scalar_winners(g, rows, cols, xp, out)
}

/// [`winners`] one output at a time (any element type or CPU).
fn scalar_winners<T: Elem>(
    g: &Geometry,
    rows: &[Vec<usize>],
    cols: &[Vec<usize>],
    xp: &[T],
    out: &mut [u32],
) {
    for (oy, row) in rows.iter().enumerate() {
        let dst = &mut out[oy * g.ow..(oy + 1) * g.ow];
        let (Some(&first_row), false) = (row.first(), cols.is_empty()) else {
            dst.fill(u32::MAX);
            continue;
        };
        for (d, col) in dst.iter_mut().zip(cols) {
            let Some(&first_col) = col.first() else {
                *d = u32::MAX;
                continue;
            };
            let mut best = (first_row * g.w + first_col) as u32;
            let mut bv = xp[best as usize];
            for &iy in row {
                let line = &xp[iy * g.w..(iy + 1) * g.w];
                for &ix in col {
                    let v = line[ix];
                    // strictly greater, or the first NaN
                    let take = v > bv || (v.is_nan() && !bv.is_nan());
                    best = if take { (iy * g.w + ix) as u32 } else { best };
                    bv = if take { v } else { bv };
                }
            }
            *d = best;
        }
    }
}

/// 16 outputs of a row at a time, each tap a masked gather.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Geometry;
    use std::arch::x86_64::*;

    /// [`super::winners`] for f32: per lane the same choice (first valid
    /// tap, then strictly greater or the first NaN), in reading order. Taps
    /// are gathered, except at stride 2 (the ResNet stem's pool), where two
    /// masked loads and a permute pick the even inputs.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn winners(g: &Geometry, rows: &[Vec<usize>], x: &[f32], out: &mut [u32]) {
        let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let (w, ow) = (g.w as i32, g.ow);
        let width = _mm512_set1_epi32(w);
        let pairs = g.sw == 2 && g.dw == 1;
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        for (oy, row) in rows.iter().enumerate() {
            for ox in (0..ow).step_by(16) {
                let inside: __mmask16 = ((1u32 << (ow - ox).min(16)) - 1) as __mmask16;
                // input column of tap kx = 0 for each lane
                let col0 = _mm512_sub_epi32(
                    _mm512_mullo_epi32(
                        _mm512_add_epi32(lane, _mm512_set1_epi32(ox as i32)),
                        _mm512_set1_epi32(g.sw as i32),
                    ),
                    _mm512_set1_epi32(g.pw as i32),
                );
                let mut best = _mm512_set1_ps(f32::NEG_INFINITY);
                let mut index = _mm512_set1_epi32(-1);
                let mut seen: __mmask16 = 0;
                for &iy in row {
                    let line = _mm512_set1_epi32(iy as i32 * w);
                    for kx in 0..g.kw {
                        let col = _mm512_add_epi32(col0, _mm512_set1_epi32((kx * g.dw) as i32));
                        let valid = inside
                            & _mm512_cmpge_epi32_mask(col, _mm512_setzero_si512())
                            & _mm512_cmplt_epi32_mask(col, width);
                        let at = _mm512_add_epi32(line, col);
                        let v = if pairs {
                            // stride 2: the 32 inputs from this tap's first
                            // column, every other one (no gather)
                            let start = (2 * ox + kx) as isize - g.pw as isize;
                            let lo = (-start).clamp(0, 32) as u32;
                            let hi = (g.w as isize - start).clamp(0, 32) as u32;
                            let bits: u64 = if hi > lo {
                                ((1u64 << (hi - lo)) - 1) << lo
                            } else {
                                0
                            };
                            let p = x.as_ptr().wrapping_offset((iy * g.w) as isize + start);
                            let a = _mm512_maskz_loadu_ps(bits as __mmask16, p);
                            let b = _mm512_maskz_loadu_ps(
                                (bits >> 16) as __mmask16,
                                p.wrapping_add(16),
                            );
                            _mm512_permutex2var_ps(a, even, b)
                        } else {
                            _mm512_mask_i32gather_ps::<4>(best, valid, at, x.as_ptr())
                        };
                        let greater = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(valid, v, best);
                        let nan = _mm512_mask_cmp_ps_mask::<_CMP_UNORD_Q>(valid, v, v)
                            & !_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(best, best);
                        let take = greater | nan | (valid & !seen);
                        best = _mm512_mask_mov_ps(best, take, v);
                        index = _mm512_mask_mov_epi32(index, take, at);
                        seen |= valid;
                    }
                }
                _mm512_mask_storeu_epi32(
                    out.as_mut_ptr().add(oy * ow + ox) as *mut i32,
                    inside,
                    index,
                );
            }
        }
    }
}

/// Per plane in parallel: `f(plane, its input, its winners, its chunk of out)`.
fn per_plane<T: Elem, U: Send>(
    g: Geometry,
    x: &[T],
    out: &mut [U],
    chunk: usize,
    f: impl Fn(usize, &[T], &[u32], &mut [U]) + Sync,
) {
    use rayon::prelude::*;
    let rows = taps(g.oh, g.h, g.kh, g.sh, g.ph, g.dh);
    let cols = taps(g.ow, g.w, g.kw, g.sw, g.pw, g.dw);
    let plane = g.h * g.w;
    out.par_chunks_mut(chunk).enumerate().for_each_init(
        || vec![0u32; g.oh * g.ow],
        |win, (p, o)| {
            let xp = &x[p * plane..(p + 1) * plane];
            winners(&g, &rows, &cols, xp, win);
            f(p, xp, win, o);
        },
    );
}

fn forward<T: Elem>(g: Geometry, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = contiguous::<T>(s, l)?;
    let n = l.dims()[0];
    let oplane = g.oh * g.ow;
    let mut out = vec![T::neg_infinity(); n * g.c * oplane];
    per_plane(g, x, &mut out, oplane, |_, xp, win, o| {
        for (y, &i) in o.iter_mut().zip(win) {
            if i != u32::MAX {
                *y = xp[i as usize];
            }
        }
    });
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
    per_plane(g, x, &mut dx, plane, |p, _, win, d| {
        let dyp = &dy[p * oplane..(p + 1) * oplane];
        for (&i, &v) in win.iter().zip(dyp) {
            if i != u32::MAX {
                d[i as usize] += v;
            }
        }
    });
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
    /// Ties go to the first tap in reading order (a ReLU's zeros tie
    /// everywhere), NaN wins over any number, the first NaN over later ones.
    #[test]
    fn winners_take_the_first_tie_and_nan() {
        let g = Geometry::new(1, 4, 4, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1]);
        let rows = taps(g.oh, g.h, g.kh, g.sh, g.ph, g.dh);
        let cols = taps(g.ow, g.w, g.kw, g.sw, g.pw, g.dw);
        let mut win = vec![0u32; 4];
        let mut x = vec![1f32; 16];
        winners(&g, &rows, &cols, &x, &mut win);
        assert_eq!(win, [0, 1, 4, 5]);
        x[10] = 2.0;
        winners(&g, &rows, &cols, &x, &mut win);
        assert_eq!(win, [0, 1, 4, 10]);
        x[6] = f32::NAN;
        x[7] = f32::NAN;
        winners(&g, &rows, &cols, &x, &mut win);
        assert_eq!(win, [0, 6, 4, 6]);
    }

    /// The vector path against the scalar one on a stem-sized plane full of
    /// ties (values on a coarse grid) with a few NaNs, over the window
    /// shapes ResNets use and an odd one.
    #[test]
    fn vector_winners_match_the_scalar_ones() {
        for (h, k, s, p) in [
            (37, 3, 2, 1),
            (36, 3, 2, 1),
            (35, 2, 2, 0),
            (33, 3, 1, 1),
            (40, 5, 3, 2),
        ] {
            let g = Geometry::new(1, h, h, [k, k], [s, s], [p, p, p, p], [1, 1]);
            let rows = taps(g.oh, g.h, g.kh, g.sh, g.ph, g.dh);
            let cols = taps(g.ow, g.w, g.kw, g.sw, g.pw, g.dw);
            let mut x: Vec<f32> = (0..h * h).map(|i| ((i * 7919) % 5) as f32).collect();
            for i in (0..h * h).step_by(97) {
                x[i] = f32::NAN;
            }
            let (mut a, mut b) = (vec![0u32; g.oh * g.ow], vec![1u32; g.oh * g.ow]);
            winners(&g, &rows, &cols, &x, &mut a);
            scalar_winners(&g, &rows, &cols, &x, &mut b);
            assert_eq!(a, b, "{h} {k} {s} {p}");
        }
    }

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
