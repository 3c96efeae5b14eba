//! Ops that move data around without arithmetic. They carry the shape
//! arithmetic of legacy exports (Shape → Gather → Unsqueeze → Concat →
//! Reshape), so each also computes its value when its inputs are known.

use super::util::{axis, int_fact, vec_fact, MAX_FOLD};
use super::{Ctx, OpRule};
use crate::error::Result;
use crate::graph::shape::Fact;
use crate::graph::tensor::{dtype, Tensor};
use crate::graph::Attr;
use ndarray::{ArrayD, Axis, Dimension, IxDyn};

pub struct Flatten;
pub struct Reshape;
pub struct Squeeze;
pub struct Unsqueeze;
pub struct Transpose;
pub struct Concat;
pub struct Slice;
pub struct Pad;
pub struct Gather;
pub struct Shape;
pub struct Cast;
pub struct ConstantOfShape;

fn ints(f: &Fact) -> Option<ArrayD<i64>> {
    f.value.as_ref().and_then(|v| v.to_i64())
}

/// A fact of `shape` whose value, when the input's is known, is `value`.
fn reshaped(x: &Fact, shape: Vec<usize>) -> Fact {
    let value = ints(x).and_then(|v| v.into_shape_with_order(IxDyn(&shape)).ok());
    match value {
        Some(v) if x.dtype == dtype::INT64 => int_fact(v),
        _ => Fact {
            dtype: x.dtype,
            shape,
            value: None,
        },
    }
}

impl OpRule for Flatten {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let a = cx.node.attr_int_or("axis", 1)?;
        let a = if a == x.rank() as i64 {
            x.rank()
        } else {
            axis(cx, a, x.rank())?
        };
        let outer = x.shape[..a].iter().product();
        let inner = x.shape[a..].iter().product();
        Ok(vec![reshaped(x, vec![outer, inner])])
    }
}

impl OpRule for Reshape {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let target = cx.const_ints(1, "shape")?;
        let allowzero = cx.node.attr_int_or("allowzero", 0)? != 0;
        let total: usize = x.shape.iter().product();
        let mut shape = Vec::with_capacity(target.len());
        let mut infer_at = None;
        for (i, &t) in target.iter().enumerate() {
            shape.push(match t {
                -1 if infer_at.is_none() => {
                    infer_at = Some(i);
                    1
                }
                0 if !allowzero => *x
                    .shape
                    .get(i)
                    .ok_or_else(|| cx.err(format!("shape {target:?} copies a missing axis {i}")))?,
                t if t >= 0 => t as usize,
                _ => return Err(cx.err(format!("invalid target shape {target:?}"))),
            });
        }
        let known: usize = shape.iter().product();
        if let Some(i) = infer_at {
            if known == 0 || !total.is_multiple_of(known) {
                return Err(cx.err(format!("cannot reshape {:?} to {target:?}", x.shape)));
            }
            shape[i] = total / known;
        } else if known != total {
            return Err(cx.err(format!("cannot reshape {:?} to {target:?}", x.shape)));
        }
        Ok(vec![reshaped(x, shape)])
    }
}

fn axes_of(cx: &Ctx, rank: usize) -> Result<Option<Vec<usize>>> {
    let raw = if cx.has_input(1) {
        Some(cx.const_ints(1, "axes")?)
    } else {
        cx.node.attr_ints("axes")?.map(|a| a.to_vec())
    };
    raw.map(|r| {
        r.iter()
            .map(|&a| axis(cx, a, rank))
            .collect::<Result<Vec<_>>>()
    })
    .transpose()
}

impl OpRule for Squeeze {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let ax = axes_of(cx, x.rank())?;
        let mut shape = Vec::new();
        for (i, &d) in x.shape.iter().enumerate() {
            let drop = match &ax {
                Some(a) => a.contains(&i),
                None => d == 1,
            };
            if drop && d != 1 {
                return Err(cx.err(format!("cannot squeeze axis {i} of size {d}")));
            }
            if !drop {
                shape.push(d);
            }
        }
        Ok(vec![reshaped(x, shape)])
    }
}

