//! The `compress` report: everything measured, as JSON (machine-readable),
//! a Markdown summary (stdout) and SVG plots.

pub mod svg;

use crate::cost::latency::Coefficients;
use crate::data::Spec;
use crate::measure::bench::Latency;
use crate::measure::validate::Validation;
use crate::prune::PruneReport;
use crate::train::optim::GateOptimizer;
use crate::train::schedule::Kind;
use crate::train::trainer::{Rank, Record, Selection};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ModelFigures {
    pub file: String,
    pub file_bytes: u64,
    pub macs: u64,
    pub params: u64,
    pub top1: f64,
    pub top5: f64,
    pub latency: Vec<Latency>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GateValues {
    pub name: String,
    pub kind: String,
    pub block: usize,
    pub values: Vec<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Training {
    /// The loss optimised: cross-entropy on the labels, mixed with
    /// distillation, or distillation from the original alone.
    pub objective: String,
    pub steps: usize,
    pub seconds: f64,
    pub images_per_s: f64,
    pub final_gamma: f64,
    pub curve: Vec<Record>,
    /// Accuracy of the trained gated model in candle (eval mode) and in the
    /// runtime: the written ONNX gives what training saw.
    pub gated_top1_candle: f64,
    pub gated_top1_runtime: f64,
    /// Step at which the zero pattern was locked (two-phase runs).
    pub locked_at: Option<usize>,
    /// Gate factors the MAC budget set to 0 (its steps up to the lock),
    /// beyond APG's zeros.
    pub budget_zeroed: usize,
    /// Where training ran ("cpu", "cuda:0").
    pub device: String,
    /// Times the divergence guard rewound to the last healthy state and
    /// halved the learning rate.
    pub rewinds: usize,
}

/// A latency target, the table's prediction for the trained pattern and
/// how the table was made.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyTarget {
    pub target: f64,
    pub batch: usize,
    pub threads: usize,
    /// The table's predicted ratio for the trained zero pattern.
    pub predicted: Option<f64>,
    /// The pruned model's p50 over the original's, timed interleaved at
    /// the target's batch and threads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured: Option<f64>,
    pub original_ms: f64,
    pub fit: Coefficients,
    /// The whole models the fit used: (what, Σ probe ms, Σ block
    /// elements, measured ms).
    pub calibration: Vec<(String, f64, f64, f64)>,
    pub timed_convs: usize,
    pub seconds: f64,
}

/// The settings a run resolved (stated beside the recipe).
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub structures: Vec<String>,
    pub target_macs: Option<f64>,
    pub latency_target: Option<LatencyTarget>,
    pub gamma_start: f64,
    pub gate_optimizer: GateOptimizer,
    pub gate_lr: Option<f64>,
    pub lock_at: Option<f64>,
    pub rank: Rank,
    pub budget_steps: usize,
    pub selection: Selection,
    pub blocks_first: bool,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub schedule: Kind,
    pub momentum: f64,
    pub weight_decay: f64,
    pub seed: u64,
    pub augment: String,
    pub threads: usize,
    pub restore_bn: bool,
    pub preprocess: Spec,
}

