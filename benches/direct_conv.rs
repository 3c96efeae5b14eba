//! Single-thread throughput (GMAC/s) of the direct 3×3 kernels, for each
//! instruction set this CPU has, on the three ResNet-20 stage shapes, so a kernel change can be judged on its own
//! (the im2col + GEMM path they replace ran these at 35–60 % of this):
//!
//!     cargo bench --bench direct_conv

use sss_onnx::train::kernels::direct3x3::{
    conv, filter_batch, filters_forward, grad_filter, pad, Isa, Layout,
};
use sss_onnx::train::kernels::Geometry;
mod common;

/// GMAC/s of `f`, about 2e9 multiply-adds' worth of calls.
fn rate(macs: f64, f: impl FnMut()) -> f64 {
    common::rate(macs, 2e9, 1, f)
}

fn main() {
    // one thread: the kernels' own speed, not the machine's thread count
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .ok();
    for isa in [Isa::Avx512, Isa::Avx2] {
        if !isa.available() {
            println!("{isa:?}: not on this CPU");
            continue;
        }
        // (input channels, output channels, input size, stride): the
        // ResNet-20 stage convs and the two stage-opening stride-2 ones
        for &(cin, cout, h, s) in &[
            (16usize, 16usize, 32usize, 1usize),
            (32, 32, 16, 1),
            (64, 64, 8, 1),
            (16, 32, 32, 2),
            (32, 64, 16, 2),
            // torchvision ResNet stages (AVX-512 only: lane masks per
            // vector on 56-, 28- and 14-wide rows)
            (64, 64, 56, 1),
            (128, 128, 28, 1),
            (256, 256, 14, 1),
            (128, 256, 28, 2),
        ] {
            let g = Geometry::new(cin, h, h, [3, 3], [s, s], [1, 1, 1, 1], [1, 1]);
            let Some(plan) = Layout::with_isa(&g, isa) else {
                continue;
            };
            let out = cout * plan.oh * plan.ow;
            let x: Vec<f32> = (0..cin * h * h).map(|i| (i % 7) as f32 * 0.1).collect();
            let w: Vec<f32> = (0..cout * cin * 9).map(|i| (i % 5) as f32 * 0.01).collect();
            let macs = (out * cin * 9) as f64;
            let wt = filters_forward(&plan, &w, cout, cin);
            let (mut xp, mut y) = (Vec::new(), vec![0f32; out]);
            let mut dw = vec![0f32; cout * cin * 9];
            let fwd = rate(macs, || {
                pad(&plan, &x, cin, &mut xp);
                conv(&plan, &xp, cin, &wt, cout, &mut y);
            });
            // the filter gradient as the conv op runs it, a few images a call
            let k = filter_batch(&plan);
            let (xs, dys) = (x.repeat(k), y.repeat(k));
            let filt = rate(k as f64 * macs, || {
                pad(&plan, &xs, k * cin, &mut xp);
                grad_filter(&plan, &xp, cin, &dys, cout, k, &mut dw);
            });
            // the same on images fresh from memory, as a training step meets
            // them: copies enough to overflow the last-level cache, in turn
            let bytes = 4 * k * (cin * h * h + out);
            let copies = (64usize << 20).div_ceil(bytes).clamp(2, 256);
            let pool: Vec<(Vec<f32>, Vec<f32>)> =
                (0..copies).map(|_| (xs.clone(), dys.clone())).collect();
            let mut turn = 0;
            let cold_fwd = rate(macs, || {
                let (xs, _) = &pool[turn % copies];
                turn += 1;
                pad(&plan, &xs[..cin * h * h], cin, &mut xp);
                conv(&plan, &xp, cin, &wt, cout, &mut y);
            });
            let cold_filt = rate(k as f64 * macs, || {
                let (xs, dys) = &pool[turn % copies];
                turn += 1;
                pad(&plan, xs, k * cin, &mut xp);
                grad_filter(&plan, &xp, cin, dys, cout, k, &mut dw);
            });
            println!(
                "{isa:?}  {cin:3} → {cout:<3} {h:2}×{h:<2} stride {s}  forward {fwd:5.1}  filter gradient {filt:5.1}  \
                 from memory: {cold_fwd:5.1} / {cold_filt:5.1} GMAC/s"
            );
        }
    }
}
