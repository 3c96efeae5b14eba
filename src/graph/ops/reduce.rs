//! `ReduceMean` / `ReduceSum` / `ReduceMax` (axes as attribute before opset
//! 18, as input from 18 on; dynamo exports use ReduceMean for global pooling).

use super::util::axis;
use super::{Ctx, OpRule};
use crate::error::Result;
use crate::graph::shape::Fact;

pub struct Reduce;

/// The reduced axes of a Reduce node, normalised and sorted.
pub fn axes(cx: &Ctx, rank: usize) -> Result<Vec<usize>> {
    let raw: Option<Vec<i64>> = if cx.has_input(1) {
        Some(cx.const_ints(1, "axes")?)
    } else {
        cx.node.attr_ints("axes")?.map(|a| a.to_vec())
    };
    let noop = cx.node.attr_int_or("noop_with_empty_axes", 0)? != 0;
    let mut v: Vec<usize> = match raw {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|&a| axis(cx, a, rank))
            .collect::<Result<_>>()?,
        _ if noop => vec![],
        _ => (0..rank).collect(),
    };
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

impl OpRule for Reduce {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let ax = axes(cx, x.rank())?;
        let keep = cx.node.attr_int_or("keepdims", 1)? != 0;
        let mut shape = Vec::new();
        for (i, &d) in x.shape.iter().enumerate() {
            if ax.contains(&i) {
                if keep {
                    shape.push(1);
                }
            } else {
                shape.push(d);
            }
        }
        Ok(vec![Fact {
            dtype: x.dtype,
            shape,
            value: None,
        }])
    }
}
