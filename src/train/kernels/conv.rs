//! 2-D convolution (any stride, padding, dilation, groups) as a candle
//! custom op: per image, im2col into a small buffer and one GEMM per group;
//! images run in parallel. Its backward is two more such ops: the input
//! gradient (GEMM with the transposed weights, then col2im) and the filter
//! gradient (GEMM of the output gradient with the columns, summed over images
//! per thread). Nothing goes through conv-transpose.

use super::im2col::{col2im, im2col, im2col_rows};
use super::sgemm::{self, Operand, PackedA, Term};
use super::{contiguous, custom_op, gemm_rm, Elem, Geometry};
use super::{depthwise, direct3x3};
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

#[derive(Debug, Clone, Copy)]
pub struct Conv2d {
    pub g: Geometry,
    pub groups: usize,
    pub cout: usize,
}

impl Conv2d {
    fn dims(&self) -> (usize, usize, usize, usize) {
        let cg = self.g.c / self.groups;
        let kg = cg * self.g.kh * self.g.kw;
        (cg, kg, self.cout / self.groups, self.g.oh * self.g.ow)
    }
}

/// (output gradient, weights) → input gradient.
struct ConvGradInput(Conv2d);
/// (input, output gradient) → weight gradient.
struct ConvGradFilter(Conv2d);

fn forward<T: Elem>(
    op: &Conv2d,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (x, w) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
    let n = l1.dims()[0];
    let g = op.g;
    let (cg, kg, og, ll) = op.dims();
    let shape = Shape::from((n, op.cout, g.oh, g.ow));
    if let (true, Some(x), Some(w)) = (
        depthwise::applies(&g, op.groups, op.cout),
        T::as_f32(x),
        T::as_f32(w),
    ) {
        return Ok((CpuStorage::F32(depthwise::forward(&g, x, w, n)), shape));
    }
    if let (Some(plan), Some(x), Some(w)) = (
        direct3x3::plan_for(&g, op.groups),
        T::as_f32(x),
        T::as_f32(w),
    ) {
        let wt = direct3x3::filters_forward(&plan, w, op.cout, g.c);
        let y = direct_images(&plan, x, g.c, &wt, op.cout, n);
        return Ok((CpuStorage::F32(y), shape));
    }
    let pointwise = g.is_pointwise();
    let packed = packed_weights(op, w, false);
    if let (Some(p), Some(x)) = (&packed, T::as_f32(x)) {
        let k = side_by_side(n, ll);
        if k > 1 {
            let y = forward_side_by_side(op, x, p, n, k);
            return Ok((CpuStorage::F32(y), shape));
        }
    }
    if let (Some(p), Some(x)) = (&packed, T::as_f32(x)) {
        let y = match band_rows(op) {
            Some(rows) => forward_banded(op, x, p, n, rows),
            None => forward_per_image(op, x, p, n),
        };
        return Ok((CpuStorage::F32(y), shape));
    }
    let mut y = vec![T::default(); n * op.cout * ll];
    y.par_chunks_mut(op.cout * ll).enumerate().for_each_init(
        || vec![T::default(); if pointwise { 0 } else { kg * ll }],
        |buf, (b, yb)| {
            let xb = &x[b * g.c * g.h * g.w..(b + 1) * g.c * g.h * g.w];
            for grp in 0..op.groups {
                let cols = columns(&g, xb, grp * cg, cg, buf);
                let yg = &mut yb[grp * og * ll..(grp + 1) * og * ll];
                if let Some(p) = &packed {
                    if let (Some(c), Some(d)) = (T::as_f32(cols), T::as_f32_mut(yg)) {
                        let b = Operand::new(c, kg, ll, false);
                        sgemm::sgemm_packed(ll, d, &p[grp], b, false);
                        continue;
                    }
                }
                let wg = &w[grp * og * kg..(grp + 1) * og * kg];
                gemm_rm(og, ll, kg, yg, wg, false, cols, false, false);
            }
        },
    );
    Ok((T::to_cpu_storage_owned(y), shape))
}

