//! The weights' learning rate over a run's phases: the schedule, held at
//! its base until the lock in two-phase runs, restarted over the
//! fine-tuning phase, and warmed up again after every budget step.

use super::budget::lock_step;
use super::Config;

/// Steps of learning-rate warm-up after the lock and each budget step.
const LOCK_WARMUP: usize = 20;

/// The weights' learning rate at `step`. Two-phase runs hold the base rate
/// until the lock and run the schedule over the fine-tuning phase, so what
/// was deleted is recovered from at a real rate; after every budget step
/// (`last_cut`) it warms up again over `LOCK_WARMUP` steps: an abrupt
/// deletion plus stale momentum made BN-less, folded nets diverge within a
/// few steps.
pub(super) fn phase_lr(
    cfg: &Config,
    locked_at: Option<usize>,
    last_cut: Option<usize>,
    step: usize,
) -> f64 {
    let sched = &cfg.schedule;
    let lr = match (lock_step(cfg), locked_at) {
        (None, _) => sched.lr(step),
        (Some(_), None) if step < sched.warmup => sched.lr(step),
        (Some(_), None) => sched.base,
        (Some(_), Some(at)) => {
            let mut s = sched.clone();
            s.total = cfg.steps.saturating_sub(at).max(1);
            s.warmup = 0;
            s.lr(step.saturating_sub(at))
        }
    };
    match last_cut {
        Some(c) => lr * ((step + 1).saturating_sub(c) as f64 / LOCK_WARMUP as f64).min(1.0),
        None => lr,
    }
}

#[cfg(test)]
mod tests {
    use super::super::budget::aim;
    use super::super::config::test_config as cfg;
    use super::*;

    #[test]
    fn single_phase_runs_follow_the_schedule() {
        let c = cfg(None);
        assert_eq!(phase_lr(&c, None, None, 0), 0.1);
        assert!((phase_lr(&c, None, None, 50) - 0.05).abs() < 1e-12);
        assert_eq!(aim(&c, 0, 99), None);
    }

    #[test]
    fn two_phase_runs_hold_the_base_rate_then_restart_the_schedule() {
        let c = cfg(Some(0.4));
        assert_eq!(lock_step(&c), Some(40));
        // phase 1: constant (the cosine would be 0.0905 at step 30)
        assert_eq!(phase_lr(&c, None, None, 30), 0.1);
        // 5 steps after a budget step at 20: 6/20 of the rate
        assert!((phase_lr(&c, None, Some(20), 25) - 0.1 * 6.0 / 20.0).abs() < 1e-12);
        // fine-tuning: cosine over the 60 remaining steps, from the lock;
        // half-way (step 70) it is base/2, once the warm-up is over
        assert!((phase_lr(&c, Some(40), Some(40), 70) - 0.05).abs() < 1e-12);
        assert!(phase_lr(&c, Some(40), Some(40), 99) < 0.001);
    }
}
