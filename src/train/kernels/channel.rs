//! Per-channel elementwise ops on [N, C, ...] tensors with single-pass
//! backwards: a per-channel (or scalar) scale — SSS gates — a per-channel
//! bias — conv biases — and ReLU. candle's broadcast forms reduce their
//! gradients over axes (0, 2, 3), a slow strided reduction on CPU.

use super::{contiguous, custom_op, par_build, sum_pairs, Elem};
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// (x [N, C, ...], s [C] or [1]) → x · s[c]; s [N·C] (a
/// squeeze-and-excitation's factors, one per sample and channel) → x ·
/// s[n, c].
pub struct ChannelScale;
/// (x, b [C]) → x + b[c].
pub struct ChannelBias;
/// x → max(x, 0).
pub struct Relu;
/// x → x · σ(x): SiLU.
pub struct Silu;
/// (dy, x) → dy · σ(x) · (1 + x · (1 − σ(x))).
struct SiluGrad;
/// x → min(max(x, lo), hi): Clip, ReLU6 as exported.
#[derive(Debug, Clone, Copy)]
pub struct Clamp {
    pub lo: f64,
    pub hi: f64,
}
/// (dy, y) → dy where lo < y < hi.
struct ClampGrad(Clamp);
/// (a, b) → max(a + b, 0): a residual sum and the ReLU after it, one pass
/// forward and one gradient (shared by both inputs) backward.
pub struct AddRelu;

/// (x, dy) → Σ over N and space of x·dy (or of dy when `plain`) per channel.
struct ChannelSum {
    plain: bool,
    channels: usize,
}
/// (dy, y) → dy where y > 0.
struct ReluGrad;

fn plane(l: &Layout) -> (usize, usize) {
    let d = l.dims();
    (d.get(1).copied().unwrap_or(1), d.iter().skip(2).product())
}

fn scale<T: Elem>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    add: bool,
) -> Result<(CpuStorage, Shape)> {
    let (x, p) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
    let (c, hw) = plane(l1);
    let hw = hw.max(1);
    let planes = x.len() / hw;
    let y = par_build(x.len(), hw, |i| {
        let k = p[match p.len() {
            1 => 0,
            n if n == planes && n != c => i,
            _ => i % c,
        }];
        // scale: x·k + 0; bias: x·1 + k
        let (m, a) = if add {
            (T::from_f64(1.0), k)
        } else {
            (k, T::default())
        };
        x[i * hw..(i * hw + hw).min(x.len())]
            .iter()
            .map(move |&v| v * m + a)
    });
    Ok((T::to_cpu_storage_owned(y), l1.shape().clone()))
}

fn channel_sum<T: Elem>(
    op: &ChannelSum,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (x, dy) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
    let (c, hw) = plane(l1);
    let hw = hw.max(1);
    let planes = x.len() / hw;
    if op.channels == planes && planes != c {
        // one sum per sample and channel (per-sample factors)
        let sums: Vec<T> = (0..planes)
            .into_par_iter()
            .map(|p| {
                let r = p * hw..(p + 1) * hw;
                T::from_f64(if op.plain {
                    sum_pairs(&dy[r.clone()], &dy[r], |g, _| g)
                } else {
                    sum_pairs(&x[r.clone()], &dy[r], |a, b| a * b)
                })
            })
            .collect();
        return Ok((T::to_cpu_storage_owned(sums), Shape::from(planes)));
    }
    let sums: Vec<f64> = (0..c)
        .into_par_iter()
        .map(|ch| {
            (ch..planes)
                .step_by(c)
                .map(|p| {
                    let r = p * hw..(p + 1) * hw;
                    if op.plain {
                        sum_pairs(&dy[r.clone()], &dy[r], |g, _| g)
                    } else {
                        sum_pairs(&x[r.clone()], &dy[r], |a, b| a * b)
                    }
                })
                .sum::<f64>()
        })
        .collect();
    let out: Vec<T> = if op.channels == 1 {
        vec![T::from_f64(sums.iter().sum())]
    } else {
        sums.into_iter().map(T::from_f64).collect()
    };
    let n = out.len();
    Ok((T::to_cpu_storage_owned(out), Shape::from(n)))
}

