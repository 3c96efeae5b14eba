//! Per-channel elementwise ops on [N, C, ...] tensors with single-pass
//! backwards: a per-channel (or scalar) scale — SSS gates — a per-channel
//! bias — conv biases — and ReLU. candle's broadcast forms reduce their
//! gradients over axes (0, 2, 3), a slow strided reduction on CPU.

use super::{contiguous, dispatch, Elem};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// (x [N, C, ...], s [C] or [1]) → x · s[c].
pub struct ChannelScale;
/// (x, b [C]) → x + b[c].
pub struct ChannelBias;
/// x → max(x, 0).
pub struct Relu;

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
    let mut y = vec![T::default(); x.len()];
    y.par_chunks_mut(hw.max(1))
        .zip(x.par_chunks(hw.max(1)))
        .enumerate()
        .for_each(|(i, (yp, xp))| {
            let k = p[if p.len() == 1 { 0 } else { i % c }];
            if add {
                yp.iter_mut().zip(xp).for_each(|(o, &v)| *o = v + k);
            } else {
                yp.iter_mut().zip(xp).for_each(|(o, &v)| *o = v * k);
            }
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
    let planes = x.len() / hw.max(1);
    let sums: Vec<f64> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut acc = 0f64;
            for p in (ch..planes).step_by(c) {
                let r = p * hw..(p + 1) * hw;
                if op.plain {
                    acc += dy[r].iter().map(|v| v.to_f64()).sum::<f64>();
                } else {
                    acc += x[r.clone()]
                        .iter()
                        .zip(&dy[r])
                        .map(|(a, b)| a.to_f64() * b.to_f64())
                        .sum::<f64>();
                }
            }
            acc
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

fn relu<T: Elem>(s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = contiguous::<T>(s, l)?;
    let zero = T::default();
    let mut y = vec![zero; x.len()];
    y.par_chunks_mut(4096)
        .zip(x.par_chunks(4096))
        .for_each(|(o, i)| {
            o.iter_mut()
                .zip(i)
                .for_each(|(o, &v)| *o = if v > zero { v } else { zero });
        });
    Ok((T::to_cpu_storage_owned(y), l.shape().clone()))
}

fn relu_grad<T: Elem>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (dy, y) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
    let zero = T::default();
    let mut dx = vec![zero; dy.len()];
    dx.par_chunks_mut(4096)
        .zip(dy.par_chunks(4096).zip(y.par_chunks(4096)))
        .for_each(|(o, (g, y))| {
            o.iter_mut()
                .zip(g.iter().zip(y))
                .for_each(|(o, (&g, &y))| *o = if y > zero { g } else { zero });
        });
    Ok((T::to_cpu_storage_owned(dx), l1.shape().clone()))
}

impl CustomOp2 for ChannelScale {
    fn name(&self) -> &'static str {
        "sss-channel-scale"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, scale(s1, l1, s2, l2, false))
    }

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
}

impl CustomOp2 for ChannelBias {
    fn name(&self) -> &'static str {
        "sss-channel-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, scale(s1, l1, s2, l2, true))
    }

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
}

impl CustomOp2 for ChannelSum {
    fn name(&self) -> &'static str {
        "sss-channel-sum"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, channel_sum(self, s1, l1, s2, l2))
    }
}

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "sss-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s, relu(s, l))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            dy.contiguous()?
                .apply_op2_no_bwd(&y.contiguous()?, &ReluGrad)?,
        ))
    }
}

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "sss-relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, relu_grad(s1, l1, s2, l2))
    }
}