/// Each group's weights packed once for the SGEMM (f32 on AVX-512): every
/// image multiplies the same filters, so packing them per image (what a
/// plain GEMM call does) costs as much as the product on 7×7 planes.
/// `transposed` packs Wᵀ, the input gradient's left operand.
fn packed_weights<T: Elem>(op: &Conv2d, w: &[T], transposed: bool) -> Option<Vec<PackedA>> {
    let w = T::as_f32(w)?;
    let (_, kg, og, _) = op.dims();
    if !sgemm::suits(if transposed { kg } else { og }) {
        return None;
    }
    let packed = (0..op.groups)
        .map(|grp| {
            let wg = &w[grp * og * kg..(grp + 1) * og * kg];
            if transposed {
                PackedA::new(kg, og, Operand::new(wg, kg, og, true))
            } else {
                PackedA::new(og, kg, Operand::new(wg, og, kg, false))
            }
        })
        .collect();
    Some(packed)
}

/// How many images' columns go side by side in one SGEMM when an output
/// plane is small (7×7, 14×14): one image's 49 columns fill 49 of the 64
/// lanes of two 32-wide tiles, and the product is too thin to amortise
/// its packing. About 512 columns a product, the batch split evenly over
/// the threads; 1 (one image a product) for planes of 256 pixels or more.
fn side_by_side(n: usize, ll: usize) -> usize {
    if ll >= 256 || ll == 0 {
        return 1;
    }
    let cap = 512usize.div_ceil(ll);
    let threads = rayon::current_num_threads().max(1);
    let tasks = threads * n.div_ceil(threads * cap);
    n.div_ceil(tasks).max(1)
}

/// The forward pass `k` images a product: their column matrices side by
/// side ([kg, k·ll]), one SGEMM with the packed filters, the product's
/// columns copied back to each image's output.
fn forward_side_by_side(
    op: &Conv2d,
    x: &[f32],
    packed: &[PackedA],
    n: usize,
    k: usize,
) -> Vec<f32> {
    let g = op.g;
    let (cg, kg, og, ll) = op.dims();
    let plane = g.c * g.h * g.w;
    let mut y = vec![0f32; n * op.cout * ll];
    y.par_chunks_mut(k * op.cout * ll)
        .enumerate()
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(cols, out): &mut (Vec<f32>, Vec<f32>), (t, yc)| {
                let (b0, images) = (t * k, yc.len() / (op.cout * ll));
                let wide = images * ll;
                cols.resize(kg * wide, 0.0);
                out.resize(og * wide, 0.0);
                for grp in 0..op.groups {
                    for i in 0..images {
                        let xb = &x[(b0 + i) * plane..(b0 + i + 1) * plane];
                        if g.is_pointwise() {
                            for c in 0..cg {
                                cols[c * wide + i * ll..][..ll]
                                    .copy_from_slice(&xb[(grp * cg + c) * ll..][..ll]);
                            }
                        } else {
                            im2col(&g, xb, grp * cg, cg, &mut cols[i * ll..], wide);
                        }
                    }
                    sgemm::sgemm_packed(
                        wide,
                        out,
                        &packed[grp],
                        Operand::new(cols, kg, wide, false),
                        false,
                    );
                    for i in 0..images {
                        for o in 0..og {
                            yc[(i * op.cout + grp * og + o) * ll..][..ll]
                                .copy_from_slice(&out[o * wide + i * ll..][..ll]);
                        }
                    }
                }
            },
        );
    y
}

/// `n` images' results of `per` values each, computed in parallel into a
/// buffer that is never zero-filled: `f(scratch, image, out)` must write
/// every value of `out` (a product that stores its whole result).
fn unzeroed_images<S>(
    n: usize,
    per: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    let len = n * per;
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(per.max(1))
        .enumerate()
        .for_each_init(init, |s, (b, out)| f(s, b, out));
    // SAFETY: every caller's `f` writes all of its chunk (see each caller)
    unsafe { v.set_len(len) };
    v
}

