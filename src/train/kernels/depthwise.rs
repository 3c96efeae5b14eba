//! Depthwise convolution (one filter per channel: MobileNet's and
//! EfficientNet's k×k convs, any kernel, stride, padding and dilation):
//! every (image, channel) plane on its own, rows of outputs as
//! multiply-adds over contiguous input rows, which the compiler vectorises
//! for the widest instructions the CPU has (chosen at run time). The
//! generic path ran them as one 1-channel GEMM per group.

use super::Geometry;
use rayon::prelude::*;

/// The output columns `ox` whose input column `ox·s + k·d − p` lies in
/// `[0, w)`.
fn columns(g: &Geometry, kx: usize) -> (usize, usize) {
    let off = (kx * g.dw) as isize - g.pw as isize;
    let s = g.sw as isize;
    // smallest ox with ox·s + off ≥ 0
    let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
    // largest ox with ox·s + off ≤ w − 1, plus one
    let last = g.w as isize - 1 - off;
    let hi = if last < 0 { 0 } else { last / s + 1 };
    (
        lo.max(0) as usize,
        (hi as usize).min(g.ow).max(lo.max(0) as usize),
    )
}

/// The input row of output row `oy` and kernel row `ky`, if inside.
fn input_row(g: &Geometry, oy: usize, ky: usize) -> Option<usize> {
    let iy = (oy * g.sh + ky * g.dh) as isize - g.ph as isize;
    (iy >= 0 && (iy as usize) < g.h).then_some(iy as usize)
}

