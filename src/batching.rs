//! How many samples to score at once, and how many to score at all, so
//! that evaluation stays in bounded memory and time whatever the model's
//! input size: a CIFAR ResNet scores its whole test split 250 at a time, an
//! ImageNet-size one a few at a time and a spread subset of a large split.

use crate::data::Dataset;
use crate::error::Result;
use crate::graph::{shape, Graph};
use serde::{Deserialize, Serialize};

/// Activation memory an evaluation batch may take. Candle keeps every
/// intermediate of a forward pass alive until the output is dropped, and
/// the runtimes' arenas come close to the same peak, so the estimate sums
/// all of them.
pub const ACTIVATION_BUDGET: u64 = 1 << 30;

/// The largest evaluation batch (beyond it nothing gets faster).
pub const MAX_BATCH: usize = 250;

/// Multiply-accumulates one pass over the test data may cost before the
/// default scores a subset (2·10¹²: about half a minute of the runtime on
/// two cores; a CIFAR ResNet's 10 000 test images are well within it).
pub const PASS_MACS: f64 = 2e12;

/// The fewest samples a default subset keeps.
pub const MIN_SAMPLES: usize = 500;

/// How models are scored on the test split (`[eval]` in a recipe).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalOptions {
    /// Test samples scored (spread evenly over the split). `None`: all of
    /// them while one pass costs at most 2·10¹² MACs, else as many as
    /// that buys, at least 500.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Samples per batch. `None`: as many as fit 1 GiB of activations
    /// (at most 250).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
}

/// The samples of `test` to score a model of `macs` MACs a sample with:
/// all of them, or (`eval_samples`) a subset spread over the split, and
/// a line saying so.
pub fn scored_subset(
    test: Dataset,
    macs: u64,
    opts: &EvalOptions,
) -> Result<(Dataset, Option<String>)> {
    let n = eval_samples(test.len(), macs, opts.limit);
    if n >= test.len() {
        return Ok((test, None));
    }
    let note = format!(
        "scoring {n} of the {} test samples, spread over the split ({:.2} G MACs a sample; --eval-limit to change)",
        test.len(),
        macs as f64 / 1e9
    );
    Ok((test.subset(&spread(test.len(), n))?, Some(note)))
}

/// Bytes of every value a forward pass computes for one sample (f32),
/// from the graph's shapes at batch 1; `None` when shapes are unknown.
pub fn activation_bytes(g: &Graph) -> Option<u64> {
    let inputs = shape::input_shapes(g, 1).ok()?;
    let facts = shape::infer(g, &inputs);
    let total: u64 = g
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter())
        .filter_map(|name| facts.shape(name))
        .map(|s| s.iter().product::<usize>() as u64 * 4)
        .sum();
    (total > 0).then_some(total)
}

/// The training batch when none is given.
pub const TRAIN_BATCH: usize = 128;

/// Memory a default training batch's activations may take.
pub const TRAIN_BUDGET: u64 = 8 << 30;

/// What training holds per sample over the sum of the forward's values:
/// the saved inputs of every op plus the gradients in flight. On the graph
/// as trained the sum also counts gate products and restored BatchNorms
/// that the fused kernels never materialise, so it overstates what is
/// held; the factor is set from measured peaks (`docs/notebook/imagenet.md`).
const TRAIN_FACTOR: f64 = 1.5;

/// The training batch for `g` when none is given: [`TRAIN_BATCH`], or the
/// largest power of two whose activations fit [`TRAIN_BUDGET`].
pub fn train_batch(g: &Graph) -> usize {
    let Some(per) = activation_bytes(g) else {
        return TRAIN_BATCH;
    };
    let fits = (TRAIN_BUDGET as f64 / (per as f64 * TRAIN_FACTOR)) as usize;
    if fits >= TRAIN_BATCH {
        return TRAIN_BATCH;
    }
    // the largest power of two not above it (at least 1)
    1 << (usize::BITS - 1 - fits.max(1).leading_zeros())
}

/// Training images for re-estimating BatchNorm statistics after
/// training: 1024, or as many as 5·10¹¹ MACs of forward passes buy (at
/// least 128).
pub fn recalibration_samples(macs_per_sample: u64) -> usize {
    let affordable = (PASS_MACS / 4.0 / macs_per_sample.max(1) as f64) as usize;
    affordable.clamp(128, 1024)
}

