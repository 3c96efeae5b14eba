//! The AVX-512 kernels: 16-pixel vectors over the run layout of
//! [`Layout::runs`], row edges masked.

use super::avx512_tile::{OB, OF, OT, PT};
use super::{in_runs, Layout};
use std::arch::x86_64::*;

#[target_feature(enable = "avx512f")]
pub(super) unsafe fn conv(
    plan: &Layout,
    xp: &[f32],
    cin: usize,
    wt: &[f32],
    cout: usize,
    y: *mut f32,
) {
    let vectors = plan.vectors();
    // every vector's masks worked out once a call, not once a tile
    let table: Vec<[u16; 4]> = (0..vectors)
        .map(|j| {
            if plan.irregular() {
                plan.lane_masks(j)
            } else {
                let m = plan.edge_masks(j);
                [m[0], m[1], m[2], 0xffff]
            }
        })
        .collect();
    for b in 0..cout.div_ceil(OT) {
        let wb = &wt[b * cin * 9 * OT..(b + 1) * cin * 9 * OT];
        in_runs(vectors, PT, |j, whole| {
            if whole {
                tile::<PT>(plan, &table, xp, cin, wb, b, cout, y, j)
            } else {
                tile::<1>(plan, &table, xp, cin, wb, b, cout, y, j)
            }
        });
    }
}

/// P output vectors starting at vector j, for the OT channels of block b.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile<const P: usize>(
    plan: &Layout,
    table: &[[u16; 4]],
    xp: &[f32],
    cin: usize,
    wb: &[f32],
    b: usize,
    cout: usize,
    y: *mut f32,
    j: usize,
) {
    let masks: [[u16; 4]; P] = std::array::from_fn(|p| table[j + p]);
    let mut acc = [[_mm512_setzero_ps(); P]; OT];
    let (x0, w0) = (xp.as_ptr().add(16 * j), wb.as_ptr());
    for c in 0..cin {
        let xc = x0.add(c * plan.channel);
        let wc = w0.add(c * 9 * OT);
        for t in 0..9 {
            let at = xc.add(plan.taps[t]);
            let mut xs = [_mm512_setzero_ps(); P];
            for p in 0..P {
                xs[p] = _mm512_maskz_loadu_ps(masks[p][t % 3], at.add(16 * p));
            }
            for (k, row) in acc.iter_mut().enumerate() {
                let wv = _mm512_set1_ps(*wc.add(t * OT + k));
                for p in 0..P {
                    row[p] = _mm512_fmadd_ps(wv, xs[p], row[p]);
                }
            }
        }
    }
    let hw = plan.oh * plan.ow;
    // a partial last vector (irregular plans) stores its lanes inside
    let inside: [u16; P] = std::array::from_fn(|p| masks[p][3]);
    for (k, row) in acc.iter().enumerate() {
        let o = b * OT + k;
        if o < cout {
            for (p, v) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(y.add(o * hw + 16 * (j + p)), inside[p], *v);
            }
        }
    }
}

#[target_feature(enable = "avx512f")]
pub(super) unsafe fn grad_filter(
    plan: &Layout,
    xp: &[f32],
    cin: usize,
    dy: &[f32],
    cout: usize,
    images: usize,
    dw: &mut [f32],
) {
    // groups of OF output channels share each input load (a plain loop:
    // through a closure this ran 10–15 % slower). An 8- or 16-wide
    // output's vectors are whole rows, all with the same edge masks: a loop
    // of its own (worked out per vector, they cost the 8×8 shapes 20 %;
    // a table per period of vectors for 32-wide rows cost more than it
    // saved)
    // other widths read each vector's masks from a table worked out once
    let table: Vec<[u16; 4]> = if plan.irregular() {
        (0..plan.vectors()).map(|j| plan.lane_masks(j)).collect()
    } else {
        Vec::new()
    };
    // out of the thread-local and back, so the kernels are not inlined
    // into a closure (which would not carry this function's features)
    let mut buf = ALIGNED.take();
    let (dy, pitch) = aligned_planes(plan, dy, images * cout, &mut buf);
    by_channel_groups(plan, &table, xp, cin, dy, pitch, cout, images, dw);
    ALIGNED.set(buf);
}

