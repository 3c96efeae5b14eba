//! Direct 3×3 convolution (padding 1, stride 1 or 2, one group) in f32:
//! the shape of every conv inside a CIFAR/ImageNet basic block and of the
//! stage-opening ones. No column matrix: each image is copied once into a
//! zero-bordered buffer and the kernels read the nine taps straight from
//! it, keeping a tile of outputs in registers. On these shapes (16–64
//! channels) im2col + GEMM spends as long writing, packing and re-reading
//! columns as multiplying.
//!
//! Two instruction sets, two layouts of that buffer:
//! - AVX-512 ([`Isa::Avx512`]): 16-pixel vectors that run on across output
//!   rows (an 8-wide stage-3 image is two rows per vector), so rows are not
//!   padded left and right; a masked load zeroes the lanes whose tap falls
//!   off the row's edge. Stride 2 splits the input by row and column parity
//!   into four planes, which makes every tap one contiguous (masked) load.
//!   CPUs with full-width AVX-512 units run it at twice the AVX2 rate.
//! - AVX2 + FMA ([`Isa::Avx2`]): 8-pixel vectors within a row; each row
//!   padded on both sides (stride 2: even and odd padded columns as two
//!   planes).
//!
//! The input gradient of a stride-1 conv is the same convolution of the
//! output gradient with the filters transposed (in/out) and flipped (taps),
//! so one forward kernel serves both; the filter gradient has its own
//! kernel. Stride-2 input gradients, other shapes, other element types and
//! CPUs without AVX2/FMA use the im2col path in `conv`.

use super::Geometry;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// The instruction set a plan's kernels and layout are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx2,
    Avx512,
}

impl Isa {
    /// Output channels per register tile (the filters' blocking).
    fn tile_channels(self) -> usize {
        match self {
            Isa::Avx2 => avx2_tile::OT,
            Isa::Avx512 => avx512_tile::OT,
        }
    }

    /// Whether this CPU runs the kernels.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Isa::Avx2 => has!("avx2") && has!("fma"),
                Isa::Avx512 => has!("avx512f"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// The instruction sets the conv ops may use, best first: those the CPU
    /// has, less AVX-512 when `SSS_ONNX_KERNELS=avx2` (to compare the two
    /// in one build) and all when it is `im2col`.
    fn usable() -> &'static [Isa] {
        static USABLE: OnceLock<Vec<Isa>> = OnceLock::new();
        USABLE.get_or_init(|| {
            let choice = std::env::var("SSS_ONNX_KERNELS").unwrap_or_default();
            [Isa::Avx512, Isa::Avx2]
                .into_iter()
                .filter(|isa| isa.available())
                .filter(|isa| match choice.as_str() {
                    "avx2" => *isa == Isa::Avx2,
                    "im2col" => false,
                    _ => true,
                })
                .collect()
        })
    }
}

/// Register tiles of the AVX2 kernels.
mod avx2_tile {
    /// Output channels per register tile.
    pub const OT: usize = 4;
    /// 8-pixel vectors per register tile: OT·PT accumulators, PT loads and
    /// the broadcast stay inside the 16 AVX2 registers with room to
    /// schedule (PT 3 fills all 16 and the compiler spills registers).
    pub const PT: usize = 2;
}

/// Register tiles of the AVX-512 kernels (32 registers).
mod avx512_tile {
    /// Output channels per register tile: 16, 32 and 64 are multiples.
    pub const OT: usize = 8;
    /// 16-pixel vectors per register tile: 8·3 accumulators and 3 loads.
    pub const PT: usize = 3;
    /// Output channels per filter-gradient tile: O·3 accumulators and O
    /// output-gradient vectors (6 and 8 ran at 60–70 % of 4's rate).
    pub const OF: usize = 4;
    /// The same over a band of vectors with masks from a table: 8·3
    /// accumulators, the output gradients loaded one channel at a time
    /// (three input loads and eight output-gradient loads for 24
    /// multiply-adds, against seven for 12 with 4).
    pub const OB: usize = 8;
}

/// Where the kernels find things in a padded image: the input's h×w, the
/// output's oh×ow, the stride, and the offsets the padded layout gives.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub h: usize,
    pub w: usize,
    pub stride: usize,
    pub oh: usize,
    pub ow: usize,
    pub isa: Isa,
    /// AVX2: padded row length, w + 2 or (w + 2)/2 per column-parity plane.
    row: usize,
    /// Elements per input channel in the padded buffer.
    channel: usize,
    /// AVX2: input offset between consecutive output rows.
    out_row: usize,
    /// Input offset of each tap (ky·3 + kx) from an output pixel's origin
    /// (AVX-512: from the output pixel's index).
    taps: [usize; 9],
}

