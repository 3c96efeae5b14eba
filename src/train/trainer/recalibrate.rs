//! BatchNorm running statistics re-estimated after training.

use super::Trainer;
use crate::data::{Dataset, Preprocess};
use crate::error::{Error, Result};
use candle_core::Tensor;

impl Trainer {
    /// Re-estimates every BatchNorm's running statistics as the plain
    /// average of the batch statistics over `samples` training images
    /// (spread over the split, no augmentation), the weights fixed. After
    /// a short run that deleted structures, the running averages still
    /// carry the statistics of the network before the deletions, and the
    /// model scores far below its training accuracy in eval mode. Returns
    /// the number of batches used (0 when the model has no BatchNorm).
    pub fn recalibrate_bn(
        &mut self,
        data: &Dataset,
        prep: &Preprocess,
        samples: usize,
    ) -> Result<usize> {
        if self.model.stats.is_empty() || samples == 0 || data.is_empty() {
            return Ok(0);
        }
        let picks = crate::batching::spread(data.len(), samples.min(data.len()));
        let e = |err: candle_core::Error| Error::during("BatchNorm recalibration", err);
        let mut used = 0;
        for chunk in picks.chunks(self.cfg.batch.max(2)) {
            if chunk.len() < 2 {
                break; // one sample has no variance
            }
            let x = prep.batch(data, chunk)?;
            let t = Tensor::from_vec(
                x.iter().copied().collect::<Vec<f32>>(),
                x.shape(),
                &self.model.device,
            )
            .and_then(|t| t.to_dtype(self.model.dtype))
            .map_err(e)?;
            // batch i enters with weight 1/(i+1): a running mean
            self.model.stat_momentum = Some(used as f64 / (used + 1) as f64);
            let r = self.model.forward(&t, true);
            self.model.stat_momentum = None;
            let (_, updates) = r?;
            self.model.apply_stats(updates);
            used += 1;
        }
        Ok(used)
    }
}