/// The forward pass one image a product with the packed filters, into an
/// output never zeroed: the product stores every value (a zero fill first
/// would be one more pass over the output, which on 1×1 convs costs as
/// much memory traffic as the product's own).
fn forward_per_image(op: &Conv2d, x: &[f32], packed: &[PackedA], n: usize) -> Vec<f32> {
    let g = op.g;
    let (cg, kg, og, ll) = op.dims();
    let plane = g.c * g.h * g.w;
    let buf = || vec![0f32; if g.is_pointwise() { 0 } else { kg * ll }];
    // each group's product stores all og·ll values of its slice
    unzeroed_images(n, op.cout * ll, buf, |buf, b, yb| {
        let xb = &x[b * plane..(b + 1) * plane];
        for grp in 0..op.groups {
            let cols = columns(&g, xb, grp * cg, cg, buf);
            let yg = &mut yb[grp * og * ll..(grp + 1) * og * ll];
            let b = Operand::new(cols, kg, ll, false);
            sgemm::sgemm_packed_uninit(ll, yg, &packed[grp], b);
        }
    })
}

/// The input gradient of a pointwise conv, one image a product: Wᵀ·dy is
/// the gradient itself, stored into memory never zeroed (as in
/// `forward_per_image`).
fn grad_input_pointwise(op: &Conv2d, dy: &[f32], packed: &[PackedA], n: usize) -> Vec<f32> {
    let (cg, _, og, ll) = op.dims();
    // each group's product stores all cg·ll values of its slice
    unzeroed_images(
        n,
        op.g.c * ll,
        || (),
        |_, b, dxb| {
            for grp in 0..op.groups {
                let at = (b * op.cout + grp * og) * ll;
                let d = Operand::new(&dy[at..at + og * ll], og, ll, false);
                let dst = &mut dxb[grp * cg * ll..(grp + 1) * cg * ll];
                sgemm::sgemm_packed_uninit(ll, dst, &packed[grp], d);
            }
        },
    )
}

/// Bytes of one band of a column matrix: with the band the product writes,
/// well inside L2.
const BAND_BYTES: usize = 256 << 10;

/// Output rows per band when one image's column matrix is too large to
/// stay in cache between im2col writing it and the product reading it
/// (the 7×7 stem: 147 rows × 12 544 columns, 7.4 MB a picture); None when
/// it fits, or for a pointwise conv (no column matrix).
fn band_rows(op: &Conv2d) -> Option<usize> {
    let g = op.g;
    let (_, kg, _, ll) = op.dims();
    let row = kg * g.ow * std::mem::size_of::<f32>();
    if g.is_pointwise() || row == 0 || kg * ll * std::mem::size_of::<f32>() <= 2 * BAND_BYTES {
        return None;
    }
    // at least 256 columns a band, for products wide enough to pay for
    // their packing; no bands when that is most of the plane anyway
    let rows = (BAND_BYTES / row).max(256usize.div_ceil(g.ow));
    (2 * rows <= g.oh).then_some(rows)
}

/// The forward pass one band of output rows at a time (`band_rows`):
/// im2col of the band, its product with the packed filters, the band
/// copied into the output planes.
fn forward_banded(op: &Conv2d, x: &[f32], packed: &[PackedA], n: usize, rows: usize) -> Vec<f32> {
    let g = op.g;
    let (cg, kg, og, ll) = op.dims();
    let plane = g.c * g.h * g.w;
    let bufs = || (vec![0f32; kg * rows * g.ow], vec![0f32; og * rows * g.ow]);
    // the bands cover every output row of every group's channels
    unzeroed_images(n, op.cout * ll, bufs, |(cols, out), b, yb| {
        let xb = &x[b * plane..(b + 1) * plane];
        for grp in 0..op.groups {
            for oy in (0..g.oh).step_by(rows) {
                let band = rows.min(g.oh - oy) * g.ow;
                im2col_rows(&g, xb, grp * cg, cg, oy..oy + band / g.ow, cols, band);
                let b = Operand::new(&cols[..kg * band], kg, band, false);
                sgemm::sgemm_packed(band, &mut out[..og * band], &packed[grp], b, false);
                for o in 0..og {
                    let dst = &mut yb[(grp * og + o) * ll + oy * g.ow..][..band];
                    for (d, &v) in dst.iter_mut().zip(&out[o * band..(o + 1) * band]) {
                        d.write(v);
                    }
                }
            }
        }
    })
}