/// Elements per parallel chunk of the flat elementwise kernels.
const CHUNK: usize = 4096;

fn relu<T: Elem>(s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = contiguous::<T>(s, l)?;
    let zero = T::default();
    let y = par_build(x.len(), CHUNK, |i| {
        x[i * CHUNK..(i * CHUNK + CHUNK).min(x.len())]
            .iter()
            .map(move |&v| if v > zero { v } else { zero })
    });
    Ok((T::to_cpu_storage_owned(y), l.shape().clone()))
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// e^x in f32 for x in [-87, 88] (clamped outside), relative error below
/// 3·10⁻⁷ (two or three ulp): 2^n · e^r with |r| ≤ ln2/2 and a degree-6 polynomial, branch
/// free so a loop over it vectorises (f32's `exp` is a libm call per value).
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E).round();
    // r = x − n·ln2 in two parts for precision
    let r = (x - n * 0.693_145_75) - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

fn silu<T: Elem>(s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = contiguous::<T>(s, l)?;
    if let Some(xf) = T::as_f32(x) {
        let y: Vec<f32> = par_build(xf.len(), CHUNK, |i| {
            xf[i * CHUNK..(i * CHUNK + CHUNK).min(xf.len())]
                .iter()
                .map(|&v| v / (1.0 + exp_f32(-v)))
        });
        return Ok((CpuStorage::F32(y), l.shape().clone()));
    }
    let y = par_build(x.len(), CHUNK, |i| {
        x[i * CHUNK..(i * CHUNK + CHUNK).min(x.len())]
            .iter()
            .map(|&v| {
                let v = v.to_f64();
                T::from_f64(v * sigmoid(v))
            })
    });
    Ok((T::to_cpu_storage_owned(y), l.shape().clone()))
}

fn silu_grad<T: Elem>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (dy, x) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
    if let (Some(gf), Some(xf)) = (T::as_f32(dy), T::as_f32(x)) {
        let dx: Vec<f32> = par_build(gf.len(), CHUNK, |i| {
            let r = i * CHUNK..(i * CHUNK + CHUNK).min(gf.len());
            gf[r.clone()].iter().zip(&xf[r]).map(|(&g, &v)| {
                let s = 1.0 / (1.0 + exp_f32(-v));
                g * s * (1.0 + v * (1.0 - s))
            })
        });
        return Ok((CpuStorage::F32(dx), l1.shape().clone()));
    }
    let dx = par_build(dy.len(), CHUNK, |i| {
        let r = i * CHUNK..(i * CHUNK + CHUNK).min(dy.len());
        dy[r.clone()].iter().zip(&x[r]).map(|(&g, &v)| {
            let v = v.to_f64();
            let s = sigmoid(v);
            T::from_f64(g.to_f64() * s * (1.0 + v * (1.0 - s)))
        })
    });
    Ok((T::to_cpu_storage_owned(dx), l1.shape().clone()))
}

fn clamp<T: Elem>(op: &Clamp, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = contiguous::<T>(s, l)?;
    let (lo, hi) = (T::from_f64(op.lo), T::from_f64(op.hi));
    let y = par_build(x.len(), CHUNK, |i| {
        x[i * CHUNK..(i * CHUNK + CHUNK).min(x.len())]
            .iter()
            .map(move |&v| {
                if v < lo {
                    lo
                } else if v > hi {
                    hi
                } else {
                    v
                }
            })
    });
    Ok((T::to_cpu_storage_owned(y), l.shape().clone()))
}

