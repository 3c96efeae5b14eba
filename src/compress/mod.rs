//! The whole pipeline as a library call: import → gate → train (APG) →
//! prune → validate → score → bench → report. `options` is what it can be
//! told and its resolution, `accept` when a result is refused, `stages` one
//! function per stage.
//!
//! ```no_run
//! use sss_onnx::compress::{self, Options};
//! let opts = Options {
//!     model: Some("model.onnx".into()),
//!     data: Some("data/".into()),
//!     target_macs: Some(0.5),
//!     ..Options::default()
//! };
//! let outcome = compress::run(&opts).unwrap();
//! println!("{:.1} % fewer MACs", outcome.report.macs_reduction * 100.0);
//! ```

pub mod accept;
mod options;
pub mod recipe;
mod stages;

pub use options::{
    BenchOptions, EvalOptions, Options, Resolved, RestoreBn, WriteOptions, DEFAULT_TARGET_MACS,
};

use crate::error::Result;
use crate::progress::{Progress, Quiet};
use crate::report::Report;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

/// What a successful run leaves behind.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub report: Report,
    /// Every file written, the pruned model first.
    pub written: Vec<PathBuf>,
}

/// Runs `opts` quietly; see `run_with`.
pub fn run(opts: &Options) -> Result<Outcome> {
    run_with(opts, &mut Quiet, &AtomicBool::new(false))
}

/// Runs the pipeline on `opts.model`, telling `progress` what it does;
/// setting `stop` ends training at the next step with a checkpoint and
/// `Error::Interrupted`. The pruned model, its report and plots are
/// written only when the result is accepted (exact, on target, above
/// chance, within `max_drop`); otherwise `Error::Rejected`.
pub fn run_with(opts: &Options, progress: &mut dyn Progress, stop: &AtomicBool) -> Result<Outcome> {
    let plan = Resolved::new(opts)?;
    const STAGES: usize = 8;
    progress.stage(1, STAGES, "import");
    let source = stages::import(&plan, progress)?;
    progress.stage(2, STAGES, "gate");
    let mut gated = stages::gate(&plan, &source, progress)?;
    progress.stage(3, STAGES, "train (NAG for weights, APG for gates)");
    let trained = stages::train(&plan, &source, &mut gated, progress, stop)?;
    progress.stage(4, STAGES, "prune");
    let pruned = stages::prune(&plan, &gated, &trained, progress)?;
    progress.stage(5, STAGES, "validate (pruned vs trained gated model)");
    let checked = stages::validate(&plan, &source, &trained, &pruned, progress)?;
    progress.stage(6, STAGES, "evaluate");
    let scored = stages::score(&plan, &source, &trained, &pruned, checked, progress)?;
    stages::write_model(&plan, &source, &pruned)?;
    progress.stage(7, STAGES, "bench (interleaved, original vs pruned)");
    let latency = stages::bench(&plan, &source, &pruned, scored.macs)?;
    progress.stage(8, STAGES, "report");
    stages::report(&plan, &source, &gated, trained, pruned, scored, latency)
}
