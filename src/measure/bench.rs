//! Latency of several models, run interleaved (A B A B …) so that drift of
//! a noisy machine affects all alike; ratios are taken within one run.

use crate::error::Result;
use crate::runtime::{time_runs, Session, Tensors};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub model: String,
    pub batch: usize,
    pub iters: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub throughput_per_s: f64,
    pub macs: u64,
    /// First model's p50 over this one's.
    pub speedup_vs_first: f64,
    /// First model's MACs over this one's.
    pub mac_reduction_vs_first: f64,
    /// speedup ÷ MAC reduction: 1.0 means latency fell as much as MACs.
    pub speedup_per_mac_reduction: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// The fewest rounds a time limit leaves.
pub const MIN_ROUNDS: usize = 5;

/// Times `sessions` (with their names, MACs and inputs) interleaved, `iters`
/// rounds after `warmup` runs each, or fewer (at least [`MIN_ROUNDS`]) once
/// `limit` has passed: a large model at a large batch takes seconds a run.
pub fn interleaved(
    sessions: &mut [(String, u64, Box<dyn Session>, Tensors)],
    batch: usize,
    warmup: usize,
    iters: usize,
    limit: Option<Duration>,
) -> Result<Vec<Latency>> {
    for (_, _, s, x) in sessions.iter_mut() {
        time_runs(s.as_mut(), x, warmup, 0)?;
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(iters); sessions.len()];
    let start = std::time::Instant::now();
    for round in 0..iters {
        if round >= MIN_ROUNDS && limit.is_some_and(|l| start.elapsed() > l) {
            break;
        }
        for (k, (_, _, s, x)) in sessions.iter_mut().enumerate() {
            times[k].extend(time_runs(s.as_mut(), x, 0, 1)?);
        }
    }
    let iters = times.first().map_or(0, |t| t.len());
    let mut out: Vec<Latency> = Vec::new();
    for (k, (name, macs, _, _)) in sessions.iter().enumerate() {
        let mut t = times[k].clone();
        t.sort();
        let mean = t.iter().map(|d| d.as_secs_f64()).sum::<f64>() / t.len().max(1) as f64 * 1e3;
        let p50 = percentile(&t, 0.5);
        out.push(Latency {
            model: name.clone(),
            batch,
            iters,
            p50_ms: p50,
            p90_ms: percentile(&t, 0.9),
            p99_ms: percentile(&t, 0.99),
            mean_ms: mean,
            throughput_per_s: if mean > 0.0 {
                batch as f64 / (mean / 1e3)
            } else {
                0.0
            },
            macs: *macs,
            speedup_vs_first: 1.0,
            mac_reduction_vs_first: 1.0,
            speedup_per_mac_reduction: 1.0,
        });
    }
    let (p0, m0) = (out[0].p50_ms, out[0].macs);
    for l in out.iter_mut() {
        l.speedup_vs_first = if l.p50_ms > 0.0 { p0 / l.p50_ms } else { 0.0 };
        l.mac_reduction_vs_first = if l.macs > 0 {
            m0 as f64 / l.macs as f64
        } else {
            0.0
        };
        l.speedup_per_mac_reduction = if l.mac_reduction_vs_first > 0.0 {
            l.speedup_vs_first / l.mac_reduction_vs_first
        } else {
            0.0
        };
    }
    Ok(out)
}
