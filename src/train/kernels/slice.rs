//! Strided slicing — ONNX Slice with steps, as in the option-A shortcut's
//! `x[:, :, ::2, ::2]` — as one op over every axis. candle's route is one
//! `index_select` per strided axis: an intermediate tensor per axis
//! forward, and backward an `index_add` into a fresh zero tensor per axis,
//! each then added onto another zero tensor by the autograd. Here the
//! forward is one gather and the backward writes the input gradient in one
//! pass (the gradient where the slice picked, 0 elsewhere).

use super::{contiguous, custom_op, Elem};
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// The slice of a tensor of rank ≤ 4: per axis (start, step, length) of
/// the input padded in front to rank 4 with unit axes (0, 1, 1); steps are
/// positive.
#[derive(Debug, Clone)]
pub struct StridedSlice {
    /// The input's dims, padded in front to 4.
    dims: [usize; 4],
    axes: [(usize, usize, usize); 4],
    input: Shape,
    output: Shape,
}

impl StridedSlice {
    /// The op for an input of shape `dims` and per-axis (start, step,
    /// length); None for rank > 4, a step below 1 or a slice that leaves the
    /// input.
    pub fn new(dims: &[usize], axes: &[(i64, i64, usize)]) -> Option<StridedSlice> {
        let r = dims.len();
        if r > 4 || axes.len() != r {
            return None;
        }
        let mut d = [1usize; 4];
        let mut a = [(0usize, 1usize, 1usize); 4];
        for (i, (&n, &(start, step, len))) in dims.iter().zip(axes).enumerate() {
            if start < 0 || step < 1 {
                return None;
            }
            let (start, step) = (start as usize, step as usize);
            if len > 0 && start + (len - 1) * step >= n {
                return None;
            }
            d[4 - r + i] = n;
            a[4 - r + i] = (start, step, len);
        }
        let output: Vec<usize> = axes.iter().map(|&(_, _, len)| len).collect();
        Some(StridedSlice {
            dims: d,
            axes: a,
            input: Shape::from(dims.to_vec()),
            output: Shape::from(output),
        })
    }

    /// The input index along axis k picked by output index i.
    fn source(&self, k: usize, i: usize) -> usize {
        let (start, step, _) = self.axes[k];
        start + i * step
    }

    /// The output index along axis k that picks input index j, if any.
    fn picked(&self, k: usize, j: usize) -> Option<usize> {
        let (start, step, len) = self.axes[k];
        let off = j.checked_sub(start)?;
        (off % step == 0 && off / step < len).then_some(off / step)
    }
}

/// (dy) → dx, the input gradient of a [`StridedSlice`].
struct StridedSliceGrad(StridedSlice);

/// The input offsets along axis k of its output indices 0..len.
fn sources(op: &StridedSlice, k: usize) -> Vec<usize> {
    (0..op.axes[k].2).map(|i| op.source(k, i)).collect()
}

fn forward<T: Elem>(op: &StridedSlice, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = contiguous::<T>(s, l)?;
    let d = op.dims;
    let [_, (_, _, l1), (_, _, l2), (_, _, l3)] = op.axes;
    let (rows, cols) = (sources(op, 2), sources(op, 3));
    let mut y = vec![T::default(); op.output.elem_count()];
    // one output plane (the two inner axes) per task
    y.par_chunks_mut((l2 * l3).max(1))
        .enumerate()
        .for_each(|(p, out)| {
            let (i1, i0) = (p % l1, p / l1);
            let plane = (op.source(0, i0) * d[1] + op.source(1, i1)) * d[2];
            for (out_row, &r) in out.chunks_mut(l3.max(1)).zip(&rows) {
                let src = &x[(plane + r) * d[3]..(plane + r + 1) * d[3]];
                for (o, &c) in out_row.iter_mut().zip(&cols) {
                    *o = src[c];
                }
            }
        });
    Ok((T::to_cpu_storage_owned(y), op.output.clone()))
}