impl OpRule for Unsqueeze {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let out_rank = x.rank()
            + if cx.has_input(1) {
                cx.const_ints(1, "axes")?.len()
            } else {
                cx.node.attr_ints("axes")?.map(|a| a.len()).unwrap_or(0)
            };
        let mut ax = axes_of(cx, out_rank)?.ok_or_else(|| cx.err("missing `axes`"))?;
        ax.sort_unstable();
        let mut shape = Vec::with_capacity(out_rank);
        let mut src = x.shape.iter();
        for i in 0..out_rank {
            if ax.contains(&i) {
                shape.push(1);
            } else {
                shape.push(*src.next().ok_or_else(|| cx.err("axes out of range"))?);
            }
        }
        Ok(vec![reshaped(x, shape)])
    }
}

impl OpRule for Transpose {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let r = x.rank();
        let perm: Vec<usize> = match cx.node.attr_ints("perm")? {
            Some(p) => p.iter().map(|&a| axis(cx, a, r)).collect::<Result<_>>()?,
            None => (0..r).rev().collect(),
        };
        let mut sorted = perm.clone();
        sorted.sort_unstable();
        if sorted != (0..r).collect::<Vec<_>>() {
            return Err(cx.err(format!("`perm` {perm:?} is not a permutation of {r} axes")));
        }
        let shape = perm.iter().map(|&p| x.shape[p]).collect();
        Ok(vec![match ints(x) {
            Some(v) if x.dtype == dtype::INT64 => int_fact(
                v.permuted_axes(IxDyn(&perm))
                    .as_standard_layout()
                    .into_owned(),
            ),
            _ => Fact {
                dtype: x.dtype,
                shape,
                value: None,
            },
        }])
    }
}

impl OpRule for Concat {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let first = cx.input(0)?;
        let a = axis(
            cx,
            cx.node
                .attr_int("axis")?
                .ok_or_else(|| cx.err("missing `axis`"))?,
            first.rank(),
        )?;
        let mut shape = first.shape.clone();
        let mut values = Vec::new();
        for i in 0..cx.node.inputs.len() {
            let f = cx.input(i)?;
            if i > 0 {
                if f.rank() != shape.len()
                    || f.shape
                        .iter()
                        .enumerate()
                        .any(|(j, &d)| j != a && d != shape[j])
                {
                    return Err(cx.err(format!(
                        "input {i} shape {:?} does not fit {:?}",
                        f.shape, first.shape
                    )));
                }
                shape[a] += f.shape[a];
            }
            values.push(ints(f));
        }
        if first.dtype == dtype::INT64 && values.iter().all(|v| v.is_some()) {
            let views: Vec<_> = values.iter().flatten().map(|v| v.view()).collect();
            if let Ok(v) = ndarray::concatenate(Axis(a), &views) {
                return Ok(vec![int_fact(v)]);
            }
        }
        Ok(vec![Fact {
            dtype: first.dtype,
            shape,
            value: None,
        }])
    }
}

/// Per-axis (start, step, length) of a Slice, clamped as ONNX specifies.
pub fn slice_plan(cx: &Ctx, shape: &[usize]) -> Result<Vec<(i64, i64, usize)>> {
    let r = shape.len();
    let (starts, ends, axes, steps) = if cx.opset < 10 {
        let get = |n: &str| cx.node.attr_ints(n).map(|v| v.map(|s| s.to_vec()));
        (
            get("starts")?.ok_or_else(|| cx.err("missing `starts`"))?,
            get("ends")?.ok_or_else(|| cx.err("missing `ends`"))?,
            get("axes")?,
            None,
        )
    } else {
        (
            cx.const_ints(1, "starts")?,
            cx.const_ints(2, "ends")?,
            if cx.has_input(3) {
                Some(cx.const_ints(3, "axes")?)
            } else {
                None
            },
            if cx.has_input(4) {
                Some(cx.const_ints(4, "steps")?)
            } else {
                None
            },
        )
    };
    let axes: Vec<i64> = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(cx.err("starts, ends, axes and steps differ in length"));
    }
    let mut plan: Vec<(i64, i64, usize)> = shape.iter().map(|&d| (0, 1, d)).collect();
    for i in 0..starts.len() {
        let a = axis(cx, axes[i], r)?;
        let d = shape[a] as i64;
        let step = steps[i];
        if step == 0 {
            return Err(cx.err("a Slice step is 0"));
        }
        let adj = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (mut s, mut e) = (adj(starts[i]), adj(ends[i]));
        if step > 0 {
            s = s.clamp(0, d);
            e = e.clamp(0, d);
        } else {
            s = s.clamp(0, (d - 1).max(0));
            e = e.clamp(-1, d - 1);
        }
        let len = if step > 0 {
            ((e - s).max(0) + step - 1) / step
        } else {
            ((s - e).max(0) + (-step) - 1) / (-step)
        };
        plan[a] = (s, step, len as usize);
    }
    Ok(plan)
}

