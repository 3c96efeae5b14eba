//! Single-thread throughput (GMAC/s) of the direct 3×3 kernels on the three
//! ResNet-20 stage shapes, so a kernel change can be judged on its own
//! (the im2col + GEMM path they replace ran these at 35–60 % of this):
//!
//!     cargo bench --bench direct_conv

use sss_onnx::train::kernels::direct3x3::{conv, filters_forward, grad_filter, pad};
use sss_onnx::train::kernels::Geometry;
use std::time::Instant;

fn rate(macs: f64, f: impl FnMut()) -> f64 {
    let mut f = f;
    let reps = (2e9 / macs).max(1.0) as usize;
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    macs * reps as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn main() {
    // one thread: the kernels' own speed, not the machine's thread count
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .ok();
    if !sss_onnx::train::kernels::direct3x3::applies(
        &Geometry::new(16, 32, 32, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1]),
        1,
    ) {
        println!("no AVX2/FMA on this CPU: the direct kernels are not used");
        return;
    }
    for &(c, h) in &[(16usize, 32usize), (32, 16), (64, 8)] {
        let x: Vec<f32> = (0..c * h * h).map(|i| (i % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..c * c * 9).map(|i| (i % 5) as f32 * 0.01).collect();
        let macs = (c * c * 9 * h * h) as f64;
        let wt = filters_forward(&w, c, c);
        let (mut xp, mut y, mut dw) = (Vec::new(), vec![0f32; c * h * h], vec![0f32; c * c * 9]);
        let fwd = rate(macs, || {
            pad(&x, c, h, h, &mut xp);
            conv(&xp, c, h, h, &wt, c, &mut y);
        });
        let dy = y.clone();
        let filt = rate(macs, || {
            pad(&x, c, h, h, &mut xp);
            grad_filter(&xp, c, h, h, &dy, c, &mut dw);
        });
        println!(
            "{c:3} channels {h:2}×{h:<2}  forward {fwd:5.1}  filter gradient {filt:5.1} GMAC/s"
        );
    }
}
