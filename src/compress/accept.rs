//! When `compress` refuses a result (exit 1, nothing written) or its input
//! (exit 2): an original model that scores at chance on the data, a pruned
//! model that does not compute what the gated one does, and an outcome off
//! its MAC target, at chance or below `max_drop`.

use super::options::Resolved;
use crate::error::{Error, Result};
use crate::measure::validate::Validation;
use std::path::Path;

/// Top-1 up to this many times chance counts as chance.
pub const CHANCE_FACTOR: f64 = 1.5;

/// Whether `top1` over `classes` classes is no better than guessing.
pub fn at_chance(top1: f64, classes: usize) -> bool {
    top1 <= CHANCE_FACTOR / classes.max(2) as f64
}

/// Why a finished run is not a success: MACs outside the asked band
/// (±5 % of the original's) or accuracy at chance.
pub fn outcome_problem(
    target: Option<f64>,
    macs0: u64,
    macs1: u64,
    top1: f64,
    classes: usize,
) -> Option<String> {
    let ratio = macs1 as f64 / macs0.max(1) as f64;
    if let Some(t) = target {
        if (ratio - t).abs() > 0.05 {
            return Some(format!(
                "the pruned model has {:.1} % of the MACs, outside the asked {:.0} ± 5 %",
                ratio * 100.0,
                t * 100.0
            ));
        }
    }
    let chance = 1.0 / classes as f64;
    if at_chance(top1, classes) {
        return Some(format!(
            "the pruned model's top-1 {:.2} % is at chance ({:.1} % for {classes} classes)",
            top1 * 100.0,
            chance * 100.0
        ));
    }
    None
}

/// The original model must score above chance: otherwise the data, its
/// labels or its preprocessing do not match it, and no result could show
/// what pruning costs.
pub fn original_scores(
    model: &Path,
    data: &Path,
    top1: f64,
    classes: usize,
    preprocessing: &str,
) -> Result<()> {
    if !at_chance(top1, classes) {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{} scores {:.2} % top-1 on {} ({} classes: chance is {:.1} %): the data, its labels or its preprocessing do not match the model ({preprocessing}; see --mean/--std/--resize/--center-crop/--channel-order), and a model at chance cannot show what pruning costs",
        model.display(),
        top1 * 100.0,
        data.display(),
        classes,
        100.0 / classes as f64,
    )))
}

/// The pruned model must compute what the trained gated model computes
/// (within the validation's tolerance); returns the largest difference.
pub fn exact(run: &Resolved, v: &Validation) -> Result<f64> {
    let worst = v.outputs.iter().map(|d| d.max_abs).fold(0.0, f64::max);
    if !v.passed {
        return Err(Error::Rejected(format!(
            "the pruned model differs from the trained gated model by {worst:.3e} (> 1e-4); nothing written to {}; both models are in {}",
            run.output.display(),
            run.checkpoints.display()
        )));
    }
    Ok(worst)
}

/// The finished result: top-1 within `max_drop` of the original's, the
/// MACs on a MAC target, above chance. A latency target is checked against
/// the prediction by the budget; the measurement is reported beside it,
/// not judged (a shared machine's timings move by more than the
/// tolerance).
pub fn outcome(
    run: &Resolved,
    (macs0, macs1): (u64, u64),
    (top1_0, top1_1): (f64, f64),
    classes: usize,
) -> Result<()> {
    let opts = &run.opts;
    let drop_pt = (top1_0 - top1_1) * 100.0;
    let too_much = opts
        .max_drop
        .filter(|&m| drop_pt > m)
        .map(|m| format!("top-1 fell by {drop_pt:.2} pt, more than the allowed max_drop {m} pt"));
    let macs_target = opts.target_macs.filter(|_| opts.target_latency.is_none());
    match too_much.or_else(|| outcome_problem(macs_target, macs0, macs1, top1_1, classes)) {
        None => Ok(()),
        Some(why) => Err(Error::Rejected(format!(
            "{why}; nothing written to {}; the trained models are in {}",
            run.output.display(),
            run.checkpoints.display()
        ))),
    }
}