/// The filter gradient one band of output rows at a time (`band_rows`):
/// per worker, dW += dy_band · cols_bandᵀ over its images and bands.
fn grad_filter_banded(op: &Conv2d, x: &[f32], dy: &[f32], n: usize, rows: usize) -> Vec<f32> {
    let g = op.g;
    let (cg, kg, og, ll) = op.dims();
    let plane = g.c * g.h * g.w;
    summed_over_workers(n, op.cout * kg, |images, dw: &mut [f32]| {
        let mut cols = vec![0f32; kg * rows * g.ow];
        for b in images {
            let xb = &x[b * plane..(b + 1) * plane];
            for grp in 0..op.groups {
                for oy in (0..g.oh).step_by(rows) {
                    let band = rows.min(g.oh - oy) * g.ow;
                    im2col_rows(&g, xb, grp * cg, cg, oy..oy + band / g.ow, &mut cols, band);
                    // dy's band: og rows of `band` values, a plane apart
                    let at = (b * op.cout + grp * og) * ll + oy * g.ow;
                    let term = Term {
                        a: Operand {
                            data: &dy[at..],
                            rs: ll,
                            cs: 1,
                        },
                        b: Operand::new(&cols[..kg * band], band, kg, true),
                        k: band,
                    };
                    let dwg = &mut dw[grp * og * kg..(grp + 1) * og * kg];
                    sgemm::sgemm_sum(og, kg, dwg, &[term], true);
                }
            }
        }
    })
}

/// The input gradient `k` images a product: their output gradients side
/// by side ([og, k·ll]), one SGEMM with the packed transposed filters, each
/// image's columns added back (col2im) or, pointwise, copied.
fn grad_input_side_by_side(
    op: &Conv2d,
    dy: &[f32],
    packed: &[PackedA],
    n: usize,
    k: usize,
) -> Vec<f32> {
    let g = op.g;
    let (cg, kg, og, ll) = op.dims();
    let plane = g.c * g.h * g.w;
    let mut dx = vec![0f32; n * plane];
    dx.par_chunks_mut(k * plane).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(dys, cols): &mut (Vec<f32>, Vec<f32>), (t, dxc)| {
            let (b0, images) = (t * k, dxc.len() / plane);
            let wide = images * ll;
            dys.resize(og * wide, 0.0);
            cols.resize(kg * wide, 0.0);
            for grp in 0..op.groups {
                for i in 0..images {
                    for o in 0..og {
                        let at = ((b0 + i) * op.cout + grp * og + o) * ll;
                        dys[o * wide + i * ll..][..ll].copy_from_slice(&dy[at..at + ll]);
                    }
                }
                sgemm::sgemm_packed(
                    wide,
                    cols,
                    &packed[grp],
                    Operand::new(dys, og, wide, false),
                    false,
                );
                for i in 0..images {
                    let dxb = &mut dxc[i * plane..(i + 1) * plane];
                    if g.is_pointwise() {
                        for c in 0..cg {
                            dxb[(grp * cg + c) * ll..][..ll]
                                .copy_from_slice(&cols[c * wide + i * ll..][..ll]);
                        }
                    } else {
                        col2im(&g, &cols[i * ll..], grp * cg, cg, dxb, wide);
                    }
                }
            }
        },
    );
    dx
}

/// The column matrix of channels `c0..c0+cn` of one image: the image
/// itself for a pointwise conv, else im2col into `buf`.
fn columns<'a, T: Elem>(
    g: &Geometry,
    xb: &'a [T],
    c0: usize,
    cn: usize,
    buf: &'a mut [T],
) -> &'a [T] {
    if g.is_pointwise() {
        let plane = g.h * g.w;
        &xb[c0 * plane..(c0 + cn) * plane]
    } else {
        im2col(g, xb, c0, cn, buf, g.oh * g.ow);
        buf
    }
}

