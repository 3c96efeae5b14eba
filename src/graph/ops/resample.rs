//! Splitting and resampling: Split (a YOLO C2f block's halves), Resize and
//! the older Upsample (a detector's or segmenter's feature maps scaled up).
//! Shapes only: neither does arithmetic that counts as MACs.

use super::util::axis;
use super::{Ctx, OpRule};
use crate::error::Result;
use crate::graph::shape::Fact;

pub struct Split;
pub struct Resize;

impl OpRule for Split {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let a = axis(cx, cx.node.attr_int_or("axis", 0)?, x.rank())?;
        let dim = x.shape[a];
        let outputs = cx.node.outputs.len();
        // sizes: input 1 from opset 13, the `split` attribute before; else
        // equal parts (`num_outputs` from opset 18: the last one smaller)
        let given: Option<Vec<i64>> = if cx.opset >= 13 {
            match cx.node.input(1) {
                Some(_) => Some(cx.const_ints(1, "split")?),
                None => None,
            }
        } else {
            cx.node.attr_ints("split")?.map(|s| s.to_vec())
        };
        let sizes: Vec<usize> = match given {
            Some(s) => {
                if s.len() != outputs || s.iter().any(|&v| v < 0) {
                    return Err(cx.err(format!("split sizes {s:?} for {outputs} outputs")));
                }
                s.iter().map(|&v| v as usize).collect()
            }
            None => {
                let n = outputs.max(1);
                let part = dim.div_ceil(n);
                (0..n)
                    .map(|i| part.min(dim.saturating_sub(i * part)))
                    .collect()
            }
        };
        if sizes.iter().sum::<usize>() != dim {
            return Err(cx.err(format!(
                "split sizes {sizes:?} do not add up to the axis's {dim}"
            )));
        }
        Ok(sizes
            .into_iter()
            .map(|s| {
                let mut shape = x.shape.clone();
                shape[a] = s;
                Fact {
                    dtype: x.dtype,
                    shape,
                    value: None,
                }
            })
            .collect())
    }
}

impl OpRule for Resize {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let rank = x.rank();
        // Upsample and Resize-10: (X, scales); Resize-11+: (X, roi,
        // scales, sizes), any of the last three empty
        let (scales_at, sizes_at) = if cx.node.op_type == "Upsample" || cx.opset < 11 {
            (1, None)
        } else {
            (2, Some(3))
        };
        let present = |i: usize| {
            cx.node.input(i).is_some()
                && cx
                    .input(i)
                    .is_ok_and(|f| f.shape.iter().product::<usize>() > 0)
        };
        let shape: Vec<usize> = if let Some(s) = sizes_at.filter(|&i| present(i)) {
            let sizes = cx.const_ints(s, "sizes")?;
            if sizes.len() != rank || sizes.iter().any(|&v| v < 0) {
                return Err(cx.err(format!("sizes {sizes:?} for rank {rank}")));
            }
            sizes.iter().map(|&v| v as usize).collect()
        } else if present(scales_at) {
            let scales = cx
                .input(scales_at)?
                .value
                .as_ref()
                .and_then(|v| v.to_f32())
                .ok_or_else(|| cx.err("scales are not a constant"))?;
            if scales.len() != rank || scales.iter().any(|&v| v <= 0.0) {
                return Err(cx.err(format!("scales {scales:?} for rank {rank}")));
            }
            x.shape
                .iter()
                .zip(scales.iter())
                .map(|(&d, &s)| (d as f64 * s as f64).floor() as usize)
                .collect()
        } else {
            return Err(cx.err("neither scales nor sizes given"));
        };
        Ok(vec![Fact {
            dtype: x.dtype,
            shape,
            value: None,
        }])
    }
}