impl OpRule for Slice {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let plan = slice_plan(cx, &x.shape)?;
        let shape: Vec<usize> = plan.iter().map(|p| p.2).collect();
        if let (Some(v), true) = (ints(x), x.dtype == dtype::INT64) {
            let out = ArrayD::from_shape_fn(IxDyn(&shape), |idx| {
                let src: Vec<usize> = (0..plan.len())
                    .map(|a| (plan[a].0 + idx[a] as i64 * plan[a].1) as usize)
                    .collect();
                v[IxDyn(&src)]
            });
            return Ok(vec![int_fact(out)]);
        }
        Ok(vec![Fact {
            dtype: x.dtype,
            shape,
            value: None,
        }])
    }
}

/// The begin/end pads of a Pad node per axis of a rank-`r` input.
pub fn pads(cx: &Ctx, r: usize) -> Result<Vec<i64>> {
    let raw = if cx.opset < 11 {
        cx.node
            .attr_ints("pads")?
            .ok_or_else(|| cx.err("missing `pads`"))?
            .to_vec()
    } else {
        cx.const_ints(1, "pads")?
    };
    if cx.has_input(3) {
        // opset 18 `axes`: pads apply to these axes only
        let axes = cx.const_ints(3, "axes")?;
        let n = axes.len();
        if raw.len() != 2 * n {
            return Err(cx.err("pads do not match axes"));
        }
        let mut full = vec![0; 2 * r];
        for (i, &a) in axes.iter().enumerate() {
            let a = axis(cx, a, r)?;
            full[a] = raw[i];
            full[a + r] = raw[i + n];
        }
        return Ok(full);
    }
    if raw.len() != 2 * r {
        return Err(cx.err(format!("{} pads for a rank-{r} input", raw.len())));
    }
    Ok(raw)
}

impl OpRule for Pad {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let r = x.rank();
        let p = pads(cx, r)?;
        let mut shape = Vec::with_capacity(r);
        for i in 0..r {
            let d = x.shape[i] as i64 + p[i] + p[i + r];
            if d < 0 {
                return Err(cx.err(format!("pads {p:?} remove more than axis {i} holds")));
            }
            shape.push(d as usize);
        }
        Ok(vec![Fact {
            dtype: x.dtype,
            shape,
            value: None,
        }])
    }

    /// The pad value is a constant, not a learned parameter.
    fn param_inputs(&self) -> Option<&'static [usize]> {
        Some(&[])
    }
}

impl OpRule for Gather {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let idx = cx.input(1)?;
        let a = axis(cx, cx.node.attr_int_or("axis", 0)?, x.rank())?;
        let mut shape = x.shape[..a].to_vec();
        shape.extend(&idx.shape);
        shape.extend(&x.shape[a + 1..]);
        if let (Some(v), Some(ix), true) = (ints(x), ints(idx), x.dtype == dtype::INT64) {
            let d = x.shape[a] as i64;
            let ix: Vec<i64> = ix.iter().map(|&i| if i < 0 { i + d } else { i }).collect();
            if ix.iter().any(|&i| i < 0 || i >= d) {
                return Err(cx.err(format!("Gather index out of range for axis of size {d}")));
            }
            let ir = idx.rank();
            let out = ArrayD::from_shape_fn(IxDyn(&shape), |o| {
                let mut src: Vec<usize> = o.slice()[..a].to_vec();
                let flat = (0..ir).fold(0usize, |acc, j| acc * idx.shape[j] + o[a + j]);
                src.push(ix[flat] as usize);
                src.extend(&o.slice()[a + ir..]);
                v[IxDyn(&src)]
            });
            return Ok(vec![int_fact(out)]);
        }
        Ok(vec![Fact {
            dtype: x.dtype,
            shape,
            value: None,
        }])
    }
}

impl OpRule for Shape {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let r = x.rank() as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let s = clamp(cx.node.attr_int_or("start", 0)?);
        let e = clamp(cx.node.attr_int_or("end", r)?);
        let dims = x.shape[s..e.max(s)].iter().map(|&d| d as i64).collect();
        Ok(vec![vec_fact(dims)])
    }
}