impl Layout {
    /// The plan for a conv geometry with this instruction set's layout, if
    /// its kernels handle the shape (on any CPU; [`plan_for`] adds the
    /// CPU check).
    pub fn with_isa(g: &Geometry, isa: Isa) -> Option<Layout> {
        let square_3x3 = (g.kh, g.kw, g.ph, g.pw, g.dh, g.dw) == (3, 3, 1, 1, 1, 1)
            && g.sh == g.sw
            && g.ow > 0
            && g.oh > 0;
        if !square_3x3 {
            return None;
        }
        let (h, w) = (g.h, g.w);
        let stride = match g.sh {
            1 if (g.oh, g.ow) == (h, w) => 1,
            2 if h.is_multiple_of(2) && w.is_multiple_of(2) && (g.oh, g.ow) == (h / 2, w / 2) => 2,
            _ => return None,
        };
        match isa {
            Isa::Avx2 => Self::rows(h, w, stride),
            Isa::Avx512 => Self::runs(h, w, stride),
        }
    }

    /// The AVX2 layout: every row padded on both sides.
    fn rows(h: usize, w: usize, stride: usize) -> Option<Layout> {
        let (oh, ow) = (h / stride, w / stride);
        if !ow.is_multiple_of(8) {
            return None;
        }
        let plan = |row, channel, out_row, taps| Layout {
            h,
            w,
            stride,
            oh,
            ow,
            isa: Isa::Avx2,
            row,
            channel,
            out_row,
            taps,
        };
        if stride == 1 {
            let row = w + 2;
            let taps = std::array::from_fn(|t| (t / 3) * row + t % 3);
            Some(plan(row, (h + 2) * row, row, taps))
        } else {
            // even padded columns, then odd ones: tap kx = 0, 1, 2 reads
            // column 2·ox + kx = even ox, odd ox, even ox + 1
            let row = (w + 2) / 2;
            let plane = (h + 2) * row;
            let taps = std::array::from_fn(|t| {
                let (ky, kx) = (t / 3, t % 3);
                ky * row + if kx == 1 { plane } else { kx / 2 }
            });
            Some(plan(row, 2 * plane, 2 * row, taps))
        }
    }

    /// The AVX-512 layout: rows of the output's width with no side padding,
    /// a zero row above and below and one guard element at each end, so
    /// output pixel p's tap t is at p + taps[t] (left and right edges
    /// masked). Stride 1: one such plane of w-wide rows, tap (ky, kx) at
    /// ky·w + kx. Stride 2: four planes of (oh + 1) rows of ow, for input
    /// rows of parity rp and columns of parity cp (plane 2·rp + cp, row 0
    /// the zero row): input (2r + rp, 2i + cp) is at row r + 1, column i.
    /// Output (oy, ox) reads input row 2oy + ky − 1 (ky 0: odd row oy − 1,
    /// 1: even row oy, 2: odd row oy) and column 2ox + kx − 1 (kx 0: odd
    /// column ox − 1, 1: even ox, 2: odd ox).
    fn runs(h: usize, w: usize, stride: usize) -> Option<Layout> {
        let (oh, ow) = (h / stride, w / stride);
        // other widths work out each vector's lane masks (see lane_masks);
        // a last vector mostly off the plane wastes most of its lanes, so
        // small odd planes (under 8 vectors) stay with im2col
        let regular = (ow == 8 || ow.is_multiple_of(16)) && (oh * ow).is_multiple_of(16);
        if !regular && oh * ow < 128 {
            return None;
        }
        let plan = |channel, taps| Layout {
            h,
            w,
            stride,
            oh,
            ow,
            isa: Isa::Avx512,
            row: 0,
            channel,
            out_row: 0,
            taps,
        };
        if stride == 1 {
            let taps = std::array::from_fn(|t| (t / 3) * w + t % 3);
            Some(plan((h + 2) * w + 2, taps))
        } else {
            let plane = 1 + (oh + 1) * ow;
            let taps = std::array::from_fn(|t| {
                let (ky, kx) = (t / 3, t % 3);
                let (rp, dr) = [(1, 0), (0, 1), (1, 1)][ky];
                let (cp, dc) = [(1, 0), (0, 1), (1, 1)][kx];
                (2 * rp + cp) * plane + dr * ow + dc
            });
            // the farthest load (plane 3, tap (2, 2), last vector) ends at
            // the last plane's last element
            Some(plan(4 * plane, taps))
        }
    }

