//! Single-thread throughput (GMAC/s) of our AVX-512 SGEMM against the
//! `gemm` crate on the products a ResNet-50 step at 224×224 asks for (per
//! image: forward, input gradient, filter gradient of a few convs), side by
//! side in one run:
//!
//!     cargo bench --bench sgemm

use sss_onnx::train::kernels::sgemm::{self, Operand};
mod common;

/// GMAC/s of `f`, about 1e9 multiply-adds' worth of calls (2 at least).
fn rate(macs: f64, f: impl FnMut()) -> f64 {
    common::rate(macs, 1e9, 2, f)
}

#[allow(clippy::too_many_arguments)]
fn crate_gemm(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    a: &[f32],
    at: bool,
    b: &[f32],
    bt: bool,
    acc: bool,
) {
    let (lrs, lcs) = if at { (1, m as isize) } else { (k as isize, 1) };
    let (rrs, rcs) = if bt { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: the buffers hold m×k, k×n and m×n floats
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            acc,
            a.as_ptr(),
            lcs,
            lrs,
            b.as_ptr(),
            rcs,
            rrs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

fn main() {
    if !sgemm::available() {
        println!("no AVX-512 on this CPU: nothing to compare");
        return;
    }
    println!("| product | m×n×k | gemm crate GMAC/s | ours GMAC/s | ratio |");
    println!("|---|---|---:|---:|---:|");
    // (what, m, n, k, lhs transposed, rhs transposed, accumulate)
    let cases: &[(&str, usize, usize, usize, bool, bool, bool)] = &[
        ("1×1 64→256 @56 fwd", 256, 3136, 64, false, false, false),
        ("1×1 256→64 @56 fwd", 64, 3136, 256, false, false, false),
        ("3×3 128 @28 fwd", 128, 784, 1152, false, false, false),
        ("3×3 256 @14 fwd", 256, 196, 2304, false, false, false),
        ("3×3 512 @7 fwd", 512, 49, 4608, false, false, false),
        ("3×3 128 @28 dx", 1152, 784, 128, true, false, false),
        ("3×3 512 @7 dx", 4608, 49, 512, true, false, false),
        ("1×1 256→64 @56 dx", 256, 3136, 64, true, false, false),
        ("3×3 128 @28 dw", 128, 1152, 784, false, true, true),
        ("3×3 512 @7 dw", 512, 4608, 49, false, true, true),
        ("1×1 64→256 @56 dw", 256, 64, 3136, false, true, true),
        // the 7×7/2 stem: a depth of 147, 12 544 output pixels
        ("7×7/2 stem fwd", 64, 12544, 147, false, false, false),
        ("7×7/2 stem dw", 64, 147, 12544, false, true, true),
        // ResNeXt-50 32×4d: one group of a grouped 3×3 conv per stage
        ("group 3×3 4 @56 fwd", 4, 3136, 36, false, false, false),
        ("group 3×3 8 @28 fwd", 8, 784, 72, false, false, false),
        ("group 3×3 16 @14 fwd", 16, 196, 144, false, false, false),
        ("group 3×3 32 @7 fwd", 32, 49, 288, false, false, false),
        ("group 3×3 4 @56 dx", 36, 3136, 4, true, false, false),
        ("group 3×3 8 @28 dw", 8, 72, 784, false, true, true),
    ];
    for &(what, m, n, k, at, bt, acc) in cases {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        let macs = (m * n * k) as f64;
        let theirs = rate(macs, || crate_gemm(m, n, k, &mut c, &a, at, &b, bt, acc));
        let ours = rate(macs, || {
            sgemm::sgemm(
                m,
                n,
                k,
                &mut c,
                Operand::new(&a, m, k, at),
                Operand::new(&b, k, n, bt),
                acc,
            )
        });
        println!(
            "| {what} | {m}×{n}×{k} | {theirs:.1} | {ours:.1} | {:.2} |",
            ours / theirs
        );
    }
    // as the conv op runs small planes: filters packed once, one image's
    // columns against several images' side by side
    println!("\n| product, packed filters | m×n×k | ours GMAC/s |\n|---|---|---:|");
    for &(what, m, n, k) in &[
        ("3×3 512 @7 fwd, 1 image", 512usize, 49usize, 4608usize),
        ("3×3 512 @7 fwd, 11 images", 512, 539, 4608),
        ("1×1 512→2048 @7 fwd, 1 image", 2048, 49, 512),
        ("1×1 512→2048 @7 fwd, 11 images", 2048, 539, 512),
        ("3×3 256 @14 fwd, 1 image", 256, 196, 2304),
        ("3×3 256 @14 fwd, 3 images", 256, 588, 2304),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        let packed = sgemm::PackedA::new(m, k, Operand::new(&a, m, k, false));
        let ours = rate((m * n * k) as f64, || {
            sgemm::sgemm_packed(n, &mut c, &packed, Operand::new(&b, k, n, false), false)
        });
        println!("| {what} | {m}×{n}×{k} | {ours:.1} |");
    }
}