/// The batch for scoring `g`: `requested`, or the most that fits
/// [`ACTIVATION_BUDGET`] (at least 1, at most [`MAX_BATCH`]).
pub fn eval_batch(g: &Graph, requested: Option<usize>) -> usize {
    if let Some(b) = requested {
        return b.max(1);
    }
    match activation_bytes(g) {
        Some(per) => ((ACTIVATION_BUDGET / per.max(1)) as usize).clamp(1, MAX_BATCH),
        None => 32,
    }
}

/// How many of `len` samples to score: `requested` (capped at `len`), or
/// all of them while a pass costs at most [`PASS_MACS`], else as many as
/// that buys (at least [`MIN_SAMPLES`]).
pub fn eval_samples(len: usize, macs_per_sample: u64, requested: Option<usize>) -> usize {
    if let Some(n) = requested {
        return n.clamp(1, len.max(1));
    }
    let affordable = (PASS_MACS / macs_per_sample.max(1) as f64) as usize;
    len.min(affordable.max(MIN_SAMPLES))
}

/// `n` indices spread evenly over `0..len` (the whole range when
/// `n ≥ len`): every class of a class-sorted folder is represented.
pub fn spread(len: usize, n: usize) -> Vec<usize> {
    let n = n.min(len);
    (0..n).map(|i| i * len / n.max(1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::build::Builder;

    #[test]
    fn activation_bytes_sum_every_computed_value() {
        // conv 2→3 (3×3, stride 1, pad 1) on 4×4: [1, 3, 4, 4] = 48 floats,
        // its ReLU 48 more: 96 floats = 384 bytes (the input not counted)
        let mut b = Builder::new("x", &[-1, 2, 4, 4], 1);
        let y = b.conv("x", 2, 3, 3, 1);
        let z = b.relu(&y);
        let g = b.finish(&z);
        assert_eq!(activation_bytes(&g), Some(384));
        // 1 GiB / 384 B is far above the cap
        assert_eq!(eval_batch(&g, None), MAX_BATCH);
        assert_eq!(eval_batch(&g, Some(7)), 7);
        assert_eq!(train_batch(&g), TRAIN_BATCH);
        // a torchvision ResNet-50 at 224 needs a few at a time
        let g = crate::graph::build::torchvision_resnet([3, 4, 6, 3], true, 64, 10, 0);
        let b = eval_batch(&g, None);
        assert!((4..=16).contains(&b), "{b}");
        // ~110 MB a sample ungated: 8 GiB / (1.5 · 110 MB) = 52 → 32
        assert_eq!(train_batch(&g), 32);
        // gated: the gates' products count too
        let (gated, _) = crate::gate::insert(
            &g,
            &[
                crate::structure::GateKind::Channel,
                crate::structure::GateKind::Block,
            ],
        )
        .unwrap();
        let per = activation_bytes(&gated).unwrap() as f64 / activation_bytes(&g).unwrap() as f64;
        assert!(per > 1.2, "{per}");
    }

    #[test]
    fn spread_covers_the_range_evenly() {
        assert_eq!(spread(10, 5), vec![0, 2, 4, 6, 8]);
        assert_eq!(spread(3, 5), vec![0, 1, 2]);
        // a class-sorted folder of 4 classes × 100: every class picked
        let picks = spread(400, 40);
        for c in 0..4 {
            assert_eq!(picks.iter().filter(|&&i| i / 100 == c).count(), 10);
        }
    }

    #[test]
    fn samples_follow_the_mac_budget() {
        // ResNet-20 at 32×32 (41 M MACs): the whole 10k split
        assert_eq!(eval_samples(10_000, 41_000_000, None), 10_000);
        // ResNet-50 at 224 (4.1 G MACs): 2e12 / 4.1e9 = 487 → the minimum 500
        assert_eq!(eval_samples(50_000, 4_100_000_000, None), 500);
        // something in between: 2e12 / 1e9
        assert_eq!(eval_samples(50_000, 1_000_000_000, None), 2000);
        assert_eq!(eval_samples(300, 4_100_000_000, None), 300);
        assert_eq!(eval_samples(50_000, 1, Some(123)), 123);
        assert_eq!(eval_samples(50, 1, Some(123)), 50);
    }
}