fn backward<T: Elem>(op: &StridedSlice, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let dy = contiguous::<T>(s, l)?;
    let d = op.dims;
    let [_, (_, _, l1), (_, _, l2), (_, _, l3)] = op.axes;
    let (rows, cols) = (sources(op, 2), sources(op, 3));
    // zeros, then the gradient where the slice picked
    let mut dx = vec![T::default(); op.input.elem_count()];
    dx.par_chunks_mut((d[2] * d[3]).max(1))
        .enumerate()
        .for_each(|(p, plane)| {
            let (j1, j0) = (p % d[1], p / d[1]);
            let (Some(i0), Some(i1)) = (op.picked(0, j0), op.picked(1, j1)) else {
                return;
            };
            let from = (i0 * l1 + i1) * l2;
            for (i2, &r) in rows.iter().enumerate() {
                let g = &dy[(from + i2) * l3..(from + i2 + 1) * l3];
                let row = &mut plane[r * d[3]..(r + 1) * d[3]];
                for (&v, &c) in g.iter().zip(&cols) {
                    row[c] = v;
                }
            }
        });
    Ok((T::to_cpu_storage_owned(dx), op.input.clone()))
}

custom_op!(CustomOp1 for StridedSlice {
    name(&self) {
        "sss-strided-slice"
    }
    fwd(s: l) => forward(self, s, l);

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let g = dy
            .contiguous()?
            .apply_op1_no_bwd(&StridedSliceGrad(self.clone()))?;
        Ok(Some(g))
    }
});

custom_op!(CustomOp1 for StridedSliceGrad {
    name(&self) {
        "sss-strided-slice-grad"
    }
    fwd(s: l) => backward(&self.0, s, l);
});

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// x[:, :, ::2, ::2] and a 3-D slice with every axis cut, against the
    /// values and gradient worked out by index (dy = the output's own
    /// values plus 1, so each picked position gets a distinct gradient).
    #[test]
    fn gathers_and_scatters_back_what_it_picked() {
        for (dims, axes) in [
            (
                vec![2, 3, 4, 5],
                vec![(0, 1, 2), (0, 1, 3), (0, 2, 2), (0, 2, 3)],
            ),
            (vec![5, 6, 7], vec![(1, 3, 2), (2, 1, 3), (6, 2, 1)]),
        ] {
            let n: usize = dims.iter().product();
            let x = Var::from_vec(
                (0..n).map(|i| i as f64).collect(),
                dims.as_slice(),
                &Device::Cpu,
            )
            .unwrap();
            let op = StridedSlice::new(&dims, &axes).expect("a valid slice");
            let y = x.apply_op1(op).unwrap();
            let want_dims: Vec<usize> = axes.iter().map(|a| a.2).collect();
            assert_eq!(y.dims(), want_dims.as_slice());
            // the input index of every output element, by hand
            let strides: Vec<usize> = (0..dims.len())
                .map(|k| dims[k + 1..].iter().product())
                .collect();
            let m: usize = want_dims.iter().product();
            let mut want_y = Vec::new();
            let mut want_dx = vec![0f64; n];
            for o in 0..m {
                let (mut rest, mut at) = (o, 0);
                for k in (0..dims.len()).rev() {
                    let i = rest % want_dims[k];
                    rest /= want_dims[k];
                    at += (axes[k].0 as usize + i * axes[k].1 as usize) * strides[k];
                }
                want_y.push(at as f64);
                want_dx[at] = at as f64 + 1.0;
            }
            let got: Vec<f64> = y.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(got, want_y, "{dims:?} {axes:?}");
            let loss = (y.clone() * (y + 1.0).unwrap().detach())
                .unwrap()
                .sum_all()
                .unwrap();
            let grads = loss.backward().unwrap();
            let dx: Vec<f64> = grads
                .get(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(dx, want_dx, "{dims:?} {axes:?}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_slice() {
        assert!(StridedSlice::new(&[4], &[(0, -1, 2)]).is_none());
        assert!(StridedSlice::new(&[4], &[(1, 2, 2)]).is_some());
        assert!(StridedSlice::new(&[4], &[(1, 2, 3)]).is_none());
        assert!(StridedSlice::new(&[1, 1, 1, 1, 1], &[(0, 1, 1); 5]).is_none());
    }
}