thread_local! {
    /// The output gradients' aligned copy, reused across calls.
    static ALIGNED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `planes` output-gradient planes, each starting on a 64-byte boundary,
/// `pitch` (a whole number of vectors) apart, zeros after each: `dy`
/// itself where it is laid out so, else a copy in `buf`. The kernels load
/// every output-gradient vector 3·cin times, and from addresses off the
/// cache-line grid each of those loads touches two lines; the copy is one
/// pass (docs/notebook/kernels.md has the rates).
fn aligned_planes<'a>(
    plan: &Layout,
    dy: &'a [f32],
    planes: usize,
    buf: &'a mut Vec<f32>,
) -> (&'a [f32], usize) {
    let hw = plan.oh * plan.ow;
    if hw.is_multiple_of(16) && dy.as_ptr().align_offset(64) == 0 {
        return (dy, hw);
    }
    let pitch = hw.next_multiple_of(16);
    if buf.len() < planes * pitch + 15 {
        buf.resize(planes * pitch + 15, 0.0);
    }
    let skip = buf.as_ptr().align_offset(64).min(15);
    let out = &mut buf[skip..skip + planes * pitch];
    for (to, from) in out.chunks_exact_mut(pitch).zip(dy.chunks_exact(hw)) {
        to[..hw].copy_from_slice(from);
        to[hw..].fill(0.0);
    }
    (out, pitch)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn by_channel_groups(
    plan: &Layout,
    table: &[[u16; 4]],
    xp: &[f32],
    cin: usize,
    dy: &[f32],
    pitch: usize,
    cout: usize,
    images: usize,
    dw: &mut [f32],
) {
    if plan.irregular() {
        return filter_table(plan, table, xp, cin, dy, pitch, cout, images, dw);
    }
    let mut o = 0;
    while o + OF <= cout {
        if plan.ow <= 16 {
            filter_rows::<OF, true>(plan, xp, cin, dy, pitch, cout, images, o, dw);
        } else {
            filter_rows::<OF, false>(plan, xp, cin, dy, pitch, cout, images, o, dw);
        }
        o += OF;
    }
    while o < cout {
        if plan.ow <= 16 {
            filter_rows::<1, true>(plan, xp, cin, dy, pitch, cout, images, o, dw);
        } else {
            filter_rows::<1, false>(plan, xp, cin, dy, pitch, cout, images, o, dw);
        }
        o += 1;
    }
}

/// dw for output channels o0..o0+O, one kernel row at a time: O×3
/// accumulators, and per 16 pixels O output-gradient loads and three
/// input loads for 3·O multiply-adds. The sums run over all the images
/// before the accumulators are reduced, so an 8×8 image's 4 vectors do not
/// pay for 3·O horizontal sums each. SAME_MASKS: every vector has vector
/// 0's edge masks; else rows are whole vectors, and the masks follow from
/// the vector's column, counted along (a division per vector to find it,
/// and the general mask rule beside it in the loop, left LLVM keeping
/// accumulators on the stack).
// indices name the register tile's rows and columns more plainly here
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
// compiled on its own, for the same reason
#[target_feature(enable = "avx512f")]
#[inline(never)]
unsafe fn filter_rows<const O: usize, const SAME_MASKS: bool>(
    plan: &Layout,
    xp: &[f32],
    cin: usize,
    dy: &[f32],
    pitch: usize,
    cout: usize,
    images: usize,
    o0: usize,
    dw: &mut [f32],
) {
    let (ow, vectors) = (plan.ow, plan.oh * plan.ow / 16);
    let same = plan.edge_masks(0);
    let right_edge = if plan.stride == 1 { !0x8000u16 } else { 0xffff };
    for c in 0..cin {
        for ky in 0..3 {
            let taps = [
                plan.taps[ky * 3],
                plan.taps[ky * 3 + 1],
                plan.taps[ky * 3 + 2],
            ];
            let mut acc = [[_mm512_setzero_ps(); 3]; O];
            for i in 0..images {
                let xc = xp.as_ptr().add((i * cin + c) * plan.channel);
                let di = dy.as_ptr().add((i * cout + o0) * pitch);
                let mut col = 0;
                for j in 0..vectors {
                    let masks = if SAME_MASKS {
                        same
                    } else {
                        let first = if col == 0 { !1u16 } else { 0xffff };
                        col += 16;
                        let last = if col == ow { right_edge } else { 0xffff };
                        if col == ow {
                            col = 0;
                        }
                        [first, 0xffff, last]
                    };
                    let mut ds = [_mm512_setzero_ps(); O];
                    for (k, d) in ds.iter_mut().enumerate() {
                        *d = _mm512_loadu_ps(di.add(k * pitch + 16 * j));
                    }
                    for kx in 0..3 {
                        let xv = _mm512_maskz_loadu_ps(masks[kx], xc.add(16 * j + taps[kx]));
                        for k in 0..O {
                            acc[k][kx] = _mm512_fmadd_ps(ds[k], xv, acc[k][kx]);
                        }
                    }
                }
            }
            for (k, a) in acc.iter().enumerate() {
                let at = ((o0 + k) * cin + c) * 9 + ky * 3;
                for kx in 0..3 {
                    dw[at + kx] += _mm512_reduce_add_ps(a[kx]);
                }
            }
        }
    }
}

/// [`filter_rows`] for irregular plans: masks from `table` (one per vector,
/// [`Layout::lane_masks`]), the output gradient of a partial last vector
/// loaded masked so lanes past the plane add nothing. Large planes go in
/// bands of about [`BAND`] vectors; within a band, each input channel
/// meets every group of output channels in turn, so the channel's band of
/// input (a few KB) stays in L1 and the band's output gradients (all
/// channels: up to a few hundred KB) in L2, and the input is read from
/// memory once per band rather than once per group of output channels.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn filter_table(
    plan: &Layout,
    table: &[[u16; 4]],
    xp: &[f32],
    cin: usize,
    dy: &[f32],
    pitch: usize,
    cout: usize,
    images: usize,
    dw: &mut [f32],
) {
    let bands = table.len().div_ceil(BAND);
    let per = table.len().div_ceil(bands);
    for (band, masks) in table.chunks(per).enumerate() {
        let first = band * per;
        for c in 0..cin {
            let at = Band {
                plan,
                masks,
                first,
                xp,
                cin,
                c,
                dy,
                pitch,
                cout,
                images,
            };
            let mut o = 0;
            while o + OB <= cout {
                table_pass::<OB>(&at, o, dw);
                o += OB;
            }
            while o < cout {
                table_pass::<1>(&at, o, dw);
                o += 1;
            }
        }
    }
}

