//! The latency table's prediction against a measured run of pruned models.
//!
//!     cargo bench --bench latency_table -- [model.onnx] [batch] [threads] [--save=FILE]
//!
//! Gates the model, measures its latency table in ONNX Runtime, then prunes
//! it several ways (whole blocks, every branch's channels, both) and times
//! each pruned model interleaved with the original: predicted and measured
//! latency ratios side by side. Needs ONNX Runtime (`scripts/fetch-onnxruntime.sh`).
//! `--save` writes the table, each case's gate values and both ratios as
//! JSON: `tests/latency_table.rs` checks the prediction on such a recording.

use sss_onnx::cost::latency as latency_table;
use sss_onnx::cost::probe;
use sss_onnx::gate::{self, Gate};
use sss_onnx::graph::shape;
use sss_onnx::measure::{bench, inputs};
use sss_onnx::onnx::import;
use sss_onnx::prune::{self, plan, predict};
use sss_onnx::runtime;
use sss_onnx::structure::GateKind;
use sss_onnx::train::widths::align_down;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let save = std::env::args().find_map(|a| a.strip_prefix("--save=").map(String::from));
    let mut recorded = Vec::new();
    let model = args
        .first()
        .cloned()
        .unwrap_or_else(|| "fixtures/resnet20_fmnist.legacy13.onnx".into());
    let batch: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(32);
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let imp = import::import(Path::new(&model))?;
    let kinds = [GateKind::Channel, GateKind::Group, GateKind::Block];
    let (gated, gates) = gate::insert(&imp.graph, &kinds)?;
    let opts = runtime::Options {
        kind: runtime::Kind::Ort,
        threads,
        ep: runtime::Ep::Cpu,
    };
    let table = probe::measure(&gated, batch, &opts, |n| eprintln!("{n}"))?;
    for (what, probes, elements, ms) in &table.calibration {
        println!("calibration: {what}: probes {probes:.2} ms, block elements {elements:.0}, measured {ms:.2} ms");
    }
    let blocks: Vec<&Gate> = gates.iter().filter(|g| g.kind == GateKind::Block).collect();
    let inner: Vec<&Gate> = gates.iter().filter(|g| g.kind != GateKind::Block).collect();
    // (name, gates set to 0 wholly, fraction of every inner gate's factors kept)
    let every_other: Vec<&Gate> = blocks.iter().step_by(2).copied().collect();
    let third: Vec<&Gate> = blocks.iter().step_by(3).copied().collect();
    let cases: Vec<(&str, Vec<&Gate>, f64)> = vec![
        ("every other block deleted", every_other.clone(), 1.0),
        ("every third block deleted", third.clone(), 1.0),
        ("inner channels halved", vec![], 0.5),
        (
            "inner channels to a quarter (at least the narrowest width timed)",
            vec![],
            0.25,
        ),
        (
            "every third block, the rest's channels at 3/4 (aligned down)",
            third,
            0.75,
        ),
    ];
    println!(
        "{model}: batch {batch}, {threads} thread(s); table measured in {:.0} s, original {:.2} ms, fit {:?}",
        table.seconds, table.model_ms(), table.fit
    );
    println!("| pruning | MACs | predicted latency | measured latency (interleaved p50) | error |");
    println!("|---|---:|---:|---:|---:|");
    let facts = shape::infer_strict(&imp.graph, 1)?;
    let macs0 = sss_onnx::graph::counts::count(&imp.graph, &facts).macs;
    for (name, dead, keep) in cases {
        let mut g = gated.clone();
        for gt in &dead {
            gate::set_factors(&mut g, gt, &[0.0])?;
        }
        for gt in &inner {
            // at a width the table timed, as a latency-targeted budget leaves it
            let w = latency_table::widths(gt.count);
            let want = ((gt.count as f64 * keep).round() as usize).max(1);
            let kept = align_down(want, &w).unwrap_or(w[0]);
            let v: Vec<f32> = (0..gt.count)
                .map(|i| if i < kept { 1.0 } else { 0.0 })
                .collect();
            gate::set_factors(&mut g, gt, &v)?;
        }
        let values: serde_json::Map<String, serde_json::Value> = gates
            .iter()
            .map(|gt| Ok((gt.name.clone(), serde_json::json!(gate::factors(&g, gt)?))))
            .collect::<sss_onnx::Result<_>>()?;
        let pl = plan::plan(&g)?;
        let predicted = table.ratio(&predict::conv_shapes(&g, &pl));
        let (pruned, _) = prune::prune(&g)?;
        let f = shape::infer_strict(&pruned, 1)?;
        let macs = sss_onnx::graph::counts::count(&pruned, &f).macs;
        let label = Path::new("pruned");
        let mut sessions = vec![
            (
                "original".to_string(),
                macs0,
                runtime::open_graph(&imp.graph, Path::new(&model), &opts)?,
                inputs::random_inputs(&imp.graph, batch, 0)?,
            ),
            (
                name.to_string(),
                macs,
                runtime::open_graph(&pruned, label, &opts)?,
                inputs::random_inputs(&pruned, batch, 0)?,
            ),
        ];
        let r = bench::interleaved(
            &mut sessions,
            batch,
            3,
            60,
            Some(std::time::Duration::from_secs(20)),
        )?;
        let measured = r[1].p50_ms / r[0].p50_ms;
        recorded.push(serde_json::json!({
            "case": name, "gates": values, "predicted": predicted, "measured": measured,
        }));
        println!(
            "| {name} | {:.3}× | {predicted:.3}× | {measured:.3}× | {:+.1} % |",
            macs as f64 / macs0 as f64,
            (predicted / measured - 1.0) * 100.0
        );
    }
    if let Some(path) = save {
        let out = serde_json::json!({
            "model": model, "machine": "see docs/notebook/latency.md", "table": table, "cases": recorded,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
        println!("wrote {path}");
    }
    Ok(())
}
