//! Optional wall-clock accounting per kernel, for the training benchmark's
//! "where the time goes" table. Off by default: then each kernel call costs
//! one relaxed atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<Vec<(&'static str, f64, usize)>> = Mutex::new(Vec::new());

/// Starts (or stops) accounting; clears what was gathered.
pub fn enable(on: bool) {
    ON.store(on, Ordering::Relaxed);
    if let Ok(mut t) = TOTALS.lock() {
        t.clear();
    }
}

/// (kernel, seconds, calls) since `enable`, in first-call order; cleared.
pub fn take() -> Vec<(&'static str, f64, usize)> {
    TOTALS
        .lock()
        .map(|mut t| std::mem::take(&mut *t))
        .unwrap_or_default()
}

/// Runs `f`, charging its time to `name()` when accounting is on (the name
/// is only asked for then: some ops work theirs out).
#[inline]
pub fn timed<R>(name: impl FnOnce() -> &'static str, f: impl FnOnce() -> R) -> R {
    if !ON.load(Ordering::Relaxed) {
        return f();
    }
    let name = name();
    let t0 = Instant::now();
    let r = f();
    let dt = t0.elapsed().as_secs_f64();
    if let Ok(mut t) = TOTALS.lock() {
        match t.iter_mut().find(|e| e.0 == name) {
            Some(e) => {
                e.1 += dt;
                e.2 += 1;
            }
            None => t.push((name, dt, 1)),
        }
    }
    r
}