    /// AVX2, output vector j (8 pixels): its offset in the output plane and
    /// the input offset of its top-left tap within a channel.
    #[inline(always)]
    fn vector(&self, j: usize) -> (usize, usize) {
        let per_row = self.ow / 8;
        let (oy, v) = (j / per_row, j % per_row);
        (j * 8, oy * self.out_row + v * 8)
    }

    /// AVX-512, output vector j (16 pixels from pixel 16·j): the lanes each
    /// column tap kx may load. kx 0 reads column −1 at an output row's
    /// first pixel, kx 2 column w at its last (stride 1 only: at stride 2
    /// kx 2 reads the odd column 2·ox + 1, inside the row).
    #[inline(always)]
    fn edge_masks(&self, j: usize) -> [u16; 3] {
        let ow = self.ow;
        if self.irregular() {
            let m = self.lane_masks(j);
            return [m[0], m[1], m[2]];
        }
        let (first, last) = if ow == 8 {
            (0x0101, 0x8080)
        } else {
            let col = (16 * j) % ow;
            (
                if col == 0 { 0x0001 } else { 0 },
                if col + 16 == ow { 0x8000 } else { 0 },
            )
        };
        let last = if self.stride == 1 { last } else { 0 };
        [!first, 0xffff, !last]
    }

    /// AVX-512: whether vectors do not line up with rows the two ways the
    /// fast mask rules assume (8-wide rows two a vector, or rows a whole
    /// number of vectors, and no partial last vector).
    #[inline(always)]
    pub(super) fn irregular(&self) -> bool {
        !((self.ow == 8 || self.ow.is_multiple_of(16)) && (self.oh * self.ow).is_multiple_of(16))
    }

    /// AVX-512 output vectors per plane (the last may be partial).
    pub(super) fn vectors(&self) -> usize {
        (self.oh * self.ow).div_ceil(16)
    }

    /// AVX-512, output vector j of any width, lane by lane: the masks of
    /// column taps kx 0, 1, 2 (as [`Layout::edge_masks`]) and, last, the
    /// lanes inside the output plane; every mask leaves out lanes past it.
    pub(super) fn lane_masks(&self, j: usize) -> [u16; 4] {
        let (ow, hw, start) = (self.ow, self.oh * self.ow, 16 * j);
        let inside = if start + 16 <= hw {
            0xffff
        } else {
            ((1u32 << hw.saturating_sub(start)) - 1) as u16
        };
        let (mut first, mut last) = (0u16, 0u16);
        let mut col = start % ow;
        for l in 0..16 {
            if col == 0 {
                first |= 1 << l;
            }
            if col == ow - 1 && self.stride == 1 {
                last |= 1 << l;
            }
            col = if col + 1 == ow { 0 } else { col + 1 };
        }
        [!first & inside, inside, !last & inside, inside]
    }

    /// Padded buffer length for c channels.
    pub fn padded_len(&self, c: usize) -> usize {
        c * self.channel
    }
}

/// The plan when the direct kernels compute this convolution's output and
/// filter gradient on this CPU: the best instruction set that handles the
/// shape.
pub fn plan_for(g: &Geometry, groups: usize) -> Option<Layout> {
    if groups != 1 {
        return None;
    }
    Isa::usable()
        .iter()
        .find_map(|&isa| Layout::with_isa(g, isa))
}

/// The plan when they also compute its input gradient (stride 1 only).
pub fn plan_for_input_grad(g: &Geometry, groups: usize) -> Option<Layout> {
    plan_for(g, groups).filter(|p| p.stride == 1)
}

/// Copies `c` planes of h×w into `out` in the plan's padded layout.
/// Writes every element, so a reused buffer is not cleared first.
pub fn pad(plan: &Layout, x: &[f32], c: usize, out: &mut Vec<f32>) {
    out.resize(plan.padded_len(c), 0.0);
    let (h, w) = (plan.h, plan.w);
    for ci in 0..c {
        let p = &mut out[ci * plan.channel..(ci + 1) * plan.channel];
        let xc = &x[ci * h * w..(ci + 1) * h * w];
        match (plan.isa, plan.stride) {
            (Isa::Avx2, 1) => pad_rows(plan, xc, p),
            (Isa::Avx2, _) => pad_rows_split(plan, xc, p),
            (Isa::Avx512, 1) => {
                // guard, zero row, the image, zero row, guard
                p[..1 + w].fill(0.0);
                p[1 + w..1 + w + h * w].copy_from_slice(xc);
                p[1 + w + h * w..].fill(0.0);
            }
            (Isa::Avx512, _) => pad_parity_planes(plan, xc, p),
        }
    }
}