/// The direct 3×3 convolution of n images [cin, h, w] in parallel (cin is
/// the conv's output channels for the input gradient, which convolves dy).
fn direct_images(
    plan: &direct3x3::Layout,
    x: &[f32],
    cin: usize,
    wt: &[f32],
    cout: usize,
    n: usize,
) -> Vec<f32> {
    let plane = cin * plan.h * plan.w;
    // conv_into writes all cout·oh·ow outputs of an image
    unzeroed_images(n, cout * plan.oh * plan.ow, Vec::new, |xp, b, yb| {
        direct3x3::pad(plan, &x[b * plane..(b + 1) * plane], cin, xp);
        direct3x3::conv_into(plan, xp, cin, wt, cout, yb);
    })
}

fn grad_input<T: Elem>(
    op: &Conv2d,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (dy, w) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
    let n = l1.dims()[0];
    let g = op.g;
    let (cg, kg, og, ll) = op.dims();
    let plane = g.c * g.h * g.w;
    if let (true, Some(dy), Some(w)) = (
        depthwise::applies(&g, op.groups, op.cout),
        T::as_f32(dy),
        T::as_f32(w),
    ) {
        let dx = depthwise::grad_input(&g, dy, w, n);
        return Ok((CpuStorage::F32(dx), Shape::from((n, g.c, g.h, g.w))));
    }
    if let (Some(plan), Some(dy), Some(w)) = (
        direct3x3::plan_for_input_grad(&g, op.groups),
        T::as_f32(dy),
        T::as_f32(w),
    ) {
        // the same convolution of dy with the filters transposed and flipped
        let wt = direct3x3::filters_backward(&plan, w, op.cout, g.c);
        let dx = direct_images(&plan, dy, op.cout, &wt, g.c, n);
        return Ok((CpuStorage::F32(dx), Shape::from((n, g.c, g.h, g.w))));
    }
    let pointwise = g.is_pointwise();
    let packed = packed_weights(op, w, true);
    if let (Some(p), Some(dy)) = (&packed, T::as_f32(dy)) {
        let k = side_by_side(n, ll);
        if k > 1 {
            let dx = grad_input_side_by_side(op, dy, p, n, k);
            return Ok((CpuStorage::F32(dx), Shape::from((n, g.c, g.h, g.w))));
        }
    }
    if let (Some(p), Some(dy), true) = (&packed, T::as_f32(dy), pointwise) {
        let dx = grad_input_pointwise(op, dy, p, n);
        return Ok((CpuStorage::F32(dx), Shape::from((n, g.c, g.h, g.w))));
    }
    let mut dx = vec![T::default(); n * plane];
    dx.par_chunks_mut(plane).enumerate().for_each_init(
        || vec![T::default(); if pointwise { 0 } else { kg * ll }],
        |cols, (b, dxb)| {
            let dyb = &dy[b * op.cout * ll..(b + 1) * op.cout * ll];
            for grp in 0..op.groups {
                let wg = &w[grp * og * kg..(grp + 1) * og * kg];
                let dyg = &dyb[grp * og * ll..(grp + 1) * og * ll];
                // cols[kg×ll] = Wgᵀ[kg×og] · dy_g[og×ll]; a pointwise
                // conv's columns are the input gradient itself
                let dst = if pointwise {
                    &mut dxb[grp * cg * ll..(grp + 1) * cg * ll]
                } else {
                    &mut cols[..]
                };
                let fast = match (&packed, T::as_f32(dyg)) {
                    (Some(p), Some(d)) => T::as_f32_mut(dst).map(|c| {
                        let b = Operand::new(d, og, ll, false);
                        sgemm::sgemm_packed(ll, c, &p[grp], b, false)
                    }),
                    _ => None,
                };
                if fast.is_none() {
                    gemm_rm(kg, ll, og, dst, wg, true, dyg, false, false);
                }
                if !pointwise {
                    col2im(&g, cols, grp * cg, cg, dxb, ll);
                }
            }
        },
    );
    Ok((T::to_cpu_storage_owned(dx), Shape::from((n, g.c, g.h, g.w))))
}

