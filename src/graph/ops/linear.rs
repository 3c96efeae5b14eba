//! `Gemm` and `MatMul`.

use super::{Ctx, OpRule};
use crate::error::Result;
use crate::graph::shape::Fact;

pub struct Gemm;
pub struct MatMul;

fn gemm_dims(cx: &Ctx) -> Result<(usize, usize, usize)> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    if a.rank() != 2 || b.rank() != 2 {
        return Err(cx.err(format!(
            "Gemm needs 2-D inputs, got {:?} and {:?}",
            a.shape, b.shape
        )));
    }
    let ta = cx.node.attr_int_or("transA", 0)? != 0;
    let tb = cx.node.attr_int_or("transB", 0)? != 0;
    let (m, k) = if ta {
        (a.shape[1], a.shape[0])
    } else {
        (a.shape[0], a.shape[1])
    };
    let (k2, n) = if tb {
        (b.shape[1], b.shape[0])
    } else {
        (b.shape[0], b.shape[1])
    };
    if k != k2 {
        return Err(cx.err(format!(
            "inner dimensions differ: {:?} x {:?}",
            a.shape, b.shape
        )));
    }
    Ok((m, k, n))
}

impl OpRule for Gemm {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let (m, _, n) = gemm_dims(cx)?;
        Ok(vec![Fact {
            dtype: cx.input(0)?.dtype,
            shape: vec![m, n],
            value: None,
        }])
    }

    fn macs(&self, cx: &Ctx, _: &[Fact]) -> u64 {
        gemm_dims(cx)
            .map(|(m, k, n)| (m * k * n) as u64)
            .unwrap_or(0)
    }
}

fn matmul_shape(cx: &Ctx) -> Result<(Vec<usize>, usize)> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    if a.rank() < 2 || b.rank() < 2 {
        return Err(cx.err("MatMul of vectors is not supported"));
    }
    let (m, k) = (a.shape[a.rank() - 2], a.shape[a.rank() - 1]);
    let (k2, n) = (b.shape[b.rank() - 2], b.shape[b.rank() - 1]);
    if k != k2 {
        return Err(cx.err(format!(
            "inner dimensions differ: {:?} x {:?}",
            a.shape, b.shape
        )));
    }
    let mut batch = super::util::broadcast(cx, &a.shape[..a.rank() - 2], &b.shape[..b.rank() - 2])?;
    batch.extend([m, n]);
    Ok((batch, k))
}

impl OpRule for MatMul {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let (shape, _) = matmul_shape(cx)?;
        Ok(vec![Fact {
            dtype: cx.input(0)?.dtype,
            shape,
            value: None,
        }])
    }

    fn macs(&self, cx: &Ctx, _: &[Fact]) -> u64 {
        matmul_shape(cx)
            .map(|(s, k)| (s.iter().product::<usize>() * k) as u64)
            .unwrap_or(0)
    }
}