#[inline(always)]
fn forward_plane(g: &Geometry, x: &[f32], w: &[f32], y: &mut [f32]) {
    y.fill(0.0);
    for oy in 0..g.oh {
        let yr = &mut y[oy * g.ow..(oy + 1) * g.ow];
        for ky in 0..g.kh {
            let Some(iy) = input_row(g, oy, ky) else {
                continue;
            };
            let xr = &x[iy * g.w..(iy + 1) * g.w];
            for kx in 0..g.kw {
                let wv = w[ky * g.kw + kx];
                let (lo, hi) = columns(g, kx);
                if lo >= hi {
                    continue;
                }
                let first = lo * g.sw + kx * g.dw - g.pw;
                if g.sw == 1 {
                    let src = &xr[first..first + (hi - lo)];
                    for (o, &v) in yr[lo..hi].iter_mut().zip(src) {
                        *o += wv * v;
                    }
                } else {
                    for (j, o) in yr[lo..hi].iter_mut().enumerate() {
                        *o += wv * xr[first + j * g.sw];
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn grad_input_plane(g: &Geometry, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    dx.fill(0.0);
    for oy in 0..g.oh {
        let dyr = &dy[oy * g.ow..(oy + 1) * g.ow];
        for ky in 0..g.kh {
            let Some(iy) = input_row(g, oy, ky) else {
                continue;
            };
            let dxr = &mut dx[iy * g.w..(iy + 1) * g.w];
            for kx in 0..g.kw {
                let wv = w[ky * g.kw + kx];
                let (lo, hi) = columns(g, kx);
                if lo >= hi {
                    continue;
                }
                let first = lo * g.sw + kx * g.dw - g.pw;
                if g.sw == 1 {
                    let dst = &mut dxr[first..first + (hi - lo)];
                    for (o, &v) in dst.iter_mut().zip(&dyr[lo..hi]) {
                        *o += wv * v;
                    }
                } else {
                    for (j, &v) in dyr[lo..hi].iter().enumerate() {
                        dxr[first + j * g.sw] += wv * v;
                    }
                }
            }
        }
    }
}

/// Σ a[i]·b[i] in eight independent lanes (a reduction the compiler can
/// vectorise without reassociating).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Adds one plane's filter gradient to `dw` (kh·kw values).
#[inline(always)]
fn grad_filter_plane(g: &Geometry, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let mut row = Vec::new();
    for oy in 0..g.oh {
        let dyr = &dy[oy * g.ow..(oy + 1) * g.ow];
        for ky in 0..g.kh {
            let Some(iy) = input_row(g, oy, ky) else {
                continue;
            };
            let xr = &x[iy * g.w..(iy + 1) * g.w];
            for kx in 0..g.kw {
                let (lo, hi) = columns(g, kx);
                if lo >= hi {
                    continue;
                }
                let first = lo * g.sw + kx * g.dw - g.pw;
                let v = if g.sw == 1 {
                    dot(&xr[first..first + (hi - lo)], &dyr[lo..hi])
                } else {
                    row.clear();
                    row.extend((0..hi - lo).map(|j| xr[first + j * g.sw]));
                    dot(&row, &dyr[lo..hi])
                };
                dw[ky * g.kw + kx] += v;
            }
        }
    }
}

/// A plane function: (geometry, first operand, second operand, output).
type PlaneFn = fn(&Geometry, &[f32], &[f32], &mut [f32]);

/// `$plane` compiled for the widest vectors the CPU has, chosen once per
/// call.
macro_rules! best {
    ($plane:ident) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            unsafe fn wide(g: &Geometry, a: &[f32], b: &[f32], o: &mut [f32]) {
                $plane(g, a, b, o)
            }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn mid(g: &Geometry, a: &[f32], b: &[f32], o: &mut [f32]) {
                $plane(g, a, b, o)
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F (checked above)
                (|g: &Geometry, a: &[f32], b: &[f32], o: &mut [f32]| unsafe { wide(g, a, b, o) })
                    as PlaneFn
            } else if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has AVX2 and FMA (checked above)
                (|g: &Geometry, a: &[f32], b: &[f32], o: &mut [f32]| unsafe { mid(g, a, b, o) })
                    as PlaneFn
            } else {
                $plane as PlaneFn
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $plane as PlaneFn
        }
    }};
}

/// Planes a parallel task takes: enough outputs that small planes (4×4 at
/// the end of a MobileNet) do not drown in scheduling.
fn planes_per_task(plane: usize) -> usize {
    (16384 / plane.max(1)).max(1)
}

/// Whether a conv of this geometry is depthwise with one filter per
/// channel, the shape these kernels take.
pub fn applies(g: &Geometry, groups: usize, cout: usize) -> bool {
    groups > 1 && groups == g.c && cout == g.c
}

/// Runs `f` on every (image, channel) plane: `src` planes of `src_len`
/// values with their channel's filter into `out` planes of `out_len`.
fn per_plane(
    f: PlaneFn,
    g: &Geometry,
    src: &[f32],
    w: &[f32],
    n: usize,
    (src_len, out_len): (usize, usize),
) -> Vec<f32> {
    let k = g.kh * g.kw;
    let per = planes_per_task(out_len);
    let mut out = vec![0f32; n * g.c * out_len];
    out.par_chunks_mut(out_len * per)
        .enumerate()
        .for_each(|(t, planes)| {
            for (j, o) in planes.chunks_mut(out_len).enumerate() {
                let p = t * per + j;
                let c = p % g.c;
                f(
                    g,
                    &src[p * src_len..(p + 1) * src_len],
                    &w[c * k..(c + 1) * k],
                    o,
                );
            }
        });
    out
}

/// y = depthwise(x, w): x [n, c, h, w], w [c, 1, kh, kw].
pub fn forward(g: &Geometry, x: &[f32], w: &[f32], n: usize) -> Vec<f32> {
    let planes = (g.h * g.w, g.oh * g.ow);
    per_plane(best!(forward_plane), g, x, w, n, planes)
}

/// The input gradient from the output gradient `dy` [n, c, oh, ow].
pub fn grad_input(g: &Geometry, dy: &[f32], w: &[f32], n: usize) -> Vec<f32> {
    let planes = (g.oh * g.ow, g.h * g.w);
    per_plane(best!(grad_input_plane), g, dy, w, n, planes)
}

/// The filter gradient [c, 1, kh, kw]: each channel's sum over the images.
pub fn grad_filter(g: &Geometry, x: &[f32], dy: &[f32], n: usize) -> Vec<f32> {
    let (plane_in, plane_out, k) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let f = best!(grad_filter_plane);
    let per = planes_per_task(plane_out * n);
    let mut dw = vec![0f32; g.c * k];
    dw.par_chunks_mut(k * per).enumerate().for_each(|(t, dws)| {
        for (j, dwc) in dws.chunks_mut(k).enumerate() {
            let c = t * per + j;
            for i in 0..n {
                let p = i * g.c + c;
                f(
                    g,
                    &x[p * plane_in..(p + 1) * plane_in],
                    &dy[p * plane_out..(p + 1) * plane_out],
                    dwc,
                );
            }
        }
    });
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, one output at a time, in f64.
    fn reference(g: &Geometry, x: &[f32], w: &[f32], n: usize) -> Vec<f64> {
        let mut y = vec![0f64; n * g.c * g.oh * g.ow];
        for i in 0..n {
            for c in 0..g.c {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut s = 0f64;
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let iy = (oy * g.sh + ky * g.dh) as isize - g.ph as isize;
                                let ix = (ox * g.sw + kx * g.dw) as isize - g.pw as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xv = x[((i * g.c + c) * g.h + iy as usize) * g.w + ix as usize];
                                s += xv as f64 * w[(c * g.kh + ky) * g.kw + kx] as f64;
                            }
                        }
                        y[((i * g.c + c) * g.oh + oy) * g.ow + ox] = s;
                    }
                }
            }
        }
        y
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 16777216.0
                    - 0.5
            })
            .collect()
    }

    #[test]
    fn forward_matches_the_definition_for_kernels_strides_and_padding() {
        for &(k, s, p, side) in &[
            (3, 1, 1, 9),
            (3, 2, 1, 9),
            (5, 1, 2, 11),
            (5, 2, 2, 10),
            (7, 1, 3, 14),
            (3, 2, 0, 8),
        ] {
            let g = Geometry::new(5, side, side + 1, [k, k], [s, s], [p, p, p, p], [1, 1]);
            let (n, c) = (2, 5);
            let x = values(n * c * side * (side + 1), 1);
            let w = values(c * k * k, 7);
            let y = forward(&g, &x, &w, n);
            let r = reference(&g, &x, &w, n);
            let worst = y
                .iter()
                .zip(&r)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0.0, f64::max);
            assert!(worst < 1e-5, "k{k} s{s} p{p}: {worst}");
        }
    }

    #[test]
    fn gradients_are_the_adjoints_of_the_forward() {
        // ⟨depthwise(x, w), r⟩ = ⟨x, grad_input(r, w)⟩ = ⟨w, grad_filter(x, r)⟩
        for &(k, s, p, side) in &[(3, 1, 1, 9), (3, 2, 1, 9), (5, 2, 2, 10), (7, 1, 3, 12)] {
            let g = Geometry::new(4, side, side, [k, k], [s, s], [p, p, p, p], [1, 1]);
            let n = 3;
            let x = values(n * 4 * side * side, 3);
            let w = values(4 * k * k, 5);
            let r = values(n * 4 * g.oh * g.ow, 11);
            let ip = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(u, v)| *u as f64 * *v as f64)
                    .sum::<f64>()
            };
            let y = forward(&g, &x, &w, n);
            let lhs = ip(&y, &r);
            let via_x = ip(&x, &grad_input(&g, &r, &w, n));
            let via_w = ip(&w, &grad_filter(&g, &x, &r, n));
            assert!(
                (lhs - via_x).abs() < 1e-3 * (1.0 + lhs.abs()),
                "k{k} s{s}: {lhs} vs {via_x}"
            );
            assert!(
                (lhs - via_w).abs() < 1e-3 * (1.0 + lhs.abs()),
                "k{k} s{s}: {lhs} vs {via_w}"
            );
        }
    }
}