/// AVX2, stride 1: a zero border all round.
fn pad_rows(plan: &Layout, x: &[f32], p: &mut [f32]) {
    let (h, w, wp) = (plan.h, plan.w, plan.row);
    p[..wp].fill(0.0);
    p[(h + 1) * wp..].fill(0.0);
    for y in 0..h {
        let row = &mut p[(y + 1) * wp..(y + 2) * wp];
        row[0] = 0.0;
        row[wp - 1] = 0.0;
        row[1..=w].copy_from_slice(&x[y * w..(y + 1) * w]);
    }
}

/// AVX2, stride 2: padded column j = input column j − 1 (w is even): the
/// even plane holds j = 0, 2, …, w → [0, x1, x3, …, x(w−1)], the odd one
/// j = 1, 3, …, w + 1 → [x0, x2, …, x(w−2), 0].
fn pad_rows_split(plan: &Layout, x: &[f32], p: &mut [f32]) {
    let (h, w, r) = (plan.h, plan.w, plan.row);
    let plane = (h + 2) * r;
    let (even, odd) = p.split_at_mut(plane);
    for half in [&mut *even, &mut *odd] {
        half[..r].fill(0.0);
        half[(h + 1) * r..].fill(0.0);
    }
    for y in 0..h {
        let e = &mut even[(y + 1) * r..(y + 2) * r];
        let o = &mut odd[(y + 1) * r..(y + 2) * r];
        e[0] = 0.0;
        o[r - 1] = 0.0;
        for (i, pair) in x[y * w..(y + 1) * w].chunks_exact(2).enumerate() {
            o[i] = pair[0];
            e[i + 1] = pair[1];
        }
    }
}

/// AVX-512, stride 2: the four parity planes of [`Layout::runs`], each a
/// guard, a zero row and oh rows of ow.
fn pad_parity_planes(plan: &Layout, x: &[f32], p: &mut [f32]) {
    let (w, oh, ow) = (plan.w, plan.oh, plan.ow);
    let plane = 1 + (oh + 1) * ow;
    for (q, dst) in p.chunks_exact_mut(plane).enumerate() {
        let (rp, cp) = (q / 2, q % 2);
        dst[..1 + ow].fill(0.0);
        for r in 0..oh {
            let src = &x[(2 * r + rp) * w..(2 * r + rp + 1) * w];
            let row = &mut dst[1 + (r + 1) * ow..1 + (r + 2) * ow];
            for (d, pair) in row.iter_mut().zip(src.chunks_exact(2)) {
                *d = pair[cp];
            }
        }
    }
}

/// Calls `f(start, whole)` over 0..total in runs of `run` (`whole`) and
/// then one at a time: the forward kernels' register tiles take output
/// vectors `run` at a time and the rest singly.
#[inline(always)]
fn in_runs(total: usize, run: usize, mut f: impl FnMut(usize, bool)) {
    let full = total / run * run;
    let mut i = 0;
    while i < full {
        f(i, true);
        i += run;
    }
    while i < total {
        f(i, false);
        i += 1;
    }
}

/// Filters [cout, cin, 3, 3] rearranged for [`conv`] with this plan's
/// kernels: blocks of output channels, then input channel, tap, and the
/// block's channels innermost (the kernel broadcasts them one after
/// another); missing channels are 0.
pub fn filters_forward(plan: &Layout, w: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    block(plan.isa.tile_channels(), cout, cin, |o, c, t| {
        w[(o * cin + c) * 9 + t]
    })
}

/// The filters of the input-gradient convolution: output and input
/// channels swapped and the taps flipped, `w'[c][o][t] = w[o][c][8 − t]`.
pub fn filters_backward(plan: &Layout, w: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    block(plan.isa.tile_channels(), cin, cout, |c, o, t| {
        w[(o * cin + c) * 9 + (8 - t)]
    })
}

