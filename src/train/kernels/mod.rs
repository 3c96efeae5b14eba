//! CPU kernels as candle custom ops, where candle 0.11 is slow (conv input
//! gradients go through conv-transpose) or wrong (max-pool backward is
//! scaled by 1/(k·k) and refused when kernel ≠ stride). On other devices
//! the lowering uses candle's own ops, so these never close the GPU path.

pub mod batchnorm;
pub mod channel;
pub mod conv;
pub mod im2col;
pub mod maxpool;

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
    candle_core::WithDType + Copy + Default + Send + Sync + std::ops::AddAssign + PartialOrd
{
    fn neg_infinity() -> Self;
    fn is_nan(self) -> bool;
}

macro_rules! elem {
    ($t:ty) => {
        impl Elem for $t {
            fn neg_infinity() -> Self {
                <$t>::NEG_INFINITY
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
        }
    };
}
elem!(f32);
elem!(f64);

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

/// Runs `$f::<T>` for the storage's element type (f32 or f64).
macro_rules! dispatch {
    ($s:expr, $f:ident ( $($arg:expr),* )) => {
        match $s {
            candle_core::CpuStorage::F32(_) => $f::<f32>($($arg),*),
            candle_core::CpuStorage::F64(_) => $f::<f64>($($arg),*),
            _ => candle_core::bail!("sss-onnx kernels support f32 and f64"),
        }
    };
}
pub(crate) use dispatch;