/// What one pass of [`table_pass`] reads: a band of vectors (`masks`, from
/// vector `first`) of input channel `c`, over all images.
struct Band<'a> {
    plan: &'a Layout,
    masks: &'a [[u16; 4]],
    first: usize,
    xp: &'a [f32],
    cin: usize,
    c: usize,
    dy: &'a [f32],
    pitch: usize,
    cout: usize,
    images: usize,
}

/// dw[o0..o0+O][c] += the band's share, one kernel row at a time: O×3
/// accumulators, per 16 pixels three input loads and O output-gradient
/// loads for 3·O multiply-adds.
// compiled on its own, as filter_rows
#[target_feature(enable = "avx512f")]
#[inline(never)]
unsafe fn table_pass<const O: usize>(at: &Band, o0: usize, dw: &mut [f32]) {
    let Band {
        plan,
        masks,
        first,
        xp,
        cin,
        c,
        dy,
        pitch,
        cout,
        images,
    } = *at;
    for ky in 0..3 {
        let taps = [
            plan.taps[ky * 3],
            plan.taps[ky * 3 + 1],
            plan.taps[ky * 3 + 2],
        ];
        let mut acc = [[_mm512_setzero_ps(); 3]; O];
        for i in 0..images {
            let xc = xp.as_ptr().add((i * cin + c) * plan.channel);
            let di = dy.as_ptr().add((i * cout + o0) * pitch);
            for (v, m) in masks.iter().enumerate() {
                let j = first + v;
                let xs: [__m512; 3] = std::array::from_fn(|kx| {
                    _mm512_maskz_loadu_ps(m[kx], xc.add(16 * j + taps[kx]))
                });
                for (k, a) in acc.iter_mut().enumerate() {
                    let d = _mm512_maskz_loadu_ps(m[3], di.add(k * pitch + 16 * j));
                    for kx in 0..3 {
                        a[kx] = _mm512_fmadd_ps(d, xs[kx], a[kx]);
                    }
                }
            }
        }
        for (k, a) in acc.iter().enumerate() {
            let at = ((o0 + k) * cin + c) * 9 + ky * 3;
            for (kx, v) in a.iter().enumerate() {
                dw[at + kx] += _mm512_reduce_add_ps(*v);
            }
        }
    }
}

/// Vectors per band of [`filter_table`]: [`OB`] = 8 channels' output
/// gradients of 64 vectors are 32 KB (in L1 across the three kernel rows).
const BAND: usize = 64;
