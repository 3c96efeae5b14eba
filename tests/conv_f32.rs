//! The f32 convolution kernels (AVX-512 SGEMM with packed filters and
//! images summed in one product's depth, or the `gemm` crate elsewhere)
//! against the f64 path, which `train_grad.rs` checks against finite
//! differences: output, input gradient and filter gradient, on shapes that
//! take the im2col and pointwise paths (7×7 and 14×14 planes, batches
//! larger than one product's image group, strides, groups of 4 and of 16
//! channels, the 7×7 stem, planes large enough to be cut into bands,
//! depthwise 3×3, 5×5 and 7×7).

use candle_core::{DType, Device, Tensor, Var};
use sss_onnx::train::kernels::conv::Conv2d;
use sss_onnx::train::kernels::Geometry;

fn seeded(shape: &[usize], seed: u64) -> Tensor {
    let a = sss_onnx::measure::inputs::normal(shape, seed);
    let v: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// (output, input gradient, filter gradient) of sum(conv(x, w)·r).
fn run(op: Conv2d, x: &Tensor, w: &Tensor, r: &Tensor, dtype: DType) -> [Vec<f64>; 3] {
    let x = Var::from_tensor(&x.to_dtype(dtype).unwrap()).unwrap();
    let w = Var::from_tensor(&w.to_dtype(dtype).unwrap()).unwrap();
    let y = x.as_tensor().apply_op2(w.as_tensor(), op).unwrap();
    let loss = (&y * r.to_dtype(dtype).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let flat = |t: &Tensor| -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    [
        flat(&y),
        flat(grads.get(x.as_tensor()).unwrap()),
        flat(grads.get(w.as_tensor()).unwrap()),
    ]
}

#[test]
fn f32_kernels_match_the_f64_path() {
    // (images, in ch, side, out ch, kernel, stride, pad, groups)
    let cases = [
        (
            20usize, 24usize, 7usize, 40usize, 3usize, 1usize, 1usize, 1usize,
        ),
        (5, 16, 14, 33, 3, 1, 1, 1),
        (9, 40, 9, 20, 1, 1, 0, 1),
        (6, 24, 13, 48, 1, 2, 0, 1),
        (7, 32, 9, 32, 3, 2, 1, 8),
        (4, 32, 10, 32, 3, 1, 1, 2),
        (3, 3, 19, 16, 7, 2, 3, 1),
        // planes of 256 pixels or more, one image a product: pointwise,
        // and a grouped 5×5 through im2col
        (3, 24, 17, 20, 1, 1, 0, 1),
        (2, 8, 16, 24, 5, 1, 2, 2),
        // column matrices too large for cache, run in bands of output rows
        // (the last band short): a 7×7/2 stem, a grouped 5×5
        (2, 3, 61, 16, 7, 2, 3, 1),
        (2, 4, 64, 20, 5, 1, 2, 2),
        // depthwise (one filter per channel: its own kernels) 3×3, 5×5
        // and 7×7, stride 1 and 2
        (4, 24, 16, 24, 3, 1, 1, 24),
        (3, 16, 15, 16, 3, 2, 1, 16),
        (2, 12, 14, 12, 5, 2, 2, 12),
        (2, 8, 13, 8, 7, 1, 3, 8),
    ];
    for &(n, c, side, cout, k, s, p, groups) in &cases {
        let g = Geometry::new(c, side, side, [k, k], [s, s], [p; 4], [1, 1]);
        let op = Conv2d { g, groups, cout };
        let x = seeded(&[n, c, side, side], 1);
        let w = seeded(&[cout, c / groups, k, k], 2);
        let r = seeded(&[n, cout, g.oh, g.ow], 3);
        let want = run(op, &x, &w, &r, DType::F64);
        let got = run(op, &x, &w, &r, DType::F32);
        for (what, (a, b)) in ["output", "input gradient", "filter gradient"]
            .iter()
            .zip(got.iter().zip(&want))
        {
            let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
            let worst = a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                worst <= 2e-5 * scale,
                "{what} of {n}×{c}×{side}² → {cout} k{k} s{s} g{groups}: off by {worst:.3e} (scale {scale:.3e})"
            );
        }
    }
}
