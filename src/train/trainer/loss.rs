//! The training loss: cross-entropy on the labels, mixed with
//! distillation from the model as it was at the start.

use super::Trainer;
use candle_core::{Tensor, D};

impl Trainer {
    /// Cross-entropy on the labels, mixed with distillation from the
    /// teacher when there is one: α·T²·H(softmax(t/T), softmax(s/T)) +
    /// (1 − α)·CE (Hinton et al. 2015; T² keeps the gradient scale).
    pub fn loss(&self, x: &Tensor, logits: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
        let ce = || candle_nn::loss::cross_entropy(logits, y);
        let Some(teacher) = &self.teacher else {
            return ce();
        };
        let (a, t) = (self.cfg.distill, self.cfg.distill_temperature.max(1e-3));
        let tl = teacher
            .infer(x)
            .map_err(|e| candle_core::Error::Msg(format!("distillation teacher: {e}")))?;
        let p = candle_nn::ops::softmax(&(tl.detach() / t)?, D::Minus1)?;
        let logq = candle_nn::ops::log_softmax(&(logits / t)?, D::Minus1)?;
        let kd = ((p * logq)?.sum(D::Minus1)?.mean_all()?.neg()? * (t * t))?;
        if a >= 1.0 {
            return Ok(kd);
        }
        (ce()? * (1.0 - a))? + (kd * a)?
    }
}
