//! Single-precision GEMM with an AVX-512 micro-kernel, for the im2col and
//! pointwise convolutions of ImageNet-size ResNets. The `gemm` crate picks
//! its AVX2 kernel on AVX-512 machines, which leaves half of each FMA unit
//! idle; this one keeps a 14×32 tile of C in 28 zmm registers.
//!
//! The structure is the usual one for cache-blocked GEMM: B is packed in
//! slabs of `KC` rows × `NC` columns, cut into `NR`-wide panels (a panel
//! stays in L1 while the tiles below it pass); A in blocks of `MC` rows ×
//! `KC` columns (L2), cut into `MR`-row panels. Edges are padded with zeros
//! in the packed copies and masked at the store, so the kernel has one
//! shape. Packing also absorbs the transposes the convolution's backward
//! asks for. One thread per call: the callers run images in parallel.

#[cfg(target_arch = "x86_64")]
mod avx512;
mod pack;

use std::cell::RefCell;
use std::sync::OnceLock;

/// Rows of C per register tile.
pub const MR: usize = 14;
/// Columns of C per register tile (two 16-lane vectors).
pub const NR: usize = 32;
/// Depth of a packed slab: a B panel (`KC`·`NR` floats, 32 KiB) in L1.
pub const KC: usize = 256;
/// Rows of A per packed block (`MC`·`KC` floats, 168 KiB) in L2.
const MC: usize = MR * 12;
/// Columns of B per packed slab.
const NC: usize = NR * 128;

/// Whether this CPU runs the AVX-512 kernel (and `SSS_ONNX_KERNELS` does
/// not ask for the `gemm` crate's).
pub fn available() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        let off = matches!(
            std::env::var("SSS_ONNX_KERNELS").as_deref(),
            Ok("avx2") | Ok("gemm-crate")
        );
        #[cfg(target_arch = "x86_64")]
        {
            !off && std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = off;
            false
        }
    })
}

/// Whether a product of `m` rows should take this kernel: it is on this
/// CPU and the 14-row tiles are mostly filled. At 4 or 8 rows (one group
/// of ResNeXt's grouped convs) most of a tile would be padding and the
/// `gemm` crate's narrower tiles do better (benches/sgemm.rs).
pub fn suits(m: usize) -> bool {
    m > 8 && available()
}

/// A matrix operand in row-major storage, possibly transposed: element
/// (i, j) of the operand is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Operand<'a> {
    /// The side of a term a packed operand replaces (never read).
    const UNUSED: Operand<'static> = Operand {
        data: &[],
        rs: 0,
        cs: 0,
    };

    /// `rows × cols` stored row-major, or its transpose (stored cols × rows)
    /// when `transposed`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, transposed: bool) -> Self {
        if transposed {
            Operand {
                data,
                rs: 1,
                cs: rows,
            }
        } else {
            Operand {
                data,
                rs: cols,
                cs: 1,
            }
        }
    }
}

/// One term of a sum of products along the depth: `a` is m × k, `b` is
/// k × n. Several terms make one product whose depth is their
/// concatenation (the filter gradient summed over images), so short depths
/// share a slab and C is loaded and stored once per slab, not per term.
#[derive(Clone, Copy)]
pub struct Term<'a> {
    pub a: Operand<'a>,
    pub b: Operand<'a>,
    pub k: usize,
}

/// A left operand packed once for many products with the same A (a conv's
/// weights against every image of a batch): the panels of every depth slab
/// in the order [`sgemm_packed`] reads them.
pub struct PackedA {
    m: usize,
    k: usize,
    data: Vec<f32>,
}

impl PackedA {
    pub fn new(m: usize, k: usize, a: Operand) -> Self {
        let terms = [Term {
            a,
            b: Operand::UNUSED,
            k,
        }];
        let mut data = Vec::with_capacity(m.div_ceil(MR) * MR * k);
        let mut buf = Vec::new();
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            pack::a_block(&terms, 0, m, pc, kc, &mut buf);
            data.extend_from_slice(&buf);
        }
        PackedA { m, k, data }
    }

    /// The panels of rows `ic..ic+mc` (ic a multiple of MR) for the slab at
    /// depth `pc` (a multiple of KC) of depth `kc`.
    fn block(&self, pc: usize, kc: usize, ic: usize, mc: usize) -> &[f32] {
        let slab = self.m.div_ceil(MR) * MR * pc;
        let start = slab + ic * kc;
        &self.data[start..start + mc.div_ceil(MR) * MR * kc]
    }
}

/// Where the left operand's panels come from.
enum Lhs<'a> {
    Terms(&'a [Term<'a>]),
    Packed(&'a PackedA),
}

