//! The gates as training moves them: the proximal step, the lock that
//! freezes the zero pattern, and the budget step applied to the model
//! (the choice itself is `budget`'s).

use super::budget::{self, CutRule, GateState};
use super::{Rank, Trainer};
use crate::error::{Error, Result};
use crate::train::model::to_ndarray;
use candle_core::{Tensor, Var};

#[derive(Clone)]
pub(super) struct GateVar {
    pub name: String,
    pub block_gate: bool,
    /// Channels per factor (group gates tie C/G channels).
    pub span: usize,
    /// γ multiplier: 1, or the MACs one factor costs relative to the mean.
    pub weight: f64,
    /// With a latency table: the widths (factor counts) the budget may
    /// leave this gate at.
    pub widths: Option<Vec<usize>>,
}

impl Trainer {
    pub(super) fn gate_step(
        &mut self,
        gv: &GateVar,
        var: &Var,
        grad: &Tensor,
        lr: f64,
    ) -> candle_core::Result<()> {
        let lam = var.as_tensor().detach();
        // importance before the step: the first-order loss change of λ → 0,
        // kept only while a budget step can still use it
        if self.cfg.rank == Rank::Taylor
            && self.cfg.target_macs.is_some()
            && self.locked_at.is_none()
        {
            let t = (&lam * grad)?.sqr()?;
            let t = match self.taylor.remove(&gv.name) {
                Some(acc) => (acc + t)?,
                None => t,
            };
            self.taylor.insert(gv.name.clone(), t);
        }
        let shape = lam.dims().to_vec();
        let gamma = if self.locked_at.is_some() {
            0.0
        } else {
            self.gamma * gv.weight
        };
        let new = if gv.span > 1 {
            let c = lam.elem_count();
            let groups = c / gv.span;
            let l = lam
                .reshape((groups, gv.span))?
                .narrow(1, 0, 1)?
                .flatten_all()?;
            let g = grad.reshape((groups, gv.span))?.sum(1)?;
            let u = self.rule.update(&gv.name, &l, &g, lr, gamma)?;
            u.reshape((groups, 1))?
                .broadcast_as((groups, gv.span))?
                .contiguous()?
                .reshape(shape)?
        } else {
            self.rule.update(&gv.name, &lam, grad, lr, gamma)?
        };
        // what a budget step or the lock deleted stays deleted
        let new = match self.alive.get(&gv.name) {
            Some(m) if self.locked_at.is_some() => {
                // after the lock the pattern is fixed both ways: a factor
                // alive at the lock keeps its last value rather than reach
                // 0 (a gate still falling when γ's zeros reached the target
                // would otherwise take the MACs past it)
                let new = new.broadcast_mul(m)?;
                let hit = new.eq(0.0)?.to_dtype(new.dtype())?.broadcast_mul(m)?;
                (&new + (hit * &lam)?)?
            }
            Some(m) => new.broadcast_mul(m)?,
            None => new,
        };
        var.set(&new)
    }

    /// Freezes the zero pattern: every gate element that is 0 stays 0.
    pub(super) fn lock(&mut self) -> candle_core::Result<()> {
        for gv in &self.gates {
            let v = self.model.vars[&gv.name].as_tensor();
            let m = v.ne(0.0)?.to_dtype(v.dtype())?;
            self.alive.insert(gv.name.clone(), m);
        }
        Ok(())
    }

    /// A budget step: set to 0 the least important factors (by `cfg.rank`),
    /// one at a time, skipping any whose removal would undershoot the band,
    /// until the implied cost reaches `target`; then every zero (APG's too)
    /// is frozen. Returns how many factors the budget zeroed.
    pub(super) fn enforce_budget(&mut self, target: f64) -> Result<usize> {
        let e = |err: candle_core::Error| Error::during("a MAC budget step", err);
        let mut gates = self.gate_states()?;
        let rule = CutRule {
            target,
            blocks_first: self.cfg.blocks_first,
            timed: self.cost.timed(),
        };
        let ratio_of = |gs: &[GateState]| -> Result<f64> {
            let mut g = self.model.graph.clone();
            for (gv, gs) in self.gates.iter().zip(gs) {
                let full = expand(&gs.values, gv.span, g.initializers.get(&gv.name))?;
                g.initializers.insert(gv.name.clone(), full);
            }
            self.cost.ratio(&g)
        };
        let Some(mut zeroed) = budget::cut(&mut gates, rule, ratio_of)? else {
            return Ok(0);
        };
        for (gi, gs) in gates.iter().enumerate() {
            self.write_gate(gi, &gs.values).map_err(e)?;
        }
        zeroed += self.align_gates()?;
        // budget zeros are final: APG must not revive them (earlier frozen
        // factors are 0 already, so the new mask covers them)
        self.lock().map_err(e)?;
        Ok(zeroed)
    }

