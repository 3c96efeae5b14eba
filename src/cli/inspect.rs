//! `sss-onnx inspect`.

use super::CliResult;
use sss_onnx::inspect::{inspect, Inspection};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Print the inspection as JSON.
    #[arg(long)]
    json: bool,
    /// Include MACs and parameters per node.
    #[arg(long)]
    per_node: bool,
    /// Batch size for symbolic batch dimensions.
    #[arg(long, default_value_t = 1)]
    batch: usize,
}

pub fn run(a: Args) -> CliResult {
    let g = super::common::load_graph(&a.model)?;
    let r = inspect(&g, a.batch, a.per_node);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_text(&a.model, &r);
    }
    Ok(())
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.3} G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.3} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn print_text(path: &std::path::Path, r: &Inspection) {
    println!(
        "{}  (opset {}, IR {}, {})",
        path.display(),
        r.opset,
        r.ir_version,
        r.producer
    );
    let ops: Vec<String> = r.ops.iter().map(|(k, v)| format!("{k}×{v}")).collect();
    println!("nodes      {}: {}", r.nodes, ops.join(" "));
    for v in &r.inputs {
        println!("input      {} [{}]", v.name, v.shape.join(", "));
    }
    for v in &r.outputs {
        println!("output     {} [{}]", v.name, v.shape.join(", "));
    }
    println!("params     {} ({})", human(r.params), r.params);
    println!(
        "MACs       {} ({}) at batch {}",
        human(r.macs),
        r.macs,
        r.batch
    );
    let a = &r.analysis;
    println!("blocks     {} in {} stages", a.blocks.len(), a.stages());
    for s in 0..a.stages() {
        for b in a.blocks.iter().filter(|b| b.stage == s) {
            let convs: Vec<String> = b
                .convs
                .iter()
                .map(|c| {
                    if c.groups > 1 {
                        format!("{}(g{})", c.out_channels, c.groups)
                    } else {
                        c.out_channels.to_string()
                    }
                })
                .collect();
            let se = if b.squeezes.is_empty() {
                String::new()
            } else {
                let w: Vec<String> = b
                    .squeezes
                    .iter()
                    .map(|q| q.reduce.out_channels.to_string())
                    .collect();
                format!(" SE [{}]", w.join(", "))
            };
            println!(
                "  stage {s} block {:>2}  shortcut {:<13} branch convs [{}]{se} → {}  ({})",
                b.id,
                format!("{:?}", b.shortcut),
                convs.join(", "),
                b.out_channels,
                b.add_name
            );
        }
        println!("  stage {s} gates: {}", stage_gates(a, s));
    }
    println!(
        "gateable   {} channel, {} group, {} block gates",
        r.gates["channel"], r.gates["group"], r.gates["block"]
    );
    for s in &a.skipped {
        println!("left out   {}: {}", s.what, s.reason);
    }
    for n in &r.unknown_ops {
        println!("opaque     node `{n}`: op not known to sss-onnx, kept as is");
    }
    for (n, why) in &r.shape_failures {
        println!("shape      node `{n}`: {why}");
    }
    if let Some(per) = &r.per_node {
        println!(
            "\n{:<40} {:<20} {:>14} {:>10}",
            "node", "op", "MACs", "params"
        );
        for c in per {
            println!(
                "{:<40} {:<20} {:>14} {:>10}",
                c.node, c.op, c.macs, c.params
            );
        }
    }
}

/// A stage's gates by kind, the SE's reduced channels apart from the
/// branch convs' channels.
fn stage_gates(a: &sss_onnx::structure::Analysis, stage: usize) -> String {
    use sss_onnx::structure::GateKind;
    let (mut channel, mut se, mut group, mut block) = (0, 0, 0, 0);
    for g in a
        .gateable
        .iter()
        .filter(|g| a.blocks[g.block].stage == stage)
    {
        let squeeze = a.blocks[g.block]
            .squeezes
            .iter()
            .any(|q| Some(&q.reduce.conv) == g.conv.as_ref());
        match g.kind {
            GateKind::Block => block += 1,
            GateKind::Group => group += g.count,
            GateKind::Channel if squeeze => se += g.count,
            GateKind::Channel => channel += g.count,
        }
    }
    format!("{channel} channel, {se} SE channel, {group} group, {block} block")
}
