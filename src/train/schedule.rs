//! Learning-rate schedules: constant, step, multi-step, cosine, each with an
//! optional linear warm-up.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Constant,
    /// × `factor` every `step_every` steps.
    Step,
    /// × `factor` at each milestone (fractions of the run).
    Multistep,
    Cosine,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: Kind,
    pub base: f64,
    pub total: usize,
    pub warmup: usize,
    pub factor: f64,
    pub step_every: usize,
    /// Milestones as fractions of `total` (multi-step).
    pub milestones: Vec<f64>,
}

impl Schedule {
    /// `kind` from `base` over `total` steps after `warmup`; step decay by
    /// 0.1 every third of the run, multi-step at 50 % and 75 %.
    pub fn new(kind: Kind, base: f64, total: usize, warmup: usize) -> Self {
        Schedule {
            kind,
            base,
            total,
            warmup,
            factor: 0.1,
            step_every: (total / 3).max(1),
            milestones: vec![0.5, 0.75],
        }
    }

    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.base * (step + 1) as f64 / self.warmup as f64;
        }
        match self.kind {
            Kind::Constant => self.base,
            Kind::Step => self.base * self.factor.powi((step / self.step_every.max(1)) as i32),
            Kind::Multistep => {
                let passed = self
                    .milestones
                    .iter()
                    .filter(|&&m| step as f64 >= m * self.total as f64)
                    .count();
                self.base * self.factor.powi(passed as i32)
            }
            Kind::Cosine => {
                let span = self.total.saturating_sub(self.warmup).max(1) as f64;
                let t = ((step - self.warmup) as f64 / span).min(1.0);
                0.5 * self.base * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// `compress`'s training budget when the user names none: 8 epochs (a
/// minute on the bundled subset), at most `DEFAULT_MAX_STEPS` steps, so a
/// user's full training set (60 000 images: 3 750 steps of 128) or a large
/// photo folder does not silently mean hours. Returns the steps.
pub fn default_steps(train_len: usize, batch: usize) -> usize {
    let epochs8 = 8 * crate::train::feed::steps_per_epoch(train_len, batch);
    epochs8.min(DEFAULT_MAX_STEPS)
}

/// The cap of the default budget (2 000 steps of 128 is ~4 passes over
/// 60 000 images).
pub const DEFAULT_MAX_STEPS: usize = 2000;

/// Time left at `images_per_s` for the steps still to run, as `m:ss`.
pub fn eta(steps_left: usize, batch: usize, images_per_s: f64) -> String {
    // NaN and 0 alike: no rate yet
    if images_per_s.is_nan() || images_per_s <= 0.0 {
        return "?".into();
    }
    let s = (steps_left * batch) as f64 / images_per_s;
    let s = s.round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(kind: Kind) -> Schedule {
        Schedule {
            kind,
            base: 0.1,
            total: 100,
            warmup: 0,
            factor: 0.1,
            step_every: 30,
            milestones: vec![0.5, 0.75],
        }
    }

    #[test]
    fn values_by_hand() {
        assert_eq!(s(Kind::Constant).lr(99), 0.1);
        assert!((s(Kind::Step).lr(29) - 0.1).abs() < 1e-15);
        assert!((s(Kind::Step).lr(30) - 0.01).abs() < 1e-15);
        assert!((s(Kind::Step).lr(65) - 0.001).abs() < 1e-15);
        assert!((s(Kind::Multistep).lr(49) - 0.1).abs() < 1e-15);
        assert!((s(Kind::Multistep).lr(50) - 0.01).abs() < 1e-15);
        assert!((s(Kind::Multistep).lr(75) - 0.001).abs() < 1e-15);
        assert!((s(Kind::Cosine).lr(0) - 0.1).abs() < 1e-15);
        assert!((s(Kind::Cosine).lr(50) - 0.05).abs() < 1e-12);
        assert!(s(Kind::Cosine).lr(100).abs() < 1e-15);
        let mut w = s(Kind::Cosine);
        w.warmup = 10;
        assert!((w.lr(0) - 0.01).abs() < 1e-15);
        assert!((w.lr(9) - 0.1).abs() < 1e-15);
        assert!((w.lr(10) - 0.1).abs() < 1e-15);
    }
}
