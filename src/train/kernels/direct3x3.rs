//! Direct 3×3 convolution (stride 1, padding 1, one group) in f32 with
//! AVX2 + FMA: the shape of every conv inside a CIFAR/ImageNet basic block.
//! No column matrix: each image is copied once into a zero-bordered buffer
//! and the kernels read the nine taps straight from it, keeping a tile of
//! outputs in registers. On these shapes (16–64 channels) im2col + GEMM
//! spends as long writing, packing and re-reading columns as multiplying.
//!
//! The input gradient of such a conv is the same convolution of the output
//! gradient with the filters transposed (in/out) and flipped (taps), so one
//! forward kernel serves both; the filter gradient has its own kernel.
//! Other shapes, other element types and CPUs without AVX2/FMA use the
//! im2col path in `conv`.

use super::Geometry;
use std::mem::MaybeUninit;

/// Output channels per register tile.
const OT: usize = 4;
/// 8-pixel vectors per register tile: OT·PT accumulators, PT loads and the
/// broadcast stay inside the 16 AVX2 registers with room to schedule (PT 3
/// fills all 16 and the compiler spilled: 40 vs 55 GMAC/s on one core).
const PT: usize = 2;

/// Whether the direct kernels handle this convolution on this CPU.
pub fn applies(g: &Geometry, groups: usize) -> bool {
    let shape = groups == 1
        && (g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw) == (3, 3, 1, 1, 1, 1, 1, 1)
        && (g.oh, g.ow) == (g.h, g.w)
        && g.w.is_multiple_of(8);
    shape && cpu_has_avx2_fma()
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_avx2_fma() -> bool {
    false
}

/// Copies `c` planes of h×w into `out` as (h+2)×(w+2) planes with a zero
/// border. Writes every element (border zeros, interior copies), so a
/// reused buffer is not cleared first.
pub fn pad(x: &[f32], c: usize, h: usize, w: usize, out: &mut Vec<f32>) {
    let wp = w + 2;
    let plane = (h + 2) * wp;
    out.resize(c * plane, 0.0);
    for ci in 0..c {
        let p = &mut out[ci * plane..(ci + 1) * plane];
        p[..wp].fill(0.0);
        p[(h + 1) * wp..].fill(0.0);
        for y in 0..h {
            let row = &mut p[(y + 1) * wp..(y + 2) * wp];
            row[0] = 0.0;
            row[wp - 1] = 0.0;
            row[1..=w].copy_from_slice(&x[(ci * h + y) * w..(ci * h + y + 1) * w]);
        }
    }
}

/// Filters [cout, cin, 3, 3] rearranged for [`conv`]: blocks of OT output
/// channels, then input channel, tap, and the OT channels innermost (the
/// kernel broadcasts them one after another); missing channels are 0.
pub fn filters_forward(w: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    block(cout, cin, |o, c, t| w[(o * cin + c) * 9 + t])
}

/// The filters of the input-gradient convolution: output and input
/// channels swapped and the taps flipped, `w'[c][o][t] = w[o][c][8 − t]`.
pub fn filters_backward(w: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    block(cin, cout, |c, o, t| w[(o * cin + c) * 9 + (8 - t)])
}

fn block(out_ch: usize, in_ch: usize, w: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
    let blocks = out_ch.div_ceil(OT);
    let mut wt = vec![0f32; blocks * in_ch * 9 * OT];
    for b in 0..blocks {
        for c in 0..in_ch {
            for t in 0..9 {
                for k in 0..OT {
                    let o = b * OT + k;
                    if o < out_ch {
                        wt[((b * in_ch + c) * 9 + t) * OT + k] = w(o, c, t);
                    }
                }
            }
        }
    }
    wt
}

/// One image: `y` [cout, h, w] = the 3×3 convolution of the padded input
/// `xp` [cin, h+2, w+2] with blocked filters `wt` (from `filters_*`).
pub fn conv(xp: &[f32], cin: usize, h: usize, w: usize, wt: &[f32], cout: usize, y: &mut [f32]) {
    // SAFETY: initialised f32s viewed as possibly-uninitialised ones; the
    // kernel only writes (valid f32s) through the view.
    let y = unsafe { &mut *(y as *mut [f32] as *mut [MaybeUninit<f32>]) };
    conv_into(xp, cin, h, w, wt, cout, y);
}

/// [`conv`] into memory not yet initialised: every one of the cout·h·w
/// outputs is written (stored whole, never read), so the caller need not
/// zero a buffer the kernel overwrites anyway.
pub fn conv_into(
    xp: &[f32],
    cin: usize,
    h: usize,
    w: usize,
    wt: &[f32],
    cout: usize,
    y: &mut [MaybeUninit<f32>],
) {
    assert!(w.is_multiple_of(8) && xp.len() >= cin * (h + 2) * (w + 2));
    assert!(wt.len() >= cout.div_ceil(OT) * cin * 9 * OT && y.len() >= cout * h * w);
    assert!(cpu_has_avx2_fma());
    // SAFETY: the CPU has AVX2 and FMA (asserted) and the slices hold what
    // the kernel addresses (asserted above; see `avx2::conv`).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        avx2::conv(xp, cin, h, w, wt, cout, y.as_mut_ptr() as *mut f32)
    }
}