thread_local! {
    /// Packing buffers, reused across calls on this thread (A block, B slab).
    static BUFFERS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `dst[m×n] (+)= a[m×k] · b[k×n]`, dst row-major with row stride n.
/// Panics if the operands are too short for their shapes (callers' bug);
/// call only where [`available`] is true.
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    a: Operand,
    b: Operand,
    accumulate: bool,
) {
    sgemm_sum(m, n, dst, &[Term { a, b, k }], accumulate)
}

/// `dst[m×n] (+)= Σ a·b` over the terms.
pub fn sgemm_sum(m: usize, n: usize, dst: &mut [f32], terms: &[Term], accumulate: bool) {
    for t in terms {
        check(m, n, t.k, &t.a, &t.b);
    }
    let k = terms.iter().map(|t| t.k).sum();
    drive(
        m,
        n,
        k,
        dst.as_mut_ptr(),
        dst.len(),
        Lhs::Terms(terms),
        terms,
        accumulate,
    )
}

/// `dst[m×n] (+)= a · b[k×n]` with A packed beforehand.
pub fn sgemm_packed(n: usize, dst: &mut [f32], a: &PackedA, b: Operand, accumulate: bool) {
    let (m, k) = (a.m, a.k);
    let terms = [Term {
        a: Operand::UNUSED,
        b,
        k,
    }];
    check(0, n, k, &terms[0].a, &b);
    drive(
        m,
        n,
        k,
        dst.as_mut_ptr(),
        dst.len(),
        Lhs::Packed(a),
        &terms,
        accumulate,
    )
}

/// The operands must hold the elements their shapes address (m = 0 skips A).
fn check(m: usize, n: usize, k: usize, a: &Operand, b: &Operand) {
    if k == 0 {
        return;
    }
    if m > 0 {
        assert!(
            a.data.len() > (m - 1) * a.rs + (k - 1) * a.cs,
            "sgemm: lhs too short"
        );
    }
    if n > 0 {
        assert!(
            b.data.len() > (k - 1) * b.rs + (n - 1) * b.cs,
            "sgemm: rhs too short"
        );
    }
}

/// `dst[m×n] = a · b` with A packed, into memory never written before
/// (an output buffer left unzeroed): every element is stored once before
/// any is read.
pub fn sgemm_packed_uninit(
    n: usize,
    dst: &mut [std::mem::MaybeUninit<f32>],
    a: &PackedA,
    b: Operand,
) {
    let (m, k) = (a.m, a.k);
    let terms = [Term {
        a: Operand::UNUSED,
        b,
        k,
    }];
    check(0, n, k, &terms[0].a, &b);
    let (ptr, len) = (dst.as_mut_ptr().cast::<f32>(), dst.len());
    drive(m, n, k, ptr, len, Lhs::Packed(a), &terms, false)
}

