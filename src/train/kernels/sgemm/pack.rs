//! Packing for [`super::sgemm`]: a block of A into `MR`-row panels (for
//! each depth step the panel's `MR` values side by side, the kernel's
//! broadcasts), a slab of B into `NR`-column panels (for each depth step
//! `NR` values, the kernel's two vector loads). Rows or columns past the
//! matrix's edge are zero. A slab's depth may span several terms of a sum.

use super::{Operand, Term, MR, NR};

/// Resizes `buf` to `len` without caring what it holds: every element is
/// written by the packers below before it is read.
fn sized(buf: &mut Vec<f32>, len: usize) {
    if buf.len() != len {
        buf.resize(len, 0.0);
    }
}

/// The pieces of depth `pc..pc+kc` of the terms' concatenated depth: (term,
/// its first depth step, length, offset in the slab).
fn pieces<'a>(
    terms: &'a [Term<'a>],
    pc: usize,
    kc: usize,
) -> impl Iterator<Item = (&'a Term<'a>, usize, usize, usize)> + 'a {
    let mut start = 0;
    terms.iter().filter_map(move |t| {
        let (lo, hi) = (start, start + t.k);
        start = hi;
        let (a, b) = (lo.max(pc), hi.min(pc + kc));
        (a < b).then(|| (t, a - lo, b - a, a - pc))
    })
}

/// Rows `i0..i0+mc`, depth `pc..pc+kc` of the terms' A.
pub(super) fn a_block(
    terms: &[Term],
    i0: usize,
    mc: usize,
    pc: usize,
    kc: usize,
    out: &mut Vec<f32>,
) {
    let panels = mc.div_ceil(MR);
    sized(out, panels * kc * MR);
    for (ip, panel) in out.chunks_exact_mut(kc * MR).enumerate() {
        let r0 = i0 + ip * MR;
        let rows = MR.min(i0 + mc - r0);
        for (t, p0, len, d) in pieces(terms, pc, kc) {
            a_piece(&t.a, r0, rows, p0, len, &mut panel[d * MR..(d + len) * MR]);
        }
        if rows < MR {
            for p in 0..kc {
                panel[p * MR + rows..(p + 1) * MR].fill(0.0);
            }
        }
    }
}

fn a_piece(a: &Operand, r0: usize, rows: usize, p0: usize, len: usize, panel: &mut [f32]) {
    if a.cs == 1 {
        // row-major A (the filter gradient's output gradients): a transpose,
        // 16 depth steps of every row at a time
        let srcs: [&[f32]; MR] = std::array::from_fn(|r| {
            if r < rows {
                &a.data[(r0 + r) * a.rs + p0..][..len]
            } else {
                &[]
            }
        });
        transpose_into::<MR>(&srcs[..rows], len, panel);
    } else if a.rs == 1 {
        // stored transposed: each depth step's rows are contiguous
        for p in 0..len {
            let src = &a.data[(p0 + p) * a.cs + r0..][..rows];
            panel[p * MR..p * MR + rows].copy_from_slice(src);
        }
    } else {
        for r in 0..rows {
            for p in 0..len {
                panel[p * MR + r] = a.data[(r0 + r) * a.rs + (p0 + p) * a.cs];
            }
        }
    }
}

/// Depth `pc..pc+kc`, columns `j0..j0+nc` of the terms' B.
pub(super) fn b_slab(
    terms: &[Term],
    pc: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    out: &mut Vec<f32>,
) {
    let panels = nc.div_ceil(NR);
    sized(out, panels * kc * NR);
    for (jp, panel) in out.chunks_exact_mut(kc * NR).enumerate() {
        let c0 = j0 + jp * NR;
        let cols = NR.min(j0 + nc - c0);
        for (t, p0, len, d) in pieces(terms, pc, kc) {
            b_piece(&t.b, c0, cols, p0, len, &mut panel[d * NR..(d + len) * NR]);
        }
        if cols < NR {
            for p in 0..kc {
                panel[p * NR + cols..(p + 1) * NR].fill(0.0);
            }
        }
    }
}

fn b_piece(b: &Operand, c0: usize, cols: usize, p0: usize, len: usize, panel: &mut [f32]) {
    if b.cs == 1 {
        for p in 0..len {
            let src = &b.data[(p0 + p) * b.rs + c0..][..cols];
            panel[p * NR..p * NR + cols].copy_from_slice(src);
        }
    } else if b.rs == 1 {
        // stored transposed (the filter gradient's columns): each column's
        // depth run is contiguous
        let srcs: [&[f32]; NR] = std::array::from_fn(|c| {
            if c < cols {
                &b.data[(c0 + c) * b.cs + p0..][..len]
            } else {
                &[]
            }
        });
        transpose_into::<NR>(&srcs[..cols], len, panel);
    } else {
        for p in 0..len {
            for c in 0..cols {
                panel[p * NR + c] = b.data[(p0 + p) * b.rs + (c0 + c) * b.cs];
            }
        }
    }
}

/// `panel[p·W + r] = srcs[r][p]` for p < len, r < srcs.len() ≤ W: runs of
/// the sources written across the panel. Blocks of 16 depth steps keep the
/// reads sequential per source and the writes within a few cache lines.
fn transpose_into<const W: usize>(srcs: &[&[f32]], len: usize, panel: &mut [f32]) {
    const B: usize = 16;
    let panel = &mut panel[..len * W];
    let mut p0 = 0;
    while p0 < len {
        let n = B.min(len - p0);
        let block = &mut panel[p0 * W..(p0 + n) * W];
        for (r, src) in srcs.iter().enumerate() {
            let run = &src[p0..p0 + n];
            for (row, &v) in block.chunks_exact_mut(W).zip(run) {
                row[r] = v;
            }
        }
        p0 += n;
    }
}