impl OpRule for Cast {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let to = cx
            .node
            .attr_int("to")?
            .ok_or_else(|| cx.err("missing `to`"))? as i32;
        let value = x.value.as_ref().and_then(|v| cast_value(v, to));
        Ok(vec![Fact {
            dtype: to,
            shape: x.shape.clone(),
            value,
        }])
    }
}

impl OpRule for ConstantOfShape {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let dims = cx.const_ints(0, "shape")?;
        if dims.iter().any(|&d| d < 0) {
            return Err(cx.err(format!("negative shape {dims:?}")));
        }
        let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        let fill = match cx.node.attr("value") {
            Some(Attr::Tensor(t)) => Some(t.clone()),
            None => None,
            Some(_) => return Err(cx.err("`value` must be a tensor")),
        };
        let dt = fill.as_ref().map(|t| t.dtype()).unwrap_or(dtype::FLOAT);
        let n: usize = shape.iter().product();
        let value = match fill.as_ref().and_then(|t| t.to_i64()) {
            Some(v) if dt == dtype::INT64 && n <= MAX_FOLD => {
                let x = v.iter().next().copied().unwrap_or(0);
                Some(Tensor::I64(ArrayD::from_elem(IxDyn(&shape), x)))
            }
            _ => None,
        };
        Ok(vec![Fact {
            dtype: dt,
            shape,
            value,
        }])
    }
}

pub struct Expand;
pub struct CastLike;
pub struct Range;

/// `t` converted to `to`, for the float and integer types that shape code
/// and raw exports' constant subgraphs use; `None` for anything else.
pub fn cast_value(t: &Tensor, to: i32) -> Option<Tensor> {
    match (t, to) {
        (Tensor::F32(a), dtype::FLOAT) => Some(Tensor::F32(a.clone())),
        // ONNX Cast truncates towards zero
        (Tensor::F32(a), _) => Tensor::from_i64_as(a.mapv(|v| v as i64), to),
        (other, _) => other.to_i64().and_then(|v| Tensor::from_i64_as(v, to)),
    }
}

impl OpRule for Expand {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let target: Vec<usize> = cx
            .const_ints(1, "shape")?
            .iter()
            .map(|&d| d.max(0) as usize)
            .collect();
        let shape = super::util::broadcast(cx, &x.shape, &target)?;
        let n: usize = shape.iter().product();
        let value = match &x.value {
            Some(Tensor::F32(a)) if n <= MAX_FOLD => a
                .broadcast(IxDyn(&shape))
                .map(|v| Tensor::F32(v.to_owned())),
            Some(t) if n <= MAX_FOLD => t
                .to_i64()
                .and_then(|a| a.broadcast(IxDyn(&shape)).map(|v| v.to_owned()))
                .and_then(|a| Tensor::from_i64_as(a, x.dtype)),
            _ => None,
        };
        Ok(vec![Fact {
            dtype: x.dtype,
            shape,
            value,
        }])
    }
}

impl OpRule for CastLike {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let to = cx.input(1)?.dtype;
        Ok(vec![Fact {
            dtype: to,
            shape: x.shape.clone(),
            value: x.value.as_ref().and_then(|v| cast_value(v, to)),
        }])
    }
}

impl OpRule for Range {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let scalar = |i: usize, what: &str| -> Result<i64> {
            match cx.const_ints(i, what)?.as_slice() {
                [v] => Ok(*v),
                _ => Err(cx.err(format!("{what} (input {i}) must be a scalar"))),
            }
        };
        let dt = cx.input(0)?.dtype;
        if !matches!(dt, dtype::INT64 | dtype::INT32) {
            return Err(cx.err("only integer Range is supported"));
        }
        let (start, limit, delta) = (
            scalar(0, "start")?,
            scalar(1, "limit")?,
            scalar(2, "delta")?,
        );
        if delta == 0 {
            return Err(cx.err("delta is 0"));
        }
        let n = ((limit - start) as f64 / delta as f64).ceil().max(0.0) as usize;
        if n > MAX_FOLD {
            return Err(cx.err(format!("{n} elements is too many for shape arithmetic")));
        }
        let v: Vec<i64> = (0..n as i64).map(|i| start + i * delta).collect();
        let value = Tensor::from_i64_as(ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-D"), dt);
        Ok(vec![Fact {
            dtype: dt,
            shape: vec![n],
            value,
        }])
    }
}
