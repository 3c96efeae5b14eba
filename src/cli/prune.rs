//! `sss-onnx prune gated.onnx -o pruned.onnx`: delete zero-gated structures.

use super::common::{import_model, OutputArgs};
use super::CliResult;
use sss_onnx::files::{ensure_not_input, write_atomic};
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
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(a: Args) -> CliResult {
    ensure_not_input(&a.output, &a.model)?;
    let imp = import_model(&a.model)?;
    let g = &imp.graph;
    let (pruned, r) = prune::prune(g)?;
    imp.save(&pruned, &a.output, a.out.choice("prune"))?;
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
