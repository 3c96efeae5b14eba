//! Elementwise ops: unary (shape kept) and broadcasting n-ary ones, with
//! integer value propagation for the arithmetic that shape code does.

use super::util::{broadcast, int_fact, MAX_FOLD};
use super::{Ctx, OpRule};
use crate::error::Result;
use crate::graph::shape::Fact;
use ndarray::ArrayD;

pub struct Unary;
pub struct Identity;
pub struct Broadcast;

impl OpRule for Unary {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let f = Fact {
            dtype: x.dtype,
            shape: x.shape.clone(),
            value: None,
        };
        // Dropout may have a mask output; shape alike
        Ok(cx.node.outputs.iter().map(|_| f.clone()).collect())
    }

    /// Clip bounds and similar constants are not learned.
    fn param_inputs(&self) -> Option<&'static [usize]> {
        Some(&[])
    }
}

impl OpRule for Identity {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        Ok(vec![cx.input(0)?.clone()])
    }
}

impl OpRule for Broadcast {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let op = cx.node.op_type.as_str();
        let n = cx.node.inputs.len();
        if n == 0 || (op != "Sum" && op != "Max" && op != "Min" && op != "Where" && n != 2) {
            return Err(cx.err(format!("{op} with {n} inputs")));
        }
        let mut shape = cx.input(0)?.shape.clone();
        for i in 1..n {
            shape = broadcast(cx, &shape, &cx.input(i)?.shape)?;
        }
        let dtype = match op {
            "Equal" => crate::graph::tensor::dtype::BOOL,
            "Where" => cx.input(1)?.dtype,
            _ => cx.input(0)?.dtype,
        };
        let value = if n == 2 && matches!(op, "Add" | "Sub" | "Mul" | "Div") {
            fold_ints(cx, op, &shape)?
        } else {
            None
        };
        Ok(vec![match value {
            Some(v) => int_fact(v),
            None => Fact {
                dtype,
                shape,
                value: None,
            },
        }])
    }
}

fn fold_ints(cx: &Ctx, op: &str, shape: &[usize]) -> Result<Option<ArrayD<i64>>> {
    let (Some(a), Some(b)) = (
        cx.input(0)?.value.as_ref().and_then(|v| v.to_i64()),
        cx.input(1)?.value.as_ref().and_then(|v| v.to_i64()),
    ) else {
        return Ok(None);
    };
    if shape.iter().product::<usize>() > MAX_FOLD {
        return Ok(None);
    }
    let (Some(a), Some(b)) = (a.broadcast(shape), b.broadcast(shape)) else {
        return Ok(None);
    };
    let mut out = a.to_owned();
    for (o, &y) in out.iter_mut().zip(b.iter()) {
        *o = match op {
            "Add" => o.wrapping_add(y),
            "Sub" => o.wrapping_sub(y),
            "Mul" => o.wrapping_mul(y),
            _ if y == 0 => return Err(cx.err("integer division by zero in shape arithmetic")),
            _ => o.div_euclid(y),
        };
    }
    Ok(Some(out))
}