fn block(
    ot: usize,
    out_ch: usize,
    in_ch: usize,
    w: impl Fn(usize, usize, usize) -> f32,
) -> Vec<f32> {
    let blocks = out_ch.div_ceil(ot);
    let mut wt = vec![0f32; blocks * in_ch * 9 * ot];
    for b in 0..blocks {
        for c in 0..in_ch {
            for t in 0..9 {
                for k in 0..ot {
                    let o = b * ot + k;
                    if o < out_ch {
                        wt[((b * in_ch + c) * 9 + t) * ot + k] = w(o, c, t);
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
pub fn conv(plan: &Layout, xp: &[f32], cin: usize, wt: &[f32], cout: usize, y: &mut [f32]) {
    // SAFETY: initialised f32s viewed as possibly-uninitialised ones; the
    // kernel only writes (valid f32s) through the view.
    let y = unsafe { &mut *(y as *mut [f32] as *mut [MaybeUninit<f32>]) };
    conv_into(plan, xp, cin, wt, cout, y);
}

/// [`conv`] into memory not yet initialised: every one of the cout·oh·ow
/// outputs is written (stored whole, never read), so the caller need not
/// zero a buffer the kernel overwrites anyway.
pub fn conv_into(
    plan: &Layout,
    xp: &[f32],
    cin: usize,
    wt: &[f32],
    cout: usize,
    y: &mut [MaybeUninit<f32>],
) {
    let ot = plan.isa.tile_channels();
    assert!(xp.len() >= plan.padded_len(cin));
    assert!(wt.len() >= cout.div_ceil(ot) * cin * 9 * ot && y.len() >= cout * plan.oh * plan.ow);
    assert!(plan.isa.available());
    // SAFETY: the CPU has the plan's instruction set (asserted) and the
    // slices hold what the kernel addresses: every load is inside the
    // padded channel it starts in (the plan's largest vector origin + tap
    // + vector width stays within `channel`), every store inside
    // cout·oh·ow.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        let y = y.as_mut_ptr() as *mut f32;
        match plan.isa {
            Isa::Avx2 => avx2::conv(plan, xp, cin, wt, cout, y),
            Isa::Avx512 => avx512::conv(plan, xp, cin, wt, cout, y),
        }
    }
}

/// How many images a [`grad_filter`] call should take: enough for 512
/// output pixels (an 8×8 image alone is 4 vectors, and each call ends in
/// 3·cout·cin horizontal sums), no more (32×32 images, 8 a call, ran at
/// 70 % of one a call: each channel's output gradients no longer stay in
/// cache between the kernel rows).
pub fn filter_batch(plan: &Layout) -> usize {
    512usize.div_ceil(plan.oh * plan.ow).clamp(1, 8)
}

/// `images` images: `dw` [cout, cin, 3, 3] += the filter gradient from
/// their padded inputs `xp` (from [`pad`] of the images' cin planes each,
/// one after another) and output gradients `dy` [images, cout, oh, ow].
/// Several images a call let the kernels sum longer before reducing their
/// vector accumulators (an 8×8 image alone is 4 vectors).
pub fn grad_filter(
    plan: &Layout,
    xp: &[f32],
    cin: usize,
    dy: &[f32],
    cout: usize,
    images: usize,
    dw: &mut [f32],
) {
    assert!(xp.len() >= plan.padded_len(images * cin));
    assert!(dy.len() >= images * cout * plan.oh * plan.ow && dw.len() >= cout * cin * 9);
    assert!(plan.isa.available());
    // SAFETY: as in `conv_into`.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        match plan.isa {
            Isa::Avx2 => avx2::grad_filter(plan, xp, cin, dy, cout, images, dw),
            Isa::Avx512 => avx512::grad_filter(plan, xp, cin, dy, cout, images, dw),
        }
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

    fn plan(isa: Isa, c: usize, h: usize, w: usize, s: usize) -> Option<Layout> {
        let g = Geometry::new(c, h, w, [3, 3], [s, s], [1, 1, 1, 1], [1, 1]);
        Layout::with_isa(&g, isa)
    }

    /// Forward, input gradient (stride 1) and filter gradient against the
    /// definition, over channel counts that leave partial register tiles
    /// (cout 5 and 6 of blocks of 4; 3×8 = 3 vectors of tiles of 2; output
    /// channels in threes and one for the filter gradient), the 3-channel
    /// stem, and stride 2 (even/odd column planes).
    #[test]
    fn direct_kernels_match_the_definition() {
        let mut tested = 0;
        for isa in [Isa::Avx2, Isa::Avx512] {
            if isa.available() {
                tested += check_against_definition(isa);
            } else {
                eprintln!("no {isa:?} on this CPU: those kernels are not used here");
            }
        }
        eprintln!("{tested} shapes checked");
    }

    /// The shapes of the test for one instruction set; returns how many it
    /// checked (each shape that set's layout takes).
    fn check_against_definition(isa: Isa) -> usize {
        let mut tested = 0;
        for &(cin, cout, h, wd, s) in &[
            (4, 5, 3, 8, 1),
            (3, 16, 8, 8, 1),
            (5, 6, 16, 8, 1),
            (16, 16, 32, 32, 1),
            (8, 4, 8, 24, 1),
            (4, 5, 6, 16, 2),
            (16, 32, 32, 32, 2),
            (3, 7, 16, 48, 2),
            // AVX-512 runs: 8-wide outputs at stride 2 (two rows a vector),
            // 64-wide rows (edges mid-way through the vectors), fewer
            // vectors than a tile, channel blocks of 8 and filter-gradient
            // groups of 6 left partial
            (5, 13, 16, 16, 2),
            (6, 9, 4, 64, 1),
            (7, 8, 2, 16, 1),
            (2, 3, 4, 32, 2),
            // AVX-512, other widths (lane masks worked out per vector): 12
            // and 28 wide (edges anywhere in a vector), 14×14 and 13×13
            // (a partial last vector, runs of tiles plus singles), stride 2
            // to 14×14
            (3, 6, 12, 12, 1),
            (4, 10, 28, 28, 1),
            (5, 9, 14, 14, 1),
            (2, 3, 13, 13, 1),
            (4, 5, 28, 28, 2),
        ] {
            let what = format!("{isa:?} cin {cin} cout {cout} {h}×{wd} stride {s}");
            let Some(pl) = plan(isa, cin, h, wd, s) else {
                continue;
            };
            tested += 1;
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
            conv(
                &pl,
                &xp,
                cin,
                &filters_forward(&pl, &w, cout, cin),
                cout,
                &mut y,
            );
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
                let back = plan(isa, cout, h, wd, 1).expect("the same shape");
                let mut dyp = Vec::new();
                pad(&back, &dy, cout, &mut dyp);
                let mut dx = vec![0f32; cin * h * wd];
                conv(
                    &back,
                    &dyp,
                    cout,
                    &filters_backward(&back, &w, cout, cin),
                    cin,
                    &mut dx,
                );
                close(
                    &dx,
                    &reference(&dy, &wflip, (cout, cin, h, wd, 1)),
                    &format!("dx, {what}"),
                );
            }

            // dw[o][c][t] = Σ_images Σ_outputs dy[o]·x[c] at the tap,
            // accumulated onto 1; two images in one call
            let (x2, dy2) = (values(cin * h * wd, 4), values(cout * oh * ow, 5));
            let (xs, dys) = ([x.clone(), x2].concat(), [dy.clone(), dy2].concat());
            let mut xsp = Vec::new();
            pad(&pl, &xs, 2 * cin, &mut xsp);
            // the output gradients from a 64-byte boundary and from one
            // value past it (the AVX-512 kernels read the first in place
            // where rows are whole vectors, else an aligned copy)
            let mut store = vec![0f32; dys.len() + 32];
            let at = store.as_ptr().align_offset(64).min(16);
            let runs: Vec<Vec<f32>> = [at, at + 1]
                .iter()
                .map(|&off| {
                    store[off..off + dys.len()].copy_from_slice(&dys);
                    let mut dw = vec![1f32; cout * cin * 9];
                    grad_filter(
                        &pl,
                        &xsp,
                        cin,
                        &store[off..off + dys.len()],
                        cout,
                        2,
                        &mut dw,
                    );
                    dw
                })
                .collect();
            let mut want = vec![1f64; cout * cin * 9];
            for img in 0..2 {
                let (x, dy) = (&xs[img * cin * h * wd..], &dys[img * cout * oh * ow..]);
                for o in 0..cout {
                    for c in 0..cin {
                        for t in 0..9 {
                            for i in 0..oh {
                                for j in 0..ow {
                                    if let Some(at) = source(i, j, t / 3, t % 3, s, h, wd) {
                                        want[(o * cin + c) * 9 + t] += dy[(o * oh + i) * ow + j]
                                            as f64
                                            * x[c * h * wd + at] as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            close(&runs[0], &want, &format!("dw, {what}, aligned"));
            close(&runs[1], &want, &format!("dw, {what}, misaligned"));
        }
        tested
    }
}
