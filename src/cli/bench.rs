//! `sss-onnx bench A.onnx [B.onnx ...]`: latency percentiles and
//! throughput, models interleaved, each model's ratio to the first.

use super::common::{import_model, open_imported, RuntimeArgs};
use super::CliResult;
use anyhow::Context;
use sss_onnx::graph::{counts, shape};
use sss_onnx::measure::{bench, inputs};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[arg(required = true)]
    models: Vec<PathBuf>,
    /// Batch sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    batch: Vec<usize>,
    #[command(flatten)]
    rt: RuntimeArgs,
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Timed runs per model and batch size.
    #[arg(long, default_value_t = 50)]
    iters: usize,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> CliResult {
    let opts = a.rt.options();
    let mut all = Vec::new();
    let mut runtime_name = String::new();
    for &batch in &a.batch {
        let mut sessions = Vec::new();
        for m in &a.models {
            let imp = import_model(m)?;
            imp.check_batch(batch)
                .with_context(|| format!("{}: --batch {batch}", m.display()))?;
            let g = &imp.graph;
            let facts = shape::infer_strict(g, batch)?;
            let macs = counts::count(g, &facts).macs;
            let x = inputs::random_inputs(g, batch, 0)?;
            let s = open_imported(&imp, m, &opts)?;
            runtime_name = s.describe();
            sessions.push((m.display().to_string(), macs, s, x));
        }
        eprintln!(
            "timing batch {batch}: {} models × {} runs, interleaved",
            a.models.len(),
            a.iters
        );
        all.extend(bench::interleaved(
            &mut sessions,
            batch,
            a.warmup,
            a.iters,
            None,
        )?);
    }
    if a.json {
        let v = serde_json::json!({
            "runtime": runtime_name,
            "threads": opts.threads,
            "results": all,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "runtime: {runtime_name}, threads {}",
        if opts.threads == 0 {
            "default".into()
        } else {
            opts.threads.to_string()
        }
    );
    println!(
        "{:<44} {:>5} {:>9} {:>9} {:>9} {:>10} {:>9} {:>8} {:>8}",
        "model", "batch", "p50 ms", "p90 ms", "p99 ms", "items/s", "MACs M", "speedup", "÷MACred"
    );
    for l in &all {
        println!(
            "{:<44} {:>5} {:>9.3} {:>9.3} {:>9.3} {:>10.1} {:>9.2} {:>7.2}× {:>8.2}",
            l.model,
            l.batch,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.throughput_per_s,
            l.macs as f64 / 1e6,
            l.speedup_vs_first,
            l.speedup_per_mac_reduction
        );
    }
    Ok(())
}