/// One image: `dw` [cout, cin, 3, 3] += the filter gradient from the
/// padded input `xp` [cin, h+2, w+2] and the output gradient `dy`
/// [cout, h, w].
pub fn grad_filter(
    xp: &[f32],
    cin: usize,
    h: usize,
    w: usize,
    dy: &[f32],
    cout: usize,
    dw: &mut [f32],
) {
    assert!(w.is_multiple_of(8) && xp.len() >= cin * (h + 2) * (w + 2));
    assert!(dy.len() >= cout * h * w && dw.len() >= cout * cin * 9);
    assert!(cpu_has_avx2_fma());
    // SAFETY: as in `conv`.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        avx2::grad_filter(xp, cin, h, w, dy, cout, dw)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{OT, PT};
    use std::arch::x86_64::*;

    /// Offset of tap t (ky·3 + kx) in a padded plane of row length wp.
    #[inline(always)]
    fn tap(t: usize, wp: usize) -> usize {
        (t / 3) * wp + t % 3
    }

    /// Output vector j (8 pixels) of a row-major h×w plane: its offset in
    /// the output and the offset of its top-left tap in the padded plane.
    #[inline(always)]
    fn vector(j: usize, w: usize) -> (usize, usize) {
        let per_row = w / 8;
        let (oy, v) = (j / per_row, j % per_row);
        (j * 8, oy * (w + 2) + v * 8)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn conv(
        xp: &[f32],
        cin: usize,
        h: usize,
        w: usize,
        wt: &[f32],
        cout: usize,
        y: *mut f32,
    ) {
        let vectors = h * w / 8;
        let full = vectors / PT * PT;
        for b in 0..cout.div_ceil(OT) {
            let wb = &wt[b * cin * 9 * OT..(b + 1) * cin * 9 * OT];
            let mut j = 0;
            while j < full {
                tile::<PT>(xp, cin, h, w, wb, b, cout, y, j);
                j += PT;
            }
            while j < vectors {
                tile::<1>(xp, cin, h, w, wb, b, cout, y, j);
                j += 1;
            }
        }
    }

    /// P output vectors starting at vector j, for the OT channels of block b.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn tile<const P: usize>(
        xp: &[f32],
        cin: usize,
        h: usize,
        w: usize,
        wb: &[f32],
        b: usize,
        cout: usize,
        y: *mut f32,
        j: usize,
    ) {
        let wp = w + 2;
        let plane = (h + 2) * wp;
        let mut at = [0usize; P];
        let mut out = [0usize; P];
        for p in 0..P {
            (out[p], at[p]) = vector(j + p, w);
        }
        let mut acc = [[_mm256_setzero_ps(); P]; OT];
        let (x0, w0) = (xp.as_ptr(), wb.as_ptr());
        for c in 0..cin {
            let xc = x0.add(c * plane);
            let wc = w0.add(c * 9 * OT);
            for t in 0..9 {
                let off = tap(t, wp);
                let mut xs = [_mm256_setzero_ps(); P];
                for p in 0..P {
                    xs[p] = _mm256_loadu_ps(xc.add(at[p] + off));
                }
                for (k, row) in acc.iter_mut().enumerate() {
                    let wv = _mm256_broadcast_ss(&*wc.add(t * OT + k));
                    for p in 0..P {
                        row[p] = _mm256_fmadd_ps(wv, xs[p], row[p]);
                    }
                }
            }
        }
        let hw = h * w;
        for (k, row) in acc.iter().enumerate() {
            let o = b * OT + k;
            if o < cout {
                for p in 0..P {
                    _mm256_storeu_ps(y.add(o * hw + out[p]), row[p]);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn grad_filter(
        xp: &[f32],
        cin: usize,
        h: usize,
        w: usize,
        dy: &[f32],
        cout: usize,
        dw: &mut [f32],
    ) {
        // groups of three output channels share each input load
        let mut o = 0;
        while o + 3 <= cout {
            filter_rows::<3>(xp, cin, h, w, dy, o, dw);
            o += 3;
        }
        while o < cout {
            filter_rows::<1>(xp, cin, h, w, dy, o, dw);
            o += 1;
        }
    }

    /// dw for output channels o0..o0+O, one kernel row at a time: O×3
    /// accumulators, and per 8 pixels O output-gradient loads and three
    /// input loads for 3·O multiply-adds.
    // indices name the register tile's rows and columns more plainly here
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn filter_rows<const O: usize>(
        xp: &[f32],
        cin: usize,
        h: usize,
        w: usize,
        dy: &[f32],
        o0: usize,
        dw: &mut [f32],
    ) {
        let wp = w + 2;
        let plane = (h + 2) * wp;
        let hw = h * w;
        for c in 0..cin {
            let xc = xp.as_ptr().add(c * plane);
            for ky in 0..3 {
                let mut acc = [[_mm256_setzero_ps(); 3]; O];
                for oy in 0..h {
                    let row = xc.add((oy + ky) * wp);
                    for v in (0..w).step_by(8) {
                        let mut ds = [_mm256_setzero_ps(); O];
                        for (k, d) in ds.iter_mut().enumerate() {
                            *d = _mm256_loadu_ps(dy.as_ptr().add((o0 + k) * hw + oy * w + v));
                        }
                        for kx in 0..3 {
                            let xv = _mm256_loadu_ps(row.add(v + kx));
                            for k in 0..O {
                                acc[k][kx] = _mm256_fmadd_ps(ds[k], xv, acc[k][kx]);
                            }
                        }
                    }
                }
                for (k, a) in acc.iter().enumerate() {
                    let at = ((o0 + k) * cin + c) * 9 + ky * 3;
                    for kx in 0..3 {
                        dw[at + kx] += hsum(a[kx]);
                    }
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The definition, in f64: y[o][i][j] = Σ w[o][c][ky][kx]·x[c][i+ky−1][j+kx−1].
    fn reference(x: &[f32], w: &[f32], cin: usize, cout: usize, h: usize, wd: usize) -> Vec<f64> {
        let mut y = vec![0f64; cout * h * wd];
        for o in 0..cout {
            for i in 0..h {
                for j in 0..wd {
                    let mut s = 0f64;
                    for c in 0..cin {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (yy, xx) =
                                    (i as isize + ky as isize - 1, j as isize + kx as isize - 1);
                                if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < wd {
                                    s += w[((o * cin + c) * 3 + ky) * 3 + kx] as f64
                                        * x[(c * h + yy as usize) * wd + xx as usize] as f64;
                                }
                            }
                        }
                    }
                    y[(o * h + i) * wd + j] = s;
                }
            }
        }
        y
    }

    fn close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (&g, &r)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - r).abs() <= 1e-4 * (1.0 + r.abs()),
                "{what}[{i}]: {g} vs {r}"
            );
        }
    }

    /// Forward, input gradient and filter gradient against the definition,
    /// over channel counts that leave partial register tiles (cout 6 of
    /// blocks of 4; 3×8 = 3 vectors of tiles of 2; output channels in
    /// threes and one for the filter gradient) and the 3-channel stem.
    #[test]
    fn direct_kernels_match_the_definition() {
        if !cpu_has_avx2_fma() {
            eprintln!("no AVX2/FMA on this CPU: the direct kernels are not used here");
            return;
        }
        for &(cin, cout, h, wd) in &[
            (4, 5, 3, 8),
            (3, 16, 8, 8),
            (5, 6, 16, 8),
            (16, 16, 32, 32),
            (8, 4, 8, 24),
        ] {
            let x = values(cin * h * wd, 1);
            let w = values(cout * cin * 9, 2);
            let dy = values(cout * h * wd, 3);
            let mut xp = Vec::new();
            pad(&x, cin, h, wd, &mut xp);
            // a reused buffer holding other values pads to the same
            let mut reused = vec![7.0f32; xp.len() + 5];
            pad(&x, cin, h, wd, &mut reused);
            assert_eq!(reused, xp);

            let mut y = vec![0f32; cout * h * wd];
            conv(
                &xp,
                cin,
                h,
                wd,
                &filters_forward(&w, cout, cin),
                cout,
                &mut y,
            );
            close(&y, &reference(&x, &w, cin, cout, h, wd), "y");

            // dx = Σ_o w[o][c]ᵀ ⋆ dy: the definition with the transposed, flipped filters
            let mut wflip = vec![0f32; cin * cout * 9];
            for o in 0..cout {
                for c in 0..cin {
                    for t in 0..9 {
                        wflip[(c * cout + o) * 9 + 8 - t] = w[(o * cin + c) * 9 + t];
                    }
                }
            }
            let mut dyp = Vec::new();
            pad(&dy, cout, h, wd, &mut dyp);
            let mut dx = vec![0f32; cin * h * wd];
            conv(
                &dyp,
                cout,
                h,
                wd,
                &filters_backward(&w, cout, cin),
                cin,
                &mut dx,
            );
            close(&dx, &reference(&dy, &wflip, cout, cin, h, wd), "dx");

            // dw[o][c][t] = Σ_pixels dy[o]·x[c] shifted by the tap, accumulated onto 1
            let mut dw = vec![1f32; cout * cin * 9];
            grad_filter(&xp, cin, h, wd, &dy, cout, &mut dw);
            let mut want = vec![1f64; cout * cin * 9];
            for o in 0..cout {
                for c in 0..cin {
                    for t in 0..9 {
                        let (ky, kx) = (t / 3, t % 3);
                        for i in 0..h {
                            for j in 0..wd {
                                let (yy, xx) =
                                    (i as isize + ky as isize - 1, j as isize + kx as isize - 1);
                                if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < wd {
                                    want[(o * cin + c) * 9 + t] += dy[(o * h + i) * wd + j] as f64
                                        * x[(c * h + yy as usize) * wd + xx as usize] as f64;
                                }
                            }
                        }
                    }
                }
            }
            close(&dw, &want, "dw");
        }
    }
}
