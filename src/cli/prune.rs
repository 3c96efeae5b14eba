//! `sss-onnx prune gated.onnx -o pruned.onnx`: delete zero-gated structures.

use super::common::load_graph;
use super::CliResult;
use sss_onnx::graph::convert;
use sss_onnx::onnx::{atomic::ensure_not_input, atomic::write_atomic, WriteOptions};
use sss_onnx::prune;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A gated model (from `gate`, with trained gate values).
    model: PathBuf,
    #[arg(short, long)]
    output: PathBuf,
    /// Write the prune report (JSON) here.
    #[arg(long)]
    report: Option<PathBuf>,
    #[arg(long)]
    external_data: bool,
}

pub fn run(a: Args) -> CliResult {
    ensure_not_input(&a.output, &a.model)?;
    let g = load_graph(&a.model)?;
    let (pruned, r) = prune::prune(&g)?;
    let opts = if a.external_data {
        WriteOptions::external()
    } else {
        WriteOptions::default()
    };
    convert::save(&pruned, &a.output, &opts)?;
    if let Some(p) = &a.report {
        write_atomic(p, serde_json::to_string_pretty(&r)?.as_bytes())?;
    }
    eprintln!(
        "removed {} blocks ({} more replaced by a constant), {} channels, {} groups, {} Relus",
        r.blocks_removed.len(),
        r.blocks_replaced_by_constant.len(),
        r.channels_removed,
        r.groups_removed,
        r.relus_removed
    );
    eprintln!(
        "MACs {} -> {} (predicted {}), params {} -> {} (predicted {})",
        r.before.macs,
        r.after.macs,
        r.predicted.macs,
        r.before.params,
        r.after.params,
        r.predicted.params
    );
    for n in &r.notes {
        eprintln!("note: {n}");
    }
    println!("{}", a.output.display());
    Ok(())
}
