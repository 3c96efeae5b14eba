//! Per-channel elementwise ops on [N, C, ...] tensors with single-pass
//! backwards: a per-channel (or scalar) scale — SSS gates — a per-channel
//! bias — conv biases — and ReLU. candle's broadcast forms reduce their
//! gradients over axes (0, 2, 3), a slow strided reduction on CPU.

use super::{contiguous, custom_op, par_build, sum_pairs, Elem};
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// (x [N, C, ...], s [C] or [1]) → x · s[c].
pub struct ChannelScale;
/// (x, b [C]) → x + b[c].
pub struct ChannelBias;
/// x → max(x, 0).
pub struct Relu;
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
    let y = par_build(x.len(), hw, |i| {
        let k = p[if p.len() == 1 { 0 } else { i % c }];
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
