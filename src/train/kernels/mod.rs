//! CPU kernels as candle custom ops, where candle 0.11 is slow (conv input
//! gradients go through conv-transpose) or wrong (max-pool backward is
//! scaled by 1/(k·k) and refused when kernel ≠ stride). On other devices
//! the lowering uses candle's own ops, so these never close the GPU path.

pub mod batchnorm;
pub mod bn_chain;
pub mod channel;
pub mod conv;
pub mod depthwise;
pub mod direct3x3;
pub mod im2col;
pub mod maxpool;
pub mod profile;
pub mod sgemm;
pub mod slice;

/// Geometry of a 2-D sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub dh: usize,
    pub dw: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geometry {
    /// A 1×1 convolution with stride 1 and no padding: an image [C, H·W]
    /// is already its own column matrix (bottlenecks' 1×1 convs).
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.sh == 1
            && self.sw == 1
            && self.ph == 0
            && self.pw == 0
            && (self.oh, self.ow) == (self.h, self.w)
    }

    /// `pads` are [top, left, bottom, right] as in ONNX.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c: usize,
        h: usize,
        w: usize,
        k: [usize; 2],
        s: [usize; 2],
        pads: [usize; 4],
        d: [usize; 2],
    ) -> Self {
        let oh = (h + pads[0] + pads[2] - d[0] * (k[0] - 1) - 1) / s[0] + 1;
        let ow = (w + pads[1] + pads[3] - d[1] * (k[1] - 1) - 1) / s[1] + 1;
        Geometry {
            c,
            h,
            w,
            kh: k[0],
            kw: k[1],
            sh: s[0],
            sw: s[1],
            ph: pads[0],
            pw: pads[1],
            dh: d[0],
            dw: d[1],
            oh,
            ow,
        }
    }

    /// Input row for output row `oy` and kernel row `ky`, if inside.
    #[inline]
    pub fn iy(&self, oy: usize, ky: usize) -> Option<usize> {
        let y = (oy * self.sh + ky * self.dh) as isize - self.ph as isize;
        (y >= 0 && (y as usize) < self.h).then_some(y as usize)
    }

    #[inline]
    pub fn ix(&self, ox: usize, kx: usize) -> Option<usize> {
        let x = (ox * self.sw + kx * self.dw) as isize - self.pw as isize;
        (x >= 0 && (x as usize) < self.w).then_some(x as usize)
    }
}

/// Element types the kernels run on: f32 for training, f64 for the
/// finite-difference gradient checks.
pub trait Elem:
    candle_core::WithDType
    + Copy
    + Default
    + Send
    + Sync
    + std::ops::AddAssign
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + PartialOrd
{
    fn neg_infinity() -> Self;
    fn is_nan(self) -> bool;
    /// The slice as f32 when that is the type (for the f32-only kernels).
    fn as_f32(s: &[Self]) -> Option<&[f32]>;
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]>;
}

macro_rules! elem {
    ($t:ty, $as_f32:expr, $as_f32_mut:expr) => {
        impl Elem for $t {
            fn neg_infinity() -> Self {
                <$t>::NEG_INFINITY
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn as_f32(s: &[Self]) -> Option<&[f32]> {
                $as_f32(s)
            }
            fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]> {
                $as_f32_mut(s)
            }
        }
    };
}
elem!(f32, Some, Some);
elem!(f64, |_| None, |_| None);

/// Independent partial sums per reduction: enough that the adds of
/// consecutive elements do not wait on each other and the loop vectorises.
const LANES: usize = 16;

/// Σ f(aᵢ, bᵢ) over equal-length slices, accumulated in `T` across
/// [`LANES`] partial sums (a plane is at most a few thousand elements, so
/// f32 partials lose nothing that matters) and returned as f64 for the
/// cross-plane totals.
#[inline]
pub(crate) fn sum_pairs<T: Elem>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> f64 {
    let mut acc = [T::default(); LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..LANES {
            acc[i] += f(x[i], y[i]);
        }
    }
    let mut total: f64 = acc.iter().map(|v| v.to_f64()).sum();
    for (&x, &y) in ar.iter().zip(br) {
        total += f(x, y).to_f64();
    }
    total
}