/// The blocked product into `dst` (`len` floats). Without `accumulate`
/// the first depth slab stores every element of C before later slabs read
/// them, so `dst` may start uninitialised.
#[allow(clippy::too_many_arguments)]
fn drive(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    len: usize,
    lhs: Lhs,
    terms: &[Term],
    accumulate: bool,
) {
    assert!(available(), "sgemm called without AVX-512");
    assert!(len >= m * n, "sgemm: dst too short");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            // SAFETY: dst holds len ≥ m·n floats (asserted above)
            unsafe { std::ptr::write_bytes(dst, 0, m * n) };
        }
        return;
    }
    BUFFERS.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (pa, pb) = &mut *bufs;
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                pack::b_slab(terms, pc, kc, jc, nc, pb);
                // the first slab overwrites C unless the caller accumulates
                let add = accumulate || pc > 0;
                for ic in (0..m).step_by(MC) {
                    let mc = MC.min(m - ic);
                    let block: &[f32] = match lhs {
                        Lhs::Terms(terms) => {
                            pack::a_block(terms, ic, mc, pc, kc, pa);
                            pa
                        }
                        Lhs::Packed(p) => p.block(pc, kc, ic, mc),
                    };
                    for (jp, bp) in pb.chunks_exact(kc * NR).enumerate() {
                        let j0 = jc + jp * NR;
                        let cols = NR.min(n - j0);
                        for (ip, ap) in block.chunks_exact(kc * MR).enumerate() {
                            let i0 = ic + ip * MR;
                            let rows = MR.min(m - i0);
                            // SAFETY: the tile (i0.., j0..) of rows × cols
                            // lies inside dst (m × n, checked above); the
                            // panels hold kc·MR and kc·NR floats.
                            #[cfg(target_arch = "x86_64")]
                            unsafe {
                                avx512::tile(
                                    kc,
                                    ap.as_ptr(),
                                    bp.as_ptr(),
                                    dst.add(i0 * n + j0),
                                    n,
                                    rows,
                                    cols,
                                    add,
                                )
                            }
                        }
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(m: usize, n: usize, k: usize, a: Operand, b: Operand) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    c[i * n + j] +=
                        a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
                }
            }
        }
        c
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// Every combination of transposes and accumulation, on shapes with
    /// partial tiles in each dimension and more than one block of each of
    /// MC, KC and NC, against an f64 product.
    #[test]
    fn matches_the_definition() {
        if !available() {
            eprintln!("no AVX-512 here: the sgemm kernel is not exercised");
            return;
        }
        let shapes = [
            (1, 1, 1),
            (14, 32, 7),
            (13, 31, 5),
            (15, 33, 300),
            (MC + 3, 49, KC + 1),
            (64, NC + 17, 9),
            (29, 70, 2 * KC + 5),
        ];
        for &(m, n, k) in &shapes {
            for at in [false, true] {
                for bt in [false, true] {
                    for acc in [false, true] {
                        let (av, bv) = (values(m * k, 1), values(k * n, 2));
                        let (a, b) = (Operand::new(&av, m, k, at), Operand::new(&bv, k, n, bt));
                        let start = values(m * n, 3);
                        let mut c = start.clone();
                        sgemm(m, n, k, &mut c, a, b, acc);
                        let want = reference(m, n, k, a, b);
                        for (i, (&got, w)) in c.iter().zip(want).enumerate() {
                            let w = w + if acc { start[i] as f64 } else { 0.0 };
                            let tol = 1e-5 * (k as f64).sqrt() * 4.0 + 1e-6;
                            assert!(
                                (got as f64 - w).abs() <= tol,
                                "{m}×{n}×{k} at={at} bt={bt} acc={acc} [{i}]: {got} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Terms of unequal depths (one crossing a slab boundary) against the
    /// sum of their products; a packed A against the same product unpacked.
    #[test]
    fn sums_of_terms_and_packed_lhs() {
        if !available() {
            return;
        }
        let (m, n) = (31, 45);
        let depths = [49, 300, 7, 49];
        let av: Vec<Vec<f32>> = depths
            .iter()
            .enumerate()
            .map(|(i, &k)| values(m * k, 10 + i as u64))
            .collect();
        let bv: Vec<Vec<f32>> = depths
            .iter()
            .enumerate()
            .map(|(i, &k)| values(k * n, 20 + i as u64))
            .collect();
        let terms: Vec<Term> = depths
            .iter()
            .enumerate()
            .map(|(i, &k)| Term {
                a: Operand::new(&av[i], m, k, false),
                b: Operand::new(&bv[i], k, n, true),
                k,
            })
            .collect();
        let start = values(m * n, 5);
        let mut c = start.clone();
        sgemm_sum(m, n, &mut c, &terms, true);
        let mut want: Vec<f64> = start.iter().map(|&v| v as f64).collect();
        for t in &terms {
            for (w, r) in want.iter_mut().zip(reference(m, n, t.k, t.a, t.b)) {
                *w += r;
            }
        }
        for (i, (&got, w)) in c.iter().zip(&want).enumerate() {
            assert!((got as f64 - w).abs() < 1e-4, "[{i}] {got} vs {w}");
        }
        for (m, k) in [(MC + 20, 2 * KC + 3), (5, 9)] {
            for at in [false, true] {
                let (av, bv) = (values(m * k, 7), values(k * n, 8));
                let a = Operand::new(&av, m, k, at);
                let b = Operand::new(&bv, k, n, false);
                let packed = PackedA::new(m, k, a);
                let (mut c1, mut c2) = (vec![0f32; m * n], vec![0f32; m * n]);
                sgemm_packed(n, &mut c1, &packed, b, false);
                sgemm(m, n, k, &mut c2, a, b, false);
                assert_eq!(c1, c2, "packed A {m}×{k} at={at}");
            }
        }
    }

    #[test]
    fn empty_depth_clears_or_keeps() {
        if !available() {
            return;
        }
        let mut c = vec![3f32; 6];
        let e: [f32; 0] = [];
        sgemm(
            2,
            3,
            0,
            &mut c,
            Operand::new(&e, 2, 0, false),
            Operand::new(&e, 0, 3, false),
            true,
        );
        assert_eq!(c, vec![3.0; 6]);
        sgemm(
            2,
            3,
            0,
            &mut c,
            Operand::new(&e, 2, 0, false),
            Operand::new(&e, 0, 3, false),
            false,
        );
        assert_eq!(c, vec![0.0; 6]);
    }
}
