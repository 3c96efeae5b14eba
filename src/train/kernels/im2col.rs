//! im2col / col2im for one image and a range of channels: the column matrix
//! [C·kh·kw, OH·OW] that turns a convolution into one matrix product, and the
//! scatter-add back that gives the input gradient. Each output row's
//! in-image span is computed once, so the inner loops are plain copies.

use super::{Elem, Geometry};

/// For kernel column `kx`: the output columns `lo..hi` whose tap lies inside
/// the image, and the input column of output column 0 (may be negative).
#[inline]
fn span(g: &Geometry, kx: usize) -> (usize, usize, isize) {
    let off = (kx * g.dw) as isize - g.pw as isize;
    let s = g.sw as isize;
    let lo = if off >= 0 { 0 } else { ((-off) + s - 1) / s };
    let hi = if (g.w as isize) <= off {
        0
    } else {
        ((g.w as isize - 1 - off) / s + 1).min(g.ow as isize)
    };
    let lo = lo.min(hi).max(0) as usize;
    (lo, hi.max(0) as usize, off)
}

/// Writes the columns of channels `c0..c0+cn` of one image `x` ([C, H, W])
/// into `out` ([cn·kh·kw rows of OH·OW], rows `ld` apart: OH·OW for one
/// image, more when several images' columns sit side by side); out-of-image
/// taps are 0.
pub fn im2col<T: Elem>(g: &Geometry, x: &[T], c0: usize, cn: usize, out: &mut [T], ld: usize) {
    im2col_rows(g, x, c0, cn, 0..g.oh, out, ld)
}

/// `im2col` for the output rows `rows` only: a band of the column matrix
/// ([cn·kh·kw rows of rows.len()·OW], `ld` apart), small enough to stay in
/// cache while a product reads it.
pub fn im2col_rows<T: Elem>(
    g: &Geometry,
    x: &[T],
    c0: usize,
    cn: usize,
    rows: std::ops::Range<usize>,
    out: &mut [T],
    ld: usize,
) {
    let plane = g.h * g.w;
    let zero = T::default();
    for c in 0..cn {
        let xc = &x[(c0 + c) * plane..(c0 + c + 1) * plane];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let (lo, hi, off) = span(g, kx);
                let row = ((c * g.kh + ky) * g.kw + kx) * ld;
                for oy in rows.clone() {
                    let at = row + (oy - rows.start) * g.ow;
                    let dst = &mut out[at..at + g.ow];
                    let Some(iy) = g.iy(oy, ky) else {
                        dst.fill(zero);
                        continue;
                    };
                    let src = &xc[iy * g.w..(iy + 1) * g.w];
                    dst[..lo].fill(zero);
                    dst[hi..].fill(zero);
                    // a tap outside the image for every output column (a
                    // kernel wider than the padded plane) copies nothing
                    if hi <= lo {
                        continue;
                    }
                    if g.sw == 1 {
                        let a = (lo as isize + off) as usize;
                        dst[lo..hi].copy_from_slice(&src[a..a + (hi - lo)]);
                    } else {
                        // every sw-th input value from the one under output
                        // column lo: as fixed-size chunks, so the compiler
                        // turns the gather into vector shuffles
                        let s = g.sw;
                        let a = (lo as isize * s as isize + off) as usize;
                        let (body, last) = dst[lo..hi].split_at_mut(hi - lo - 1);
                        let span = &src[a..a + s * body.len()];
                        for (d, c) in body.iter_mut().zip(span.chunks_exact(s)) {
                            *d = c[0];
                        }
                        last[0] = src[a + s * body.len()];
                    }
                }
            }
        }
    }
}