/// Row-major `dst[m×n] (+)= op(lhs)[m×k] · op(rhs)[k×n]` on one thread, where
/// `op` transposes when asked (the operand is then stored k×m / n×k).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_rm<T: Elem>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    lhs: &[T],
    lhs_t: bool,
    rhs: &[T],
    rhs_t: bool,
    accumulate: bool,
) {
    assert!(dst.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n);
    if sgemm::suits(m) {
        if let (Some(l), Some(r)) = (T::as_f32(lhs), T::as_f32(rhs)) {
            if let Some(d) = T::as_f32_mut(dst) {
                let (a, b) = (
                    sgemm::Operand::new(l, m, k, lhs_t),
                    sgemm::Operand::new(r, k, n, rhs_t),
                );
                sgemm::sgemm(m, n, k, d, a, b, accumulate);
                return;
            }
        }
    }
    let (lrs, lcs) = if lhs_t {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (rrs, rcs) = if rhs_t {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    // SAFETY: the slices hold at least the m×n, m×k and k×n elements the
    // strides above address (checked by the assert).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lcs,
            lrs,
            rhs.as_ptr(),
            rcs,
            rrs,
            T::from_f64(1.0),
            T::from_f64(1.0),
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// A new vector of `len` elements built in parallel, chunk `i` (of `chunk`
/// elements, the last may be shorter) from the values of `f(i)`, without
/// the zero-fill pass `vec![0; len]` would cost (one more write of every
/// output byte in kernels that are memory-bound).
pub(crate) fn par_build<T, I, F>(len: usize, chunk: usize, f: F) -> Vec<T>
where
    T: Elem,
    I: ExactSizeIterator<Item = T>,
    F: Fn(usize) -> I + Sync + Send,
{
    use rayon::prelude::*;
    let mut v: Vec<T> = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, out)| {
            let values = f(i);
            assert!(values.len() >= out.len(), "kernel chunk {i} is short");
            for (d, x) in out.iter_mut().zip(values) {
                d.write(x);
            }
        });
    // SAFETY: every chunk was written in full (the assert above holds for
    // each, and a panic there propagates before this line).
    unsafe { v.set_len(len) };
    v
}

/// (N, C, H·W…) of an [N, C, ...] layout.
pub(crate) fn nchw(l: &candle_core::Layout) -> (usize, usize, usize) {
    let d = l.dims();
    (d[0], d[1], d[2..].iter().product())
}

/// A contiguous view of a custom op's input.
pub(crate) fn contiguous<'a, T: Elem>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
) -> candle_core::Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("sss-onnx kernels need contiguous input"),
    }
}

/// Runs `$f::<T>` for the storage's element type (f32 or f64), timed under
/// the op's name when profiling is on.
macro_rules! dispatch {
    ($op:expr, $s:expr, $f:ident ( $($arg:expr),* )) => {
        $crate::train::kernels::profile::timed(
            || $op, || match $s {
            candle_core::CpuStorage::F32(_) => $f::<f32>($($arg),*),
            candle_core::CpuStorage::F64(_) => $f::<f64>($($arg),*),
            _ => candle_core::bail!("sss-onnx kernels support f32 and f64"),
        })
    };
}
pub(crate) use dispatch;

/// A candle custom op whose CPU forward runs `$f::<T>` for the element
/// type (through `dispatch!`): the op's name, its forward's storages and
/// call, and, when it has one, its backward as written for candle's trait.
/// `$me` is `self`, passed in so the caller's expressions can use it.
macro_rules! custom_op {
    (
        $tr:ident for $t:ty {
            name(&$me:ident) $name:block
            fwd($s1:ident: $l1:ident $(, $s:ident: $l:ident)*) => $f:ident($($a:expr),* $(,)?);
            $($bwd:item)?
        }
    ) => {
        impl candle_core::$tr for $t {
            fn name(&$me) -> &'static str $name

            fn cpu_fwd(
                &$me,
                $s1: &candle_core::CpuStorage,
                $l1: &candle_core::Layout,
                $($s: &candle_core::CpuStorage, $l: &candle_core::Layout),*
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                $crate::train::kernels::dispatch!($me.name(), $s1, $f($($a),*))
            }

            $($bwd)?
        }
    };
}
pub(crate) use custom_op;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_build_writes_every_chunk_in_order() {
        // 10 elements in chunks of 4: the last chunk is short
        let v: Vec<f32> = par_build(10, 4, |i| (0..4).map(move |j| (i * 10 + j) as f32));
        assert_eq!(v, [0., 1., 2., 3., 10., 11., 12., 13., 20., 21.].to_vec());
    }

    #[test]
    #[should_panic(expected = "short")]
    fn par_build_refuses_a_short_chunk() {
        let _: Vec<f32> = par_build(8, 4, |i| (0..if i == 1 { 3 } else { 4 }).map(|j| j as f32));
    }

    #[test]
    fn sum_pairs_covers_lanes_and_remainder() {
        // 37 = 2 full lane blocks + 5: Σ i·(i+1) for i ≤ 36 = 36·37·38/3
        let a: Vec<f64> = (0..37).map(|i| i as f64).collect();
        let b: Vec<f64> = (0..37).map(|i| (i + 1) as f64).collect();
        assert_eq!(sum_pairs(&a, &b, |x, y| x * y), (36 * 37 * 38 / 3) as f64);
        assert_eq!(sum_pairs(&a[..3], &b[..3], |x, _| x), 3.0);
    }
}