fn grad_filter<T: Elem>(
    op: &Conv2d,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (x, dy) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
    let n = l1.dims()[0];
    let g = op.g;
    let (cg, kg, og, ll) = op.dims();
    let plane = g.c * g.h * g.w;
    let wlen = op.cout * kg;
    let shape = Shape::from((op.cout, cg, g.kh, g.kw));
    if let (true, Some(x), Some(dy)) = (
        depthwise::applies(&g, op.groups, op.cout),
        T::as_f32(x),
        T::as_f32(dy),
    ) {
        return Ok((CpuStorage::F32(depthwise::grad_filter(&g, x, dy, n)), shape));
    }
    if let (Some(plan), Some(x), Some(dy)) = (
        direct3x3::plan_for(&g, op.groups),
        T::as_f32(x),
        T::as_f32(dy),
    ) {
        // each worker pads a few small images at a time and sums them in
        // one kernel call
        let batch = direct3x3::filter_batch(&plan);
        let dw = summed_over_workers(n, wlen, |images, dw: &mut [f32]| {
            let mut xp = Vec::new();
            let end = images.end;
            for b in images.step_by(batch) {
                let k = batch.min(end - b);
                direct3x3::pad(&plan, &x[b * plane..(b + k) * plane], k * g.c, &mut xp);
                let dyb = &dy[b * op.cout * ll..(b + k) * op.cout * ll];
                direct3x3::grad_filter(&plan, &xp, g.c, dyb, op.cout, k, dw);
            }
        });
        return Ok((CpuStorage::F32(dw), shape));
    }
    // one accumulator per worker, summed at the end; with the SGEMM, short
    // planes put several images into one product's depth, so the
    // accumulator is read and written once per slab rather than per image;
    // as many images as fill one slab and no more (7×7 planes: 5 images,
    // depth 245; 6 would make a slab of 256 and one of 38, a second pass
    // over the accumulator for 38 steps)
    let fast = T::as_f32(x).is_some() && sgemm::suits(og);
    if let (true, Some(rows), Some(x), Some(dy)) =
        (fast, band_rows(op), T::as_f32(x), T::as_f32(dy))
    {
        let dw = grad_filter_banded(op, x, dy, n, rows);
        return Ok((CpuStorage::F32(dw), shape));
    }
    let group = if fast {
        (sgemm::KC / ll).clamp(1, 16).min(images_per_worker(n))
    } else {
        1
    };
    let dw = summed_over_workers(n, wlen, |images, dw: &mut [T]| {
        let len = if g.is_pointwise() { 0 } else { kg * ll };
        let mut bufs: Vec<Vec<T>> = (0..group).map(|_| vec![T::default(); len]).collect();
        let end = images.end;
        for b0 in images.step_by(group) {
            let images = b0..(b0 + group).min(end);
            for grp in 0..op.groups {
                let cols: Vec<&[T]> = bufs
                    .iter_mut()
                    .zip(images.clone())
                    .map(|(buf, b)| columns(&g, &x[b * plane..(b + 1) * plane], grp * cg, cg, buf))
                    .collect();
                let dyg = |b: usize| {
                    let at = (b * op.cout + grp * og) * ll;
                    &dy[at..at + og * ll]
                };
                let dwg = &mut dw[grp * og * kg..(grp + 1) * og * kg];
                // dW_g[og×kg] += Σ dy_g[og×ll] · colsᵀ[ll×kg]
                let terms: Option<Vec<Term>> = cols
                    .iter()
                    .zip(images.clone())
                    .map(|(c, b)| {
                        Some(Term {
                            a: Operand::new(T::as_f32(dyg(b))?, og, ll, false),
                            b: Operand::new(T::as_f32(c)?, ll, kg, true),
                            k: ll,
                        })
                    })
                    .collect();
                match (terms, T::as_f32_mut(dwg)) {
                    (Some(terms), Some(d)) if fast => sgemm::sgemm_sum(og, kg, d, &terms, true),
                    (_, _) => {
                        for (c, b) in cols.iter().zip(images.clone()) {
                            gemm_rm(
                                og,
                                kg,
                                ll,
                                &mut dw[grp * og * kg..(grp + 1) * og * kg],
                                dyg(b),
                                false,
                                c,
                                true,
                                true,
                            );
                        }
                    }
                }
            }
        }
    });
    Ok((T::to_cpu_storage_owned(dw), shape))
}

