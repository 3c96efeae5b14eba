//! Direct 3×3 convolution (padding 1, stride 1 or 2, one group) in f32 with
//! AVX2 + FMA: the shape of every conv inside a CIFAR/ImageNet basic block
//! and of the stage-opening ones. No column matrix: each image is copied
//! once into a zero-bordered buffer (for stride 2 with its even and odd
//! columns split into two planes, so every tap is a contiguous load) and
//! the kernels read the nine taps straight from it, keeping a tile of
//! outputs in registers. On these shapes (16–64 channels) im2col + GEMM
//! spends as long writing, packing and re-reading columns as multiplying.
//!
//! The input gradient of a stride-1 conv is the same convolution of the
//! output gradient with the filters transposed (in/out) and flipped (taps),
//! so one forward kernel serves both; the filter gradient has its own
//! kernel. Stride-2 input gradients, other shapes, other element types and
//! CPUs without AVX2/FMA use the im2col path in `conv`.

use super::Geometry;
use std::mem::MaybeUninit;

/// Output channels per register tile.
const OT: usize = 4;
/// 8-pixel vectors per register tile: OT·PT accumulators, PT loads and the
/// broadcast stay inside the 16 AVX2 registers with room to schedule (PT 3
/// fills all 16 and the compiler spilled: 40 vs 55 GMAC/s on one core).
const PT: usize = 2;

/// Where the kernels find things in a padded image: the input's h×w, the
/// output's oh×ow, the stride, and the offsets the padded layout gives.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub h: usize,
    pub w: usize,
    pub stride: usize,
    pub oh: usize,
    pub ow: usize,
    /// Padded row length: w + 2, or (w + 2)/2 per column-parity plane.
    row: usize,
    /// Elements per input channel in the padded buffer.
    channel: usize,
    /// Input offset between consecutive output rows.
    out_row: usize,
    /// Input offset of each tap (ky·3 + kx) from an output pixel's origin.
    taps: [usize; 9],
}

impl Plan {
    /// The plan for a conv geometry, if the direct kernels handle it (on
    /// any CPU; [`plan_for`] adds the CPU check).
    pub fn new(g: &Geometry) -> Option<Plan> {
        let common = (g.kh, g.kw, g.ph, g.pw, g.dh, g.dw) == (3, 3, 1, 1, 1, 1)
            && g.sh == g.sw
            && g.ow.is_multiple_of(8)
            && g.ow > 0;
        if !common {
            return None;
        }
        let (h, w) = (g.h, g.w);
        match g.sh {
            1 if (g.oh, g.ow) == (h, w) => {
                let row = w + 2;
                let taps = std::array::from_fn(|t| (t / 3) * row + t % 3);
                Some(Plan {
                    h,
                    w,
                    stride: 1,
                    oh: h,
                    ow: w,
                    row,
                    channel: (h + 2) * row,
                    out_row: row,
                    taps,
                })
            }
            2 if h.is_multiple_of(2) && w.is_multiple_of(2) && (g.oh, g.ow) == (h / 2, w / 2) => {
                // even padded columns, then odd ones: tap kx = 0, 1, 2 reads
                // column 2·ox + kx = even ox, odd ox, even ox + 1
                let row = (w + 2) / 2;
                let plane = (h + 2) * row;
                let taps = std::array::from_fn(|t| {
                    let (ky, kx) = (t / 3, t % 3);
                    ky * row + if kx == 1 { plane } else { kx / 2 }
                });
                Some(Plan {
                    h,
                    w,
                    stride: 2,
                    oh: h / 2,
                    ow: w / 2,
                    row,
                    channel: 2 * plane,
                    out_row: 2 * row,
                    taps,
                })
            }
            _ => None,
        }
    }

    /// Output vector j (8 pixels): its offset in the output plane and the
    /// input offset of its top-left tap within a channel.
    #[inline(always)]
    fn vector(&self, j: usize) -> (usize, usize) {
        let per_row = self.ow / 8;
        let (oy, v) = (j / per_row, j % per_row);
        (j * 8, oy * self.out_row + v * 8)
    }

    /// Padded buffer length for c channels.
    pub fn padded_len(&self, c: usize) -> usize {
        c * self.channel
    }
}