fn clamp_grad<T: Elem>(
    op: &ClampGrad,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (dy, y) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
    let (lo, hi, zero) = (T::from_f64(op.0.lo), T::from_f64(op.0.hi), T::default());
    let dx = par_build(dy.len(), CHUNK, |i| {
        let r = i * CHUNK..(i * CHUNK + CHUNK).min(dy.len());
        dy[r.clone()]
            .iter()
            .zip(&y[r])
            .map(move |(&g, &y)| if y > lo && y < hi { g } else { zero })
    });
    Ok((T::to_cpu_storage_owned(dx), l1.shape().clone()))
}

fn add_relu<T: Elem>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (a, b) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
    if a.len() != b.len() {
        candle_core::bail!("sss-add-relu needs equal shapes");
    }
    let zero = T::default();
    let y = par_build(a.len(), CHUNK, |i| {
        let r = i * CHUNK..(i * CHUNK + CHUNK).min(a.len());
        a[r.clone()].iter().zip(&b[r]).map(move |(&u, &v)| {
            let s = u + v;
            if s > zero {
                s
            } else {
                zero
            }
        })
    });
    Ok((T::to_cpu_storage_owned(y), l1.shape().clone()))
}

fn relu_grad<T: Elem>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (dy, y) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
    let zero = T::default();
    let dx = par_build(dy.len(), CHUNK, |i| {
        let r = i * CHUNK..(i * CHUNK + CHUNK).min(dy.len());
        dy[r.clone()]
            .iter()
            .zip(&y[r])
            .map(move |(&g, &y)| if y > zero { g } else { zero })
    });
    Ok((T::to_cpu_storage_owned(dx), l1.shape().clone()))
}

custom_op!(CustomOp2 for ChannelScale {
    name(&self) {
        "sss-channel-scale"
    }
    fwd(s1: l1, s2: l2) => scale(s1, l1, s2, l2, false);

    fn bwd(
        &self,
        x: &Tensor,
        s: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = dy.apply_op2_no_bwd(s, &ChannelScale)?;
        let ds = x.contiguous()?.apply_op2_no_bwd(
            &dy,
            &ChannelSum {
                plain: false,
                channels: s.elem_count(),
            },
        )?;
        Ok((Some(dx), Some(ds.reshape(s.shape())?)))
    }
});

custom_op!(CustomOp2 for ChannelBias {
    name(&self) {
        "sss-channel-bias"
    }
    fwd(s1: l1, s2: l2) => scale(s1, l1, s2, l2, true);

    fn bwd(
        &self,
        _x: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let db = dy.apply_op2_no_bwd(
            &dy,
            &ChannelSum {
                plain: true,
                channels: b.elem_count(),
            },
        )?;
        Ok((Some(dy), Some(db.reshape(b.shape())?)))
    }
});

custom_op!(CustomOp2 for ChannelSum {
    name(&self) {
        "sss-channel-sum"
    }
    fwd(s1: l1, s2: l2) => channel_sum(self, s1, l1, s2, l2);
});

custom_op!(CustomOp1 for Relu {
    name(&self) {
        "sss-relu"
    }
    fwd(s: l) => relu(s, l);

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            dy.contiguous()?
                .apply_op2_no_bwd(&y.contiguous()?, &ReluGrad)?,
        ))
    }
});

custom_op!(CustomOp1 for Silu {
    name(&self) {
        "sss-silu"
    }
    fwd(s: l) => silu(s, l);

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            dy.contiguous()?
                .apply_op2_no_bwd(&x.contiguous()?, &SiluGrad)?,
        ))
    }
});

custom_op!(CustomOp2 for SiluGrad {
    name(&self) {
        "sss-silu-grad"
    }
    fwd(s1: l1, s2: l2) => silu_grad(s1, l1, s2, l2);
});

custom_op!(CustomOp1 for Clamp {
    name(&self) {
        "sss-clamp"
    }
    fwd(s: l) => clamp(self, s, l);

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            dy.contiguous()?
                .apply_op2_no_bwd(&y.contiguous()?, &ClampGrad(*self))?,
        ))
    }
});