    /// Every gate as the budget sees it: values, scores, widths, cost.
    fn gate_states(&self) -> Result<Vec<GateState>> {
        (0..self.gates.len())
            .map(|gi| {
                let values = self.factors(gi)?;
                let scores = self.scores(gi, &values)?;
                Ok(GateState {
                    values,
                    scores,
                    widths: self.gates[gi].widths.clone(),
                    block: self.gates[gi].block_gate,
                    cost: self.costs[gi],
                })
            })
            .collect()
    }

    /// One value per factor of gate `gi`.
    fn factors(&self, gi: usize) -> Result<Vec<f32>> {
        let gv = &self.gates[gi];
        let a = to_ndarray(self.model.vars[&gv.name].as_tensor())?;
        Ok(a.iter().step_by(gv.span).copied().collect())
    }

    /// The budget's importance of each factor of gate `gi` (`f`: its
    /// values): Taylor per unit of cost, or |λ|.
    fn scores(&self, gi: usize, f: &[f32]) -> Result<Vec<f64>> {
        let gv = &self.gates[gi];
        if let (Rank::Taylor, Some(t)) = (self.cfg.rank, self.taylor.get(&gv.name)) {
            let t = to_ndarray(t)?;
            let t: Vec<f64> = t.iter().map(|&v| v as f64).collect();
            return Ok(t
                .chunks(gv.span)
                .map(|c| c.iter().sum::<f64>() / self.costs[gi].max(1.0))
                .collect());
        }
        Ok(f.iter().map(|v| v.abs() as f64).collect())
    }

    /// Zeroes, in every gate with allowed widths whose alive count (after
    /// APG's zeros) lies between two, its least important factors down to
    /// the narrower. Returns how many.
    pub(super) fn align_gates(&mut self) -> Result<usize> {
        let e = |err: candle_core::Error| Error::during("aligning channel counts", err);
        let mut zeroed = 0;
        for gi in 0..self.gates.len() {
            if self.gates[gi].widths.is_none() {
                continue;
            }
            let values = self.factors(gi)?;
            let scores = self.scores(gi, &values)?;
            let mut gs = GateState {
                values,
                scores,
                widths: self.gates[gi].widths.clone(),
                block: self.gates[gi].block_gate,
                cost: self.costs[gi],
            };
            let n = budget::align(&mut gs);
            if n > 0 {
                zeroed += n;
                self.write_gate(gi, &gs.values).map_err(e)?;
            }
        }
        Ok(zeroed)
    }

    fn write_gate(&self, gi: usize, factors: &[f32]) -> candle_core::Result<()> {
        let gv = &self.gates[gi];
        let var = &self.model.vars[&gv.name];
        let shape = var.as_tensor().dims().to_vec();
        let full: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|i| factors[i / gv.span])
            .collect();
        let t = Tensor::from_vec(full, shape, var.as_tensor().device())?
            .to_dtype(var.as_tensor().dtype())?;
        var.set(&t)
    }
}

/// A gate tensor of `like`'s shape holding `factors`, each repeated over
/// its `span` elements.
fn expand(
    factors: &[f32],
    span: usize,
    like: Option<&crate::graph::Tensor>,
) -> Result<crate::graph::Tensor> {
    let shape = like
        .and_then(|t| t.as_f32())
        .map(|a| a.shape().to_vec())
        .unwrap_or_else(|| vec![factors.len() * span]);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| factors.get(i / span.max(1)).copied().unwrap_or(0.0))
        .collect();
    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), v)
        .map(crate::graph::Tensor::F32)
        .map_err(|e| Error::Invalid(format!("gate values: {e}")))
}