/// The plan when the direct kernels compute this convolution's output and
/// filter gradient on this CPU.
pub fn plan_for(g: &Geometry, groups: usize) -> Option<Plan> {
    if groups == 1 && cpu_has_avx2_fma() {
        Plan::new(g)
    } else {
        None
    }
}

/// The plan when they also compute its input gradient (stride 1 only).
pub fn plan_for_input_grad(g: &Geometry, groups: usize) -> Option<Plan> {
    plan_for(g, groups).filter(|p| p.stride == 1)
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_avx2_fma() -> bool {
    false
}

/// Copies `c` planes of h×w into `out` in the plan's padded layout (zero
/// border; for stride 2 the even and odd padded columns as two planes).
/// Writes every element, so a reused buffer is not cleared first.
pub fn pad(plan: &Plan, x: &[f32], c: usize, out: &mut Vec<f32>) {
    let (h, w) = (plan.h, plan.w);
    out.resize(plan.padded_len(c), 0.0);
    for ci in 0..c {
        let p = &mut out[ci * plan.channel..(ci + 1) * plan.channel];
        let src = |y: usize| &x[(ci * h + y) * w..(ci * h + y + 1) * w];
        if plan.stride == 1 {
            let wp = plan.row;
            p[..wp].fill(0.0);
            p[(h + 1) * wp..].fill(0.0);
            for y in 0..h {
                let row = &mut p[(y + 1) * wp..(y + 2) * wp];
                row[0] = 0.0;
                row[wp - 1] = 0.0;
                row[1..=w].copy_from_slice(src(y));
            }
        } else {
            // padded column j = input column j − 1 (w is even): the even
            // plane holds j = 0, 2, …, w → [0, x1, x3, …, x(w−1)], the odd one
            // j = 1, 3, …, w + 1 → [x0, x2, …, x(w−2), 0]
            let (r, plane) = (plan.row, (h + 2) * plan.row);
            let (even, odd) = p.split_at_mut(plane);
            for half in [&mut *even, &mut *odd] {
                half[..r].fill(0.0);
                half[(h + 1) * r..].fill(0.0);
            }
            for y in 0..h {
                let s = src(y);
                let e = &mut even[(y + 1) * r..(y + 2) * r];
                let o = &mut odd[(y + 1) * r..(y + 2) * r];
                e[0] = 0.0;
                o[r - 1] = 0.0;
                for (i, pair) in s.chunks_exact(2).enumerate() {
                    o[i] = pair[0];
                    e[i + 1] = pair[1];
                }
            }
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

/// One image: `y` [cout, oh, ow] = the convolution of the padded input
/// `xp` (from [`pad`], cin channels) with blocked filters `wt` (from
/// `filters_*`).
pub fn conv(plan: &Plan, xp: &[f32], cin: usize, wt: &[f32], cout: usize, y: &mut [f32]) {
    // SAFETY: initialised f32s viewed as possibly-uninitialised ones; the
    // kernel only writes (valid f32s) through the view.
    let y = unsafe { &mut *(y as *mut [f32] as *mut [MaybeUninit<f32>]) };
    conv_into(plan, xp, cin, wt, cout, y);
}

/// [`conv`] into memory not yet initialised: every one of the cout·oh·ow
/// outputs is written (stored whole, never read), so the caller need not
/// zero a buffer the kernel overwrites anyway.
pub fn conv_into(
    plan: &Plan,
    xp: &[f32],
    cin: usize,
    wt: &[f32],
    cout: usize,
    y: &mut [MaybeUninit<f32>],
) {
    assert!(xp.len() >= plan.padded_len(cin));
    assert!(wt.len() >= cout.div_ceil(OT) * cin * 9 * OT && y.len() >= cout * plan.oh * plan.ow);
    assert!(cpu_has_avx2_fma());
    // SAFETY: the CPU has AVX2 and FMA (asserted) and the slices hold what
    // the kernel addresses: every load is inside the padded channel it
    // starts in (the plan's largest vector origin + tap + 8 stays within
    // `channel`), every store inside cout·oh·ow.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        avx2::conv(plan, xp, cin, wt, cout, y.as_mut_ptr() as *mut f32)
    }
}

/// One image: `dw` [cout, cin, 3, 3] += the filter gradient from the
/// padded input `xp` (from [`pad`]) and the output gradient `dy`
/// [cout, oh, ow].
pub fn grad_filter(plan: &Plan, xp: &[f32], cin: usize, dy: &[f32], cout: usize, dw: &mut [f32]) {
    assert!(xp.len() >= plan.padded_len(cin));
    assert!(dy.len() >= cout * plan.oh * plan.ow && dw.len() >= cout * cin * 9);
    assert!(cpu_has_avx2_fma());
    // SAFETY: as in `conv_into`.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        avx2::grad_filter(plan, xp, cin, dy, cout, dw)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Plan, OT, PT};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn conv(
        plan: &Plan,
        xp: &[f32],
        cin: usize,
        wt: &[f32],
        cout: usize,
        y: *mut f32,
    ) {
        let vectors = plan.oh * plan.ow / 8;
        let full = vectors / PT * PT;
        for b in 0..cout.div_ceil(OT) {
            let wb = &wt[b * cin * 9 * OT..(b + 1) * cin * 9 * OT];
            let mut j = 0;
            while j < full {
                tile::<PT>(plan, xp, cin, wb, b, cout, y, j);
                j += PT;
            }
            while j < vectors {
                tile::<1>(plan, xp, cin, wb, b, cout, y, j);
                j += 1;
            }
        }
    }

    /// P output vectors starting at vector j, for the OT channels of block b.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn tile<const P: usize>(
        plan: &Plan,
        xp: &[f32],
        cin: usize,
        wb: &[f32],
        b: usize,
        cout: usize,
        y: *mut f32,
        j: usize,
    ) {
        let mut at = [0usize; P];
        let mut out = [0usize; P];
        for p in 0..P {
            (out[p], at[p]) = plan.vector(j + p);
        }
        let mut acc = [[_mm256_setzero_ps(); P]; OT];
        let (x0, w0) = (xp.as_ptr(), wb.as_ptr());
        for c in 0..cin {
            let xc = x0.add(c * plan.channel);
            let wc = w0.add(c * 9 * OT);
            for t in 0..9 {
                let off = plan.taps[t];
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
        let hw = plan.oh * plan.ow;
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
        plan: &Plan,
        xp: &[f32],
        cin: usize,
        dy: &[f32],
        cout: usize,
        dw: &mut [f32],
    ) {
        // groups of three output channels share each input load
        let mut o = 0;
        while o + 3 <= cout {
            filter_rows::<3>(plan, xp, cin, dy, o, dw);
            o += 3;
        }
        while o < cout {
            filter_rows::<1>(plan, xp, cin, dy, o, dw);
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
        plan: &Plan,
        xp: &[f32],
        cin: usize,
        dy: &[f32],
        o0: usize,
        dw: &mut [f32],
    ) {
        let (oh, ow) = (plan.oh, plan.ow);
        let hw = oh * ow;
        for c in 0..cin {
            let xc = xp.as_ptr().add(c * plan.channel);
            for ky in 0..3 {
                let taps = [
                    plan.taps[ky * 3],
                    plan.taps[ky * 3 + 1],
                    plan.taps[ky * 3 + 2],
                ];
                let mut acc = [[_mm256_setzero_ps(); 3]; O];
                for oy in 0..oh {
                    let row = xc.add(oy * plan.out_row);
                    for v in (0..ow).step_by(8) {
                        let mut ds = [_mm256_setzero_ps(); O];
                        for (k, d) in ds.iter_mut().enumerate() {
                            *d = _mm256_loadu_ps(dy.as_ptr().add((o0 + k) * hw + oy * ow + v));
                        }
                        for kx in 0..3 {
                            let xv = _mm256_loadu_ps(row.add(v + taps[kx]));
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

    /// The input pixel tap (ky, kx) of output (i, j) reads, if inside.
    fn source(
        i: usize,
        j: usize,
        ky: usize,
        kx: usize,
        s: usize,
        h: usize,
        w: usize,
    ) -> Option<usize> {
        let (y, x) = ((i * s + ky) as isize - 1, (j * s + kx) as isize - 1);
        (y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w)
            .then(|| y as usize * w + x as usize)
    }

    /// The definition, in f64: y[o][i][j] = Σ w[o][c][ky][kx]·x[c][s·i+ky−1][s·j+kx−1].
    fn reference(
        x: &[f32],
        w: &[f32],
        (cin, cout, h, wd, s): (usize, usize, usize, usize, usize),
    ) -> Vec<f64> {
        let (oh, ow) = (h / s, wd / s);
        let mut y = vec![0f64; cout * oh * ow];
        for o in 0..cout {
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = 0f64;
                    for c in 0..cin {
                        for t in 0..9 {
                            if let Some(at) = source(i, j, t / 3, t % 3, s, h, wd) {
                                acc += w[(o * cin + c) * 9 + t] as f64 * x[c * h * wd + at] as f64;
                            }
                        }
                    }
                    y[(o * oh + i) * ow + j] = acc;
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

    fn plan(c: usize, h: usize, w: usize, s: usize) -> Plan {
        let g = Geometry::new(c, h, w, [3, 3], [s, s], [1, 1, 1, 1], [1, 1]);
        Plan::new(&g).expect("a direct shape")
    }

    /// Forward, input gradient (stride 1) and filter gradient against the
    /// definition, over channel counts that leave partial register tiles
    /// (cout 5 and 6 of blocks of 4; 3×8 = 3 vectors of tiles of 2; output
    /// channels in threes and one for the filter gradient), the 3-channel
    /// stem, and stride 2 (even/odd column planes).
    #[test]
    fn direct_kernels_match_the_definition() {
        if !cpu_has_avx2_fma() {
            eprintln!("no AVX2/FMA on this CPU: the direct kernels are not used here");
            return;
        }
        for &(cin, cout, h, wd, s) in &[
            (4, 5, 3, 8, 1),
            (3, 16, 8, 8, 1),
            (5, 6, 16, 8, 1),
            (16, 16, 32, 32, 1),
            (8, 4, 8, 24, 1),
            (4, 5, 6, 16, 2),
            (16, 32, 32, 32, 2),
            (3, 7, 16, 48, 2),
        ] {
            let what = format!("cin {cin} cout {cout} {h}×{wd} stride {s}");
            let pl = plan(cin, h, wd, s);
            let (oh, ow) = (pl.oh, pl.ow);
            let x = values(cin * h * wd, 1);
            let w = values(cout * cin * 9, 2);
            let dy = values(cout * oh * ow, 3);
            let mut xp = Vec::new();
            pad(&pl, &x, cin, &mut xp);
            // a reused buffer holding other values pads to the same
            let mut reused = vec![7.0f32; xp.len() + 5];
            pad(&pl, &x, cin, &mut reused);
            assert_eq!(reused, xp, "{what}");

            let mut y = vec![0f32; cout * oh * ow];
            conv(&pl, &xp, cin, &filters_forward(&w, cout, cin), cout, &mut y);
            close(
                &y,
                &reference(&x, &w, (cin, cout, h, wd, s)),
                &format!("y, {what}"),
            );

            if s == 1 {
                // dx = Σ_o w[o][c]ᵀ ⋆ dy: the definition with the transposed, flipped filters
                let mut wflip = vec![0f32; cin * cout * 9];
                for o in 0..cout {
                    for c in 0..cin {
                        for t in 0..9 {
                            wflip[(c * cout + o) * 9 + 8 - t] = w[(o * cin + c) * 9 + t];
                        }
                    }
                }
                let back = plan(cout, h, wd, 1);
                let mut dyp = Vec::new();
                pad(&back, &dy, cout, &mut dyp);
                let mut dx = vec![0f32; cin * h * wd];
                conv(
                    &back,
                    &dyp,
                    cout,
                    &filters_backward(&w, cout, cin),
                    cin,
                    &mut dx,
                );
                close(
                    &dx,
                    &reference(&dy, &wflip, (cout, cin, h, wd, 1)),
                    &format!("dx, {what}"),
                );
            }

            // dw[o][c][t] = Σ_outputs dy[o]·x[c] at the tap, accumulated onto 1
            let mut dw = vec![1f32; cout * cin * 9];
            grad_filter(&pl, &xp, cin, &dy, cout, &mut dw);
            let mut want = vec![1f64; cout * cin * 9];
            for o in 0..cout {
                for c in 0..cin {
                    for t in 0..9 {
                        for i in 0..oh {
                            for j in 0..ow {
                                if let Some(at) = source(i, j, t / 3, t % 3, s, h, wd) {
                                    want[(o * cin + c) * 9 + t] += dy[(o * oh + i) * ow + j] as f64
                                        * x[c * h * wd + at] as f64;
                                }
                            }
                        }
                    }
                }
            }
            close(&dw, &want, &format!("dw, {what}"));
        }
    }
}
