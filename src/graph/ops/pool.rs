//! `MaxPool`, `AveragePool`, `GlobalAveragePool`, `GlobalMaxPool`.

use super::conv::Window;
use super::{Ctx, OpRule};
use crate::error::Result;
use crate::graph::shape::Fact;

pub struct Pool;
pub struct GlobalPool;

impl OpRule for Pool {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let kernel: Vec<usize> = cx
            .node
            .attr_ints("kernel_shape")?
            .ok_or_else(|| cx.err("missing `kernel_shape`"))?
            .iter()
            .map(|&k| k.max(0) as usize)
            .collect();
        if x.rank() != kernel.len() + 2 {
            return Err(cx.err(format!(
                "input {:?} does not fit kernel {kernel:?}",
                x.shape
            )));
        }
        let ceil = cx.node.attr_int_or("ceil_mode", 0)? != 0;
        let (_, out) = Window::from_node(cx, kernel, &x.shape[2..], ceil)?;
        let mut shape = x.shape[..2].to_vec();
        shape.extend(out);
        let f = Fact {
            dtype: x.dtype,
            shape,
            value: None,
        };
        Ok(cx.node.outputs.iter().map(|_| f.clone()).collect())
    }
}

impl OpRule for GlobalPool {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        if x.rank() < 3 {
            return Err(cx.err(format!("input {:?} has no spatial axes", x.shape)));
        }
        let mut shape = x.shape.clone();
        shape[2..].iter_mut().for_each(|d| *d = 1);
        Ok(vec![Fact {
            dtype: x.dtype,
            shape,
            value: None,
        }])
    }
}