/// Adds the columns `cols` ([cn·kh·kw rows of OH·OW, `ld` apart]) back
/// onto channels `c0..c0+cn` of one image gradient `dx` ([C, H, W]).
pub fn col2im<T: Elem>(g: &Geometry, cols: &[T], c0: usize, cn: usize, dx: &mut [T], ld: usize) {
    let plane = g.h * g.w;
    for c in 0..cn {
        let xc = &mut dx[(c0 + c) * plane..(c0 + c + 1) * plane];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let (lo, hi, off) = span(g, kx);
                let row = ((c * g.kh + ky) * g.kw + kx) * ld;
                for oy in 0..g.oh {
                    let Some(iy) = g.iy(oy, ky) else { continue };
                    if hi <= lo {
                        continue;
                    }
                    let src = &cols[row + oy * g.ow + lo..row + oy * g.ow + hi];
                    let dst = &mut xc[iy * g.w..(iy + 1) * g.w];
                    if g.sw == 1 {
                        let a = (lo as isize + off) as usize;
                        for (d, &v) in dst[a..a + (hi - lo)].iter_mut().zip(src) {
                            *d += v;
                        }
                    } else {
                        // the scatter-add back, in the same chunked form
                        let s = g.sw;
                        let a = (lo as isize * s as isize + off) as usize;
                        let (body, last) = src.split_at(hi - lo - 1);
                        let span = &mut dst[a..a + s * body.len()];
                        for (c, &v) in span.chunks_exact_mut(s).zip(body) {
                            c[0] += v;
                        }
                        dst[a + s * body.len()] += last[0];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// im2col against the definition (each column entry is the input
    /// under that tap, or 0 outside), and col2im as its adjoint
    /// (⟨im2col x, y⟩ = ⟨x, col2im y⟩), for strides 1–3, padding and
    /// dilation, on a band of rows and on whole images.
    #[test]
    fn columns_match_the_definition_and_col2im_is_their_adjoint() {
        let value = |i: usize| ((i * 7919) % 101) as f64 / 50.0 - 1.0;
        for (k, s, p, d) in [
            (3, 1, 1, 1),
            (3, 2, 1, 1),
            (7, 2, 3, 1),
            (1, 2, 0, 1),
            (3, 3, 2, 2),
            // wider than the plane: taps that never fall inside
            (7, 1, 3, 1),
        ] {
            let (c, h, w) = if k == 7 && s == 1 {
                (2, 2, 2)
            } else {
                (2, 11, 13)
            };
            let g = Geometry::new(c, h, w, [k, k], [s, s], [p; 4], [d, d]);
            let x: Vec<f64> = (0..c * h * w).map(value).collect();
            let ll = g.oh * g.ow;
            let mut cols = vec![9.0; c * k * k * ll];
            im2col(&g, &x, 0, c, &mut cols, ll);
            for ch in 0..c {
                for ky in 0..k {
                    for kx in 0..k {
                        for oy in 0..g.oh {
                            for ox in 0..g.ow {
                                let want = match (g.iy(oy, ky), g.ix(ox, kx)) {
                                    (Some(iy), Some(ix)) => x[(ch * h + iy) * w + ix],
                                    _ => 0.0,
                                };
                                let got = cols[((ch * k + ky) * k + kx) * ll + oy * g.ow + ox];
                                assert_eq!(
                                    got, want,
                                    "k{k} s{s} p{p} d{d} c{ch} tap {ky},{kx} at {oy},{ox}"
                                );
                            }
                        }
                    }
                }
            }
            // a band of output rows writes exactly those rows' columns
            let rows = 1..g.oh.min(3);
            let band = rows.len() * g.ow;
            let mut part = vec![9.0; c * k * k * band];
            im2col_rows(&g, &x, 0, c, rows.clone(), &mut part, band);
            for r in 0..c * k * k {
                let whole = &cols[r * ll + rows.start * g.ow..][..band];
                assert_eq!(&part[r * band..(r + 1) * band], whole, "k{k} s{s} row {r}");
            }
            let y: Vec<f64> = (0..cols.len()).map(|i| value(i + 13)).collect();
            let mut back = vec![0.0; x.len()];
            col2im(&g, &y, 0, c, &mut back, ll);
            let lhs: f64 = cols.iter().zip(&y).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
            assert!(
                (lhs - rhs).abs() < 1e-9,
                "k{k} s{s} p{p} d{d}: {lhs} vs {rhs}"
            );
        }
    }

    /// The span rule against a direct per-tap check, over many geometries.
    #[test]
    fn spans_match_the_definition() {
        for w in 1..9 {
            for k in 1..4 {
                for s in 1..4 {
                    for p in 0..3 {
                        for d in 1..3 {
                            if w + 2 * p < d * (k - 1) + 1 {
                                continue;
                            }
                            let g = Geometry::new(1, 1, w, [1, k], [1, s], [0, p, 0, p], [1, d]);
                            for kx in 0..k {
                                let (lo, hi, _) = span(&g, kx);
                                let inside: Vec<usize> =
                                    (0..g.ow).filter(|&ox| g.ix(ox, kx).is_some()).collect();
                                let got: Vec<usize> = (lo..hi).collect();
                                assert_eq!(got, inside, "w{w} k{k} s{s} p{p} d{d} kx{kx}");
                            }
                        }
                    }
                }
            }
        }
    }
}
