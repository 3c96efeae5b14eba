//! The γ controller of runs whose APG zeros do the selecting: γ steered
//! along a glide path to the target, on the ratio the zero pattern implies
//! now and as projected from the gates' recent motion.

use super::Trainer;
use crate::error::Result;
use crate::graph::Graph;
use crate::train::model::to_ndarray;
use std::collections::HashMap;

/// Steps between target-controller updates.
pub(super) const STEER_EVERY: usize = 5;

/// Controller updates over which the gates' motion is measured.
pub(super) const STEER_WINDOW: usize = 3;

/// Steps ahead the target controller projects the gates' motion.
pub(super) const STEER_HORIZON: usize = 10;

/// Fraction of a single-phase run by which the controller aims to reach
/// its target (the rest trains the pattern with γ holding it).
pub(super) const STEER_REACH: f64 = 0.6;

impl Trainer {
    /// The graph with the current gate values, and (zero factors, all
    /// factors) as they are. With `ahead` steps, every factor whose motion
    /// over the remembered controller updates (`moving`), kept up, would
    /// cross 0 within them is set to 0: a projection of the zero pattern.
    /// The window spans several updates: one gate's noise over 5 steps
    /// (a whole block's, at a high gate learning rate) is no trend.
    pub(super) fn pattern(&self, ahead: usize) -> Result<(Graph, usize, usize)> {
        let mut g = self.model.graph.clone();
        let mut zeros = 0;
        let mut total = 0;
        for gv in &self.gates {
            let var = &self.model.vars[&gv.name];
            let mut a = to_ndarray(var.as_tensor())?;
            let n = a.len() / gv.span;
            zeros += a.iter().step_by(gv.span).filter(|&&v| v == 0.0).count();
            total += n;
            let oldest = self.moving.first().and_then(|m| m.get(&gv.name));
            if let Some(before) = oldest.filter(|_| ahead > 0) {
                let k = ahead as f32 / (STEER_EVERY * self.moving.len()) as f32;
                for (v, &p) in a.iter_mut().zip(before) {
                    if *v + (*v - p) * k <= 0.0 {
                        *v = 0.0;
                    }
                }
            }
            g.initializers
                .insert(gv.name.clone(), crate::graph::Tensor::F32(a));
        }
        Ok((g, zeros, total))
    }

    /// Remembers the gate values for the next projection.
    pub(super) fn remember_gates(&mut self) -> Result<()> {
        let mut now = HashMap::new();
        for gv in &self.gates {
            let a = to_ndarray(self.model.vars[&gv.name].as_tensor())?;
            now.insert(gv.name.clone(), a.iter().copied().collect());
        }
        self.moving.push(now);
        if self.moving.len() > STEER_WINDOW {
            self.moving.remove(0);
        }
        Ok(())
    }

    /// The target controller of single-phase runs (APG's own zeros do the
    /// selecting): γ is steered so the ratio the zeros imply follows a
    /// glide path to the target (`steer_aim`). `now`: (the ratio now, the
    /// path's value now); `ahead`: (the ratio if every factor kept moving
    /// as it did since the last update for `STEER_HORIZON` steps, the
    /// path's value then). γ rises while both are above the path, falls
    /// while either is below it (more factors are on their way to 0 than
    /// the path allows: easing off lets the loss gradient hold up the ones
    /// it needs, and zeros below the target may revive), and holds inside
    /// the ±2 % band. Steps are multiplicative and bounded; while the
    /// projection is more than 5 % below the path the gates' momentum is
    /// cleared too. Steering on the zeros alone, γ rises until the first zeros appear, by which time
    /// every gate has shrunk alike and a flood crosses 0 at once.
    pub(super) fn steer(&mut self, now: (f64, f64), ahead: (f64, f64)) {
        let (over_now, over_ahead) = (now.0 / now.1 - 1.0, ahead.0 / ahead.1 - 1.0);
        let rate = if over_now > 0.02 && over_ahead > 0.02 {
            (2.0 * over_now).clamp(0.02, 0.3)
        } else if over_now < -0.02 || over_ahead < -0.02 {
            (2.0 * over_now.min(over_ahead)).clamp(-0.3, -0.02)
        } else {
            0.0
        };
        if rate < 0.0 && over_ahead < -0.05 {
            // brake: the gates' momentum would carry the falling ones on
            // past the path whatever γ does now
            self.rule.load_state(HashMap::new());
        }
        self.gamma = (self.gamma * rate.exp()).clamp(1e-4, 100.0);
    }
}

/// The glide path of the target controller: from 1 at the start to
/// `target` at `STEER_REACH` of `steps` (the lock, or the run), linear,
/// then the target.
pub(super) fn steer_aim(target: f64, step: usize, steps: usize) -> f64 {
    let reach = (steps as f64 * STEER_REACH).max(1.0);
    let f = (step as f64 / reach).min(1.0);
    1.0 - (1.0 - target) * f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_glide_path_reaches_the_target_at_its_fraction_of_the_run() {
        assert_eq!(steer_aim(0.5, 0, 100), 1.0);
        assert!((steer_aim(0.5, 30, 100) - 0.75).abs() < 1e-12);
        assert!((steer_aim(0.5, 60, 100) - 0.5).abs() < 1e-12);
        assert_eq!(steer_aim(0.5, 90, 100), 0.5);
    }
}
