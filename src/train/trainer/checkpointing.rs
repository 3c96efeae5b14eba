//! Checkpoints: written every `checkpoint_every` steps and on an
//! interruption; a run resumed from one continues its phase.

use super::super::checkpoint::{self, Meta};
use super::super::model::Model;
use super::{Selection, Trainer};
use crate::error::{Error, Result};

impl Trainer {
    /// Continues from a checkpoint directory.
    pub fn resume(&mut self, ck: checkpoint::Checkpoint) -> Result<()> {
        self.model = Model::new(&ck.graph, &self.model.device)?;
        self.nag.load_state(ck.weights_state);
        self.rule.load_state(ck.gates_state);
        self.gamma = ck.meta.gamma;
        self.start_step = ck.meta.step;
        // the phase and the frozen zeros follow from the step: budget steps
        // already taken are not repeated, their zeros stay (the Taylor sums
        // start again)
        let e = |err: candle_core::Error| Error::during("resuming", err);
        if self.lock_step().is_some_and(|l| self.start_step >= l) {
            self.lock().map_err(e)?;
            self.locked_at = self.lock_step();
        } else if self.cfg.target_macs.is_some() && self.cfg.selection == Selection::Budget {
            while self.budget_due(self.start_step.saturating_sub(1)).is_some() {
                self.cuts += 1;
            }
            if self.cuts > 0 {
                self.lock().map_err(e)?;
            }
        }
        Ok(())
    }

    pub(super) fn save(&self, step: usize) -> Result<()> {
        let Some(dir) = &self.cfg.checkpoint_dir else {
            return Ok(());
        };
        let meta = Meta {
            step,
            gamma: self.gamma,
            seed: self.cfg.seed,
            total_steps: self.cfg.steps,
        };
        checkpoint::save(
            dir,
            &self.model.write_back()?,
            &meta,
            self.nag.state(),
            self.rule.state(),
        )
    }
}