/// The data a run scored on.
#[derive(Debug, Clone, Serialize)]
pub struct DataSummary {
    pub dir: std::path::PathBuf,
    pub name: String,
    /// Test samples scored (a spread subset of a large split).
    pub test_samples: usize,
    pub test_split_samples: usize,
    pub preprocess: String,
    /// Whether the data's labels were read. Without them every top-1
    /// figure is agreement with the original model's top-1 on the same
    /// held-out images (the original's is then 1 by definition).
    pub labelled: bool,
    /// What `top1` measures: "top-1 accuracy" or "top-1 agreement with
    /// the original".
    pub metric: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: String,
    pub status: String,
    pub runtime: String,
    /// The recipe the run was given (`compress --config` reads it back).
    pub recipe: serde_json::Value,
    pub settings: Settings,
    pub data: DataSummary,
    pub original: ModelFigures,
    pub pruned: ModelFigures,
    pub macs_reduction: f64,
    pub params_reduction: f64,
    pub accuracy_drop_pt: f64,
    pub pruning: PruneReport,
    pub exactness: Validation,
    pub training: Training,
    pub gates: Vec<GateValues>,
    pub plots: Vec<String>,
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn mega(x: u64) -> String {
    format!("{:.2} M", x as f64 / 1e6)
}

/// The Markdown summary printed on stdout.
pub fn markdown(r: &Report) -> String {
    let (o, p) = (&r.original, &r.pruned);
    let mut s = String::new();
    s.push_str(&format!(
        "## sss-onnx compress: {} → {}\n\n",
        o.file, p.file
    ));
    s.push_str("| | original | pruned | change |\n|---|---:|---:|---:|\n");
    s.push_str(&format!(
        "| MACs (batch 1) | {} | {} | −{} |\n",
        mega(o.macs),
        mega(p.macs),
        pct(1.0 - p.macs as f64 / o.macs.max(1) as f64)
    ));
    s.push_str(&format!(
        "| parameters | {} | {} | −{} |\n",
        mega(o.params),
        mega(p.params),
        pct(1.0 - p.params as f64 / o.params.max(1) as f64)
    ));
    s.push_str(&format!(
        "| file size | {:.2} MB | {:.2} MB | −{} |\n",
        o.file_bytes as f64 / 1e6,
        p.file_bytes as f64 / 1e6,
        pct(1.0 - p.file_bytes as f64 / o.file_bytes.max(1) as f64)
    ));
    let (n, all) = (r.data.test_samples, r.data.test_split_samples);
    let scored = if n < all {
        format!(" ({n} of {all} test samples)")
    } else {
        format!(" ({n} test samples)")
    };
    s.push_str(&format!(
        "| {}{scored} | {} | {} | {:+.2} pt |\n",
        r.data.metric,
        pct(o.top1),
        pct(p.top1),
        (p.top1 - o.top1) * 100.0
    ));
    for (a, b) in o.latency.iter().zip(&p.latency) {
        s.push_str(&format!(
            "| latency p50, batch {} | {:.3} ms | {:.3} ms | {:.2}× faster |\n",
            a.batch, a.p50_ms, b.p50_ms, b.speedup_vs_first
        ));
    }
    if let Some(lt) = &r.settings.latency_target {
        let ratio = |v: Option<f64>| v.map(|v| format!("{v:.3}×")).unwrap_or_else(|| "-".into());
        let threads = match lt.threads {
            0 => "the runtime's default threads".to_string(),
            1 => "1 thread".to_string(),
            n => format!("{n} threads"),
        };
        s.push_str(&format!(
            "\nLatency target {:.2} of the original (ONNX Runtime, batch {}, {threads}): predicted {}, measured {} (interleaved p50; table of {} convs timed in {:.0} s).\n",
            lt.target,
            lt.batch,
            ratio(lt.predicted),
            ratio(lt.measured),
            lt.timed_convs,
            lt.seconds,
        ));
    }
    let pr = &r.pruning;
    s.push_str(&format!(
        "\nRemoved: {} of {} blocks; in the blocks kept, {} channels and {} groups ({} Relus after deleted blocks). ",
        pr.blocks_removed.len() + pr.blocks_replaced_by_constant.len(),
        pr.stages.iter().map(|st| st.blocks).sum::<usize>(),
        pr.channels_removed,
        pr.groups_removed,
        pr.relus_removed
    ));
    s.push_str(&format!(
        "Exactness (pruned vs trained gated model, {}): max abs diff {:.2e} over {} random batches and {} real samples — {}.\n",
        r.exactness.runtime,
        r.exactness.outputs.iter().map(|d| d.max_abs).fold(0.0, f64::max),
        r.exactness.random_batches,
        r.exactness.real_samples,
        if r.exactness.passed { "passed" } else { "FAILED" }
    ));
    s.push_str(&format!(
        "Training: {} steps in {:.0} s ({:.0} images/s), final γ {:.3e}",
        r.training.steps, r.training.seconds, r.training.images_per_s, r.training.final_gamma
    ));
    match r.training.locked_at {
        Some(at) => s.push_str(&format!(
            "; zero pattern locked at step {at}, {} gate factors zeroed by the MAC budget up to there (the rest by APG); trained on {}.\n",
            r.training.budget_zeroed,
            r.training.device
        )),
        None => s.push_str(&format!("; trained on {}.\n", r.training.device)),
    }
    if r.training.rewinds > 0 {
        s.push_str(&format!(
            "The loss ran away {} time(s) during training; each time it was rewound to the last healthy state with half the learning rate.\n",
            r.training.rewinds
        ));
    }
    s.push_str(
        "\n| stage | blocks removed | gated channels gone (alone or with their block) | gated groups gone |\n|---:|---:|---:|---:|\n",
    );
    for st in &pr.stages {
        s.push_str(&format!(
            "| {} | {}/{} | {}/{} | {}/{} |\n",
            st.stage,
            st.blocks_removed,
            st.blocks,
            st.channels_removed,
            st.channels,
            st.groups_removed,
            st.groups
        ));
    }
    s
}

/// The plots: the training curve and the kept architecture (named
/// `curve` and `gates`, the file name suffixes).
pub fn plots(r: &Report) -> Vec<(String, String)> {
    let c = &r.training.curve;
    let points: Vec<(f64, f64, f64, f64)> = c
        .iter()
        .map(|x| (x.step as f64, x.macs_ratio, x.accuracy, x.loss))
        .collect();
    // a budget step shows as a fall of the implied MACs before the lock
    let budget_steps: Vec<f64> = c
        .windows(2)
        .filter(|w| w[1].macs_ratio < w[0].macs_ratio - 1e-9 && !w[0].locked)
        .map(|w| w[1].step as f64)
        .collect();
    let curve = svg::curve(&svg::Curve {
        points: &points,
        target_macs: r.settings.target_macs,
        budget_steps: &budget_steps,
        lock: r.training.locked_at.map(|s| s as f64),
        original_top1: r.original.top1,
        pruned_top1: r.pruned.top1,
    });
    let blocks = svg::blocks(&r.pruning.blocks);
    vec![("curve".into(), curve), ("gates".into(), blocks)]
}
