//! `Conv` (N-d, groups, dilations, auto_pad).

use super::{Ctx, OpRule};
use crate::error::Result;
use crate::graph::shape::Fact;
use crate::graph::Node;

pub struct Conv;

/// The geometry of a convolution or pooling window along each spatial axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Begin pads then end pads, as in ONNX.
    pub pads: Vec<usize>,
}

impl Window {
    /// Reads kernel geometry from the node's attributes; `kernel` from the
    /// weight (Conv) or `kernel_shape` (pools).
    pub fn from_node(
        cx: &Ctx,
        kernel: Vec<usize>,
        spatial_in: &[usize],
        ceil: bool,
    ) -> Result<(Window, Vec<usize>)> {
        let n = kernel.len();
        let node = cx.node;
        if kernel.contains(&0) {
            return Err(cx.err(format!("kernel {kernel:?} has an empty axis")));
        }
        let get = |name: &str, default: usize| -> Result<Vec<usize>> {
            match node.attr_ints(name)? {
                None => Ok(vec![default; n]),
                Some(v) if v.len() == n && v.iter().all(|&x| x >= 1) => {
                    Ok(v.iter().map(|&x| x as usize).collect())
                }
                Some(v) => Err(cx.err(format!("`{name}` = {v:?} does not fit {n} spatial axes"))),
            }
        };
        let strides = get("strides", 1)?;
        let dilations = get("dilations", 1)?;
        let auto_pad = node
            .attr_string("auto_pad")?
            .unwrap_or_else(|| "NOTSET".into());
        let mut pads = match node.attr_ints("pads")? {
            None => vec![0; 2 * n],
            Some(p) if p.len() == 2 * n && p.iter().all(|&x| x >= 0) => {
                p.iter().map(|&x| x as usize).collect()
            }
            Some(p) => return Err(cx.err(format!("`pads` = {p:?} does not fit {n} spatial axes"))),
        };
        if spatial_in.len() != n {
            return Err(cx.err(format!(
                "input has {} spatial axes, kernel has {n}",
                spatial_in.len()
            )));
        }
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let eff = dilations[i] * (kernel[i] - 1) + 1;
            match auto_pad.as_str() {
                "SAME_UPPER" | "SAME_LOWER" => {
                    let o = spatial_in[i].div_ceil(strides[i]);
                    let total = ((o - 1) * strides[i] + eff).saturating_sub(spatial_in[i]);
                    let (a, b) = if auto_pad == "SAME_UPPER" {
                        (total / 2, total - total / 2)
                    } else {
                        (total - total / 2, total / 2)
                    };
                    pads[i] = a;
                    pads[i + n] = b;
                }
                "VALID" => {
                    pads[i] = 0;
                    pads[i + n] = 0;
                }
                "NOTSET" => {}
                other => return Err(cx.err(format!("unknown auto_pad {other:?}"))),
            }
            let padded = spatial_in[i] + pads[i] + pads[i + n];
            if padded < eff {
                return Err(cx.err(format!(
                    "window {eff} is larger than the padded input {padded} on spatial axis {i}"
                )));
            }
            let span = padded - eff;
            let mut o = if ceil {
                span.div_ceil(strides[i])
            } else {
                span / strides[i]
            } + 1;
            // ceil mode must not start a window in the end padding
            if ceil && (o - 1) * strides[i] >= spatial_in[i] + pads[i] {
                o -= 1;
            }
            out.push(o);
        }
        Ok((
            Window {
                kernel,
                strides,
                dilations,
                pads,
            },
            out,
        ))
    }
}

/// Group count of a Conv node.
pub fn groups(node: &Node) -> Result<usize> {
    Ok(node.attr_int_or("group", 1)?.max(1) as usize)
}

impl OpRule for Conv {
    fn infer(&self, cx: &Ctx) -> Result<Vec<Fact>> {
        let x = cx.input(0)?;
        let w = cx.input(1)?;
        if x.rank() < 3 || w.rank() != x.rank() {
            return Err(cx.err(format!(
                "input shape {:?} and weight shape {:?} do not make a convolution",
                x.shape, w.shape
            )));
        }
        let g = groups(cx.node)?;
        let (c, m) = (x.shape[1], w.shape[0]);
        if w.shape[1] * g != c || m % g != 0 {
            return Err(cx.err(format!(
                "weight {:?} with group={g} does not fit {c} input channels",
                w.shape
            )));
        }
        if let Some(b) = cx.inputs.get(2).copied().flatten() {
            if b.shape != [m] {
                return Err(cx.err(format!("bias shape {:?} is not [{m}]", b.shape)));
            }
        }
        let (_, out) = Window::from_node(cx, w.shape[2..].to_vec(), &x.shape[2..], false)?;
        let mut shape = vec![x.shape[0], m];
        shape.extend(out);
        Ok(vec![Fact {
            dtype: x.dtype,
            shape,
            value: None,
        }])
    }

    fn macs(&self, cx: &Ctx, outputs: &[Fact]) -> u64 {
        let (Ok(w), Some(y)) = (cx.input(1), outputs.first()) else {
            return 0;
        };
        // every output element: (C/g) * prod(kernel) multiply-adds
        let per_out: usize = w.shape[1..].iter().product();
        (y.shape.iter().product::<usize>() * per_out) as u64
    }
}
