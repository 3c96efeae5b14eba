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

/// `panel[p·W + r] = srcs[r][p]` for p < len, r < srcs.len() ≤ W (each
/// source at least len long).
fn transpose_into<const W: usize>(srcs: &[&[f32]], len: usize, panel: &mut [f32]) {
    let panel = &mut panel[..len * W];
    assert!(srcs.len() <= W && srcs.iter().all(|s| s.len() >= len));
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: `available` checked AVX-512F; the asserts above bound
        // every load (len of each source) and store (len·W of the panel).
        unsafe { transpose_avx512::<W>(srcs, len, panel) };
        return;
    }
    transpose_scalar::<W>(srcs, len, panel)
}

/// [`transpose_into`] a value at a time: runs of the sources written across
/// the panel, blocks of 16 depth steps keeping the reads sequential per
/// source and the writes within a few cache lines.
fn transpose_scalar<const W: usize>(srcs: &[&[f32]], len: usize, panel: &mut [f32]) {
    const B: usize = 16;
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

/// [`transpose_into`] 16 sources × 16 depth steps at a time through the
/// registers: 64 shuffles and 16 stores instead of 256 single-value
/// stores. It matters where a product is small next to its operands (the
/// filter gradient of grouped convolutions: 8 rows a group).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_avx512<const W: usize>(srcs: &[&[f32]], len: usize, panel: &mut [f32]) {
    use std::arch::x86_64::*;
    let rows = srcs.len();
    let out = panel.as_mut_ptr();
    let mut p0 = 0;
    while p0 < len {
        let n = 16.min(len - p0);
        let depth = ((1u32 << n) - 1) as u16;
        let mut r0 = 0;
        while r0 < rows {
            let g = 16.min(rows - r0);
            let mut v = [_mm512_setzero_ps(); 16];
            for (r, v) in v.iter_mut().enumerate().take(g) {
                *v = _mm512_maskz_loadu_ps(depth, srcs[r0 + r].as_ptr().add(p0));
            }
            let v = transpose16(v);
            let lanes = ((1u32 << g) - 1) as u16;
            for (p, v) in v.iter().enumerate().take(n) {
                _mm512_mask_storeu_ps(out.add((p0 + p) * W + r0), lanes, *v);
            }
            r0 += 16;
        }
        p0 += n;
    }
}

/// The 16×16 transpose of `r` (r[i] lane e becomes out[e] lane i): pairs
/// of values, then of pairs, within 128-bit lanes; then two rounds of
/// 128-bit lane shuffles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(r: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    // t[2i], t[2i+1]: rows 2i and 2i+1 interleaved, elements 4k, 4k+1 and
    // 4k+2, 4k+3 of lane k
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // u[4i + j] lane k: element 4k + j of rows 4i..4i+4
    let u: [__m512; 16] = std::array::from_fn(|q| {
        let (i, j) = (q / 4, q % 4);
        let (a, b) = (
            _mm512_castps_pd(t[4 * i + j / 2]),
            _mm512_castps_pd(t[4 * i + 2 + j / 2]),
        );
        _mm512_castpd_ps(if j % 2 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        })
    });
    // out[4k + j] lane m: u[4m + j] lane k
    let mut out = [_mm512_setzero_ps(); 16];
    for j in 0..4 {
        let s0 = _mm512_shuffle_f32x4::<0x88>(u[j], u[4 + j]);
        let s1 = _mm512_shuffle_f32x4::<0xdd>(u[j], u[4 + j]);
        let s2 = _mm512_shuffle_f32x4::<0x88>(u[8 + j], u[12 + j]);
        let s3 = _mm512_shuffle_f32x4::<0xdd>(u[8 + j], u[12 + j]);
        out[j] = _mm512_shuffle_f32x4::<0x88>(s0, s2);
        out[8 + j] = _mm512_shuffle_f32x4::<0xdd>(s0, s2);
        out[4 + j] = _mm512_shuffle_f32x4::<0x88>(s1, s3);
        out[12 + j] = _mm512_shuffle_f32x4::<0xdd>(s1, s3);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector transpose against the value-at-a-time one, for panel
    /// widths of the two operands, every source count up to the width and
    /// depths around the 16-step blocks.
    #[test]
    fn transposes_agree() {
        for (w, rows_max) in [
            (super::super::MR, super::super::MR),
            (super::super::NR, super::super::NR),
        ] {
            for rows in 1..=rows_max {
                for len in [1, 5, 15, 16, 17, 33, 50] {
                    let data: Vec<Vec<f32>> = (0..rows)
                        .map(|r| (0..len + 3).map(|p| (r * 1000 + p) as f32).collect())
                        .collect();
                    let srcs: Vec<&[f32]> = data.iter().map(|d| &d[..]).collect();
                    let mut want = vec![-1f32; len * w + 7];
                    let mut got = want.clone();
                    match w {
                        super::super::MR => {
                            transpose_scalar::<{ super::super::MR }>(&srcs, len, &mut want);
                            transpose_into::<{ super::super::MR }>(&srcs, len, &mut got);
                        }
                        _ => {
                            transpose_scalar::<{ super::super::NR }>(&srcs, len, &mut want);
                            transpose_into::<{ super::super::NR }>(&srcs, len, &mut got);
                        }
                    }
                    assert_eq!(got, want, "width {w}, {rows} sources, depth {len}");
                    // and the definition, where the panel is written
                    for p in 0..len {
                        for r in 0..rows {
                            assert_eq!(got[p * w + r], (r * 1000 + p) as f32);
                        }
                    }
                }
            }
        }
    }
}