/// The batch split evenly over the workers (at least 1 image each).
fn images_per_worker(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// A filter gradient summed over the batch: the images split evenly over
/// the workers, `f(images, dw)` adding one worker's share into its own
/// zeroed accumulator, the accumulators added at the end.
fn summed_over_workers<T: Elem>(
    n: usize,
    wlen: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [T]) + Sync + Send,
) -> Vec<T> {
    let per = images_per_worker(n);
    let partial: Vec<Vec<T>> = (0..n.div_ceil(per))
        .into_par_iter()
        .map(|t| {
            let mut dw = vec![T::default(); wlen];
            f(t * per..((t + 1) * per).min(n), &mut dw);
            dw
        })
        .collect();
    sum_partials(partial, wlen)
}

/// The workers' filter gradients summed, in parallel over slices (a
/// ResNet's weights are megabytes: summed on one thread, the other core
/// would wait).
fn sum_partials<T: Elem>(mut partial: Vec<Vec<T>>, len: usize) -> Vec<T> {
    let Some(mut total) = partial.pop() else {
        return vec![T::default(); len];
    };
    total.resize(len, T::default());
    const CHUNK: usize = 1 << 14;
    total.par_chunks_mut(CHUNK).enumerate().for_each(|(i, t)| {
        for p in &partial {
            let src = p.get(i * CHUNK..).unwrap_or(&[]);
            for (a, &b) in t.iter_mut().zip(src) {
                *a += b;
            }
        }
    });
    total
}

custom_op!(CustomOp2 for Conv2d {
    name(&self) {
        // the path in the name, for the benchmark's table (f64 always
        // takes im2col; these names describe f32 training)
        if depthwise::applies(&self.g, self.groups, self.cout) {
            "sss-conv2d depthwise"
        } else if direct3x3::plan_for(&self.g, self.groups).is_some() {
            "sss-conv2d direct"
        } else {
            "sss-conv2d im2col"
        }
    }
    fwd(s1: l1, s2: l2) => forward(self, s1, l1, s2, l2);

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // the network's input (a plain tensor) needs no gradient: skip the
        // first conv's input gradient, a full backward conv
        let (dx, dw) = self.backward(x, w, dy, x.track_op())?;
        Ok((dx, Some(dw)))
    }
});

impl Conv2d {
    /// The input gradient (when `input_grad`) and the filter gradient, for
    /// the output gradient `dy`.
    pub(crate) fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        input_grad: bool,
    ) -> Result<(Option<Tensor>, Tensor)> {
        let dy = dy.contiguous()?;
        let dx = if input_grad {
            Some(dy.apply_op2_no_bwd(&w.contiguous()?, &ConvGradInput(*self))?)
        } else {
            None
        };
        let dw = x
            .contiguous()?
            .apply_op2_no_bwd(&dy, &ConvGradFilter(*self))?;
        Ok((dx, dw))
    }
}

custom_op!(CustomOp2 for ConvGradInput {
    name(&self) {
        if depthwise::applies(&self.0.g, self.0.groups, self.0.cout) {
            "sss-conv2d-grad-input depthwise"
        } else if direct3x3::plan_for_input_grad(&self.0.g, self.0.groups).is_some() {
            "sss-conv2d-grad-input direct"
        } else {
            "sss-conv2d-grad-input im2col"
        }
    }
    fwd(s1: l1, s2: l2) => grad_input(&self.0, s1, l1, s2, l2);
});

custom_op!(CustomOp2 for ConvGradFilter {
    name(&self) {
        if depthwise::applies(&self.0.g, self.0.groups, self.0.cout) {
            "sss-conv2d-grad-filter depthwise"
        } else if direct3x3::plan_for(&self.0.g, self.0.groups).is_some() {
            "sss-conv2d-grad-filter direct"
        } else {
            "sss-conv2d-grad-filter im2col"
        }
    }
    fwd(s1: l1, s2: l2) => grad_filter(&self.0, s1, l1, s2, l2);
});
