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
        let value = match (n, op) {
            (2, "Add" | "Sub" | "Mul" | "Div" | "Mod" | "Equal") | (3, "Where") => {
                fold_ints(cx, op, &shape)?
            }
            _ => None,
        };
        Ok(vec![match value {
            Some(v) if dtype == crate::graph::tensor::dtype::BOOL => Fact {
                dtype,
                shape,
                value: crate::graph::tensor::Tensor::from_i64_as(v, dtype),
            },
            Some(v) => int_fact(v),
            None => Fact {
                dtype,
                shape,
                value: None,
            },
        }])
    }
}

/// Integer shape arithmetic on constant inputs (an export's Where/Equal
/// spelling of `expand(-1)`, a head width's `Mod`), evaluated so the
/// shapes downstream are known.
fn fold_ints(cx: &Ctx, op: &str, shape: &[usize]) -> Result<Option<ArrayD<i64>>> {
    if shape.iter().product::<usize>() > MAX_FOLD {
        return Ok(None);
    }
    let mut args = Vec::new();
    for i in 0..cx.node.inputs.len() {
        let Some(v) = cx.input(i)?.value.as_ref().and_then(|v| v.to_i64()) else {
            return Ok(None);
        };
        let Some(b) = v.broadcast(shape).map(|b| b.to_owned()) else {
            return Ok(None);
        };
        args.push(b);
    }
    if op == "Where" {
        let (c, x, y) = (&args[0], &args[1], &args[2]);
        let mut out = x.clone();
        for ((o, &c), &y) in out.iter_mut().zip(c.iter()).zip(y.iter()) {
            if c == 0 {
                *o = y;
            }
        }
        return Ok(Some(out));
    }
    // C's fmod (sign of the dividend) when asked, else the divisor's sign
    let fmod = op == "Mod" && cx.node.attr_int_or("fmod", 0)? != 0;
    let mut out = args[0].clone();
    for (o, &y) in out.iter_mut().zip(args[1].iter()) {
        *o = match op {
            "Add" => o.wrapping_add(y),
            "Sub" => o.wrapping_sub(y),
            "Mul" => o.wrapping_mul(y),
            "Equal" => (*o == y) as i64,
            _ if y == 0 => return Err(cx.err("integer division by zero in shape arithmetic")),
            "Mod" if fmod => *o % y,
            "Mod" => o.rem_euclid(y) + if y < 0 && o.rem_euclid(y) != 0 { y } else { 0 },
            _ => o.div_euclid(y),
        };
    }
    Ok(Some(out))
}