custom_op!(CustomOp2 for ClampGrad {
    name(&self) {
        "sss-clamp-grad"
    }
    fwd(s1: l1, s2: l2) => clamp_grad(self, s1, l1, s2, l2);
});

custom_op!(CustomOp2 for AddRelu {
    name(&self) {
        "sss-add-relu"
    }
    fwd(s1: l1, s2: l2) => add_relu(s1, l1, s2, l2);

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = dy
            .contiguous()?
            .apply_op2_no_bwd(&y.contiguous()?, &ReluGrad)?;
        Ok((Some(g.clone()), Some(g)))
    }
});

custom_op!(CustomOp2 for ReluGrad {
    name(&self) {
        "sss-relu-grad"
    }
    fwd(s1: l1, s2: l2) => relu_grad(s1, l1, s2, l2);
});

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn exp_f32_is_within_3e7_of_the_definition() {
        let mut worst = 0f64;
        for i in 0..=175_000 {
            let x = -87.0 + i as f64 * 0.001;
            let got = exp_f32(x as f32) as f64;
            let want = (x as f32 as f64).exp();
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "{worst}");
        // beyond the range: clamped, finite
        assert!(exp_f32(-1000.0) > 0.0 && exp_f32(1000.0).is_finite());
    }

    #[test]
    fn silu_in_f32_matches_the_f64_definition_forward_and_back() {
        let v: Vec<f32> = (0..9000).map(|i| (i as f32 - 4500.0) * 0.004).collect();
        let x = Tensor::from_vec(v.clone(), v.len(), &Device::Cpu).unwrap();
        let y: Vec<f32> = x.apply_op1_no_bwd(&Silu).unwrap().to_vec1().unwrap();
        let g = Tensor::ones(v.len(), candle_core::DType::F32, &Device::Cpu).unwrap();
        let d: Vec<f32> = g
            .apply_op2_no_bwd(&x, &SiluGrad)
            .unwrap()
            .to_vec1()
            .unwrap();
        for (i, &a) in v.iter().enumerate() {
            let a = a as f64;
            let s = 1.0 / (1.0 + (-a).exp());
            assert!(
                (y[i] as f64 - a * s).abs() <= 1e-6 * (1.0 + (a * s).abs()),
                "{a}"
            );
            let want = s * (1.0 + a * (1.0 - s));
            assert!(
                (d[i] as f64 - want).abs() <= 1e-6,
                "{a}: {} vs {want}",
                d[i]
            );
        }
    }

    #[test]
    fn per_sample_channel_scale_matches_broadcast_mul_and_its_gradients() {
        let (n, c, h, w) = (3, 4, 5, 2);
        let xs: Vec<f64> = (0..n * c * h * w)
            .map(|i| ((i * 37) % 23) as f64 / 7.0 - 1.5)
            .collect();
        let ss: Vec<f64> = (0..n * c)
            .map(|i| ((i * 11) % 7) as f64 / 3.0 - 0.8)
            .collect();
        let x =
            Var::from_tensor(&Tensor::from_vec(xs, (n, c, h, w), &Device::Cpu).unwrap()).unwrap();
        let s =
            Var::from_tensor(&Tensor::from_vec(ss, (n, c, 1, 1), &Device::Cpu).unwrap()).unwrap();
        let r = Tensor::arange(0f64, (n * c * h * w) as f64, &Device::Cpu)
            .unwrap()
            .reshape((n, c, h, w))
            .unwrap()
            .sin()
            .unwrap();
        let reference = x.broadcast_mul(&s).unwrap();
        let ours = x
            .apply_op2(&s.flatten_all().unwrap(), ChannelScale)
            .unwrap();
        let diff = (&reference - &ours)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-12);
        let ga = (reference * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gb = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &s] {
            let (a, b) = (
                ga.get(v.as_tensor()).unwrap(),
                gb.get(v.as_tensor()).unwrap(),
            );
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f64>().unwrap() < 1e-12, "{:?}", v.dims());
        }
    }
}
