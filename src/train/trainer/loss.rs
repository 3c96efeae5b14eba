//! The training loss: cross-entropy on the labels, mixed with
//! distillation from the model as it was at the start, or (no labels)
//! distillation alone: the softened scores' KL for a classifier, the
//! relative squared error of the outputs for any other model.

use super::Trainer;
use candle_core::{DType, Tensor, D};

/// T²·KL(softmax(t/T) ‖ softmax(s/T)) averaged over the batch: the
/// distillation term of Hinton et al. (2015), T² keeping the gradient's
/// scale. It is 0 when the student matches the teacher (the teacher's
/// entropy is subtracted: the gradient is that of the cross-entropy),
/// and its gradient in the student's logits is T·(q − p)/N, with p, q
/// the softened teacher and student distributions.
pub fn distillation(student: &Tensor, teacher: &Tensor, t: f64) -> candle_core::Result<Tensor> {
    let tl = (teacher.detach() / t)?;
    let p = candle_nn::ops::softmax(&tl, D::Minus1)?;
    let logp = candle_nn::ops::log_softmax(&tl, D::Minus1)?;
    let logq = candle_nn::ops::log_softmax(&(student / t)?, D::Minus1)?;
    (p * (logp - logq)?)?.sum(D::Minus1)?.mean_all()? * (t * t)
}

/// Σ(s − t)² / Σt² over the batch: the student's output error relative
/// to the size of the teacher's output. For outputs that are not a
/// classifier's scores (a segmenter's maps, a detector's boxes and
/// scores), whose scale and meaning the tool cannot know; 0 at a perfect
/// match, 1 for a student that outputs zeros.
pub fn output_matching(student: &Tensor, teacher: &Tensor) -> candle_core::Result<Tensor> {
    let t = teacher.detach();
    let err = (student - &t)?.sqr()?.sum_all()?;
    let size = t
        .sqr()?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    err / size.max(1e-12)
}

/// Whether an output is a classifier's scores, [N, classes].
pub fn is_scores(output: &Tensor) -> bool {
    output.rank() == 2
}

impl Trainer {
    /// The loss of `logits` for input `x` and labels `y`, with the
    /// teacher's logits when it was run: cross-entropy, mixed with
    /// distillation from the teacher when there is one (weight α).
    pub fn loss(
        &self,
        x: &Tensor,
        logits: &Tensor,
        y: &Tensor,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let ce = || candle_nn::loss::cross_entropy(logits, y);
        let Some(teacher) = &self.teacher else {
            return Ok((ce()?, None));
        };
        let (a, t) = (self.cfg.distill, self.cfg.distill_temperature.max(1e-3));
        let tl = teacher
            .infer(x)
            .map_err(|e| candle_core::Error::Msg(format!("distillation teacher: {e}")))?;
        let kd = if is_scores(logits) {
            distillation(logits, &tl, t)?
        } else {
            output_matching(logits, &tl)?
        };
        if a >= 1.0 || self.cfg.label_free {
            return Ok((kd, Some(tl)));
        }
        Ok((((ce()? * (1.0 - a))? + (kd * a)?)?, Some(tl)))
    }
}
