//! What the single-thread kernel benchmarks share.

use std::time::Instant;

/// GMAC/s of `f` (macs multiply-adds a call), over enough calls for about
/// `budget` multiply-adds after one warm-up call. Timed by this thread's
/// time on a CPU where Linux tells it, so
/// another job on the same core slows the clock, not the rate; by the wall
/// clock elsewhere.
pub fn rate(macs: f64, budget: f64, min_reps: usize, mut f: impl FnMut()) -> f64 {
    let reps = ((budget / macs) as usize).max(min_reps);
    f();
    let (t, c) = (Instant::now(), on_cpu_ns());
    for _ in 0..reps {
        f();
    }
    let secs = match (c, on_cpu_ns()) {
        (Some(a), Some(b)) => (b - a) as f64 * 1e-9,
        _ => t.elapsed().as_secs_f64(),
    };
    macs * reps as f64 / secs / 1e9
}

/// This thread's CPU time (ns): `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`,
/// exact to the call (the scheduler's statistics file only moves at ticks).
#[cfg(target_os = "linux")]
fn on_cpu_ns() -> Option<u64> {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: a plain libc call writing the struct we pass.
    let ok = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0;
    ok.then(|| t.sec as u64 * 1_000_000_000 + t.nsec as u64)
}

#[cfg(not(target_os = "linux"))]
fn on_cpu_ns() -> Option<u64> {
    None
}
