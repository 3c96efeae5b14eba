//! `sss-onnx gate model.onnx -o gated.onnx`: insert λ = 1 gates.

use super::common::{import_model, OutputArgs};
use super::CliResult;
use sss_onnx::files::ensure_not_input;
use sss_onnx::gate;
use sss_onnx::structure::GateKind;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    #[arg(short, long)]
    output: PathBuf,
    /// Which structures to gate.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "channel,group,block"
    )]
    structures: Vec<GateKind>,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(a: Args) -> CliResult {
    ensure_not_input(&a.output, &a.model)?;
    let imp = import_model(&a.model)?;
    let g = &imp.graph;
    let (gated, gates) = gate::insert(g, &a.structures)?;
    imp.save(&gated, &a.output, a.out.choice("gate"))?;
    for k in [GateKind::Channel, GateKind::Group, GateKind::Block] {
        let (n, f): (usize, usize) = gates
            .iter()
            .filter(|g| g.kind == k)
            .fold((0, 0), |(n, f), g| (n + 1, f + g.count));
        eprintln!("{:<8} {n} gate tensors, {f} factors", k.as_str());
    }
    println!("{}", a.output.display());
    Ok(())
}
