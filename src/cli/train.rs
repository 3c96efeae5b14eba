//! `sss-onnx train model.onnx --data DIR`: train weights and gates
//! (`sss_onnx::train::fit`), then evaluate the result.

use super::common::{import_model, load_data, OutputArgs};
use super::flags::{EvalArgs, TrainArgs};
use super::CliResult;
use sss_onnx::batching;
use sss_onnx::data::Split;
use sss_onnx::files::{ensure_not_input, write_atomic};
use sss_onnx::gate;
use sss_onnx::graph::{counts, shape};
use sss_onnx::progress::{self, Stderr};
use sss_onnx::structure::GateKind;
use sss_onnx::train::fit::{fit, TrainData, Trained};
use sss_onnx::train::options::Unset;
use sss_onnx::train::{device, model::Model, scoring};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    #[arg(long)]
    data: PathBuf,
    /// The trained (gated) model; default `<model>.trained.onnx`.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Insert gates first (when the model has none).
    #[arg(long)]
    gate: bool,
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "channel,group,block"
    )]
    structures: Vec<GateKind>,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    eval: EvalArgs,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(a: Args) -> CliResult {
    let opts = a.train.options();
    // a device that cannot be had is an error before any work
    device::pick(&opts.device)?;
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| a.model.with_extension("trained.onnx"));
    ensure_not_input(&output, &a.model)?;
    let imp = import_model(&a.model)?;
    let mut g = imp.graph.clone();
    if a.gate {
        g = gate::insert(&g, &a.structures)?.0;
    }
    let spec = a.train.prep.spec();
    let stop = super::stop_flag();
    let Trained {
        graph: trained,
        records,
        ..
    } = fit(
        &g,
        TrainData::Load(&a.data, &spec),
        &opts,
        Unset::OneEpoch,
        Default::default(),
        &mut Stderr,
        &stop,
    )?;
    imp.save(&trained, &output, a.out.choice("train"))?;
    let (test, prep, _) = load_data(&a.data, Split::Test, &trained, &a.train.prep)?;
    let eval = a.eval.options();
    let macs = counts::count(&trained, &shape::infer_strict(&trained, 1)?).macs;
    let scores = sss_onnx::graph::io::outputs_scores(&g);
    let label_free = opts.no_labels || !test.labelled || !scores;
    let (mut test, note) = batching::scored_subset(test, macs, &eval)?;
    if let Some(n) = note {
        eprintln!("{n}");
    }
    let batch = batching::eval_batch(&trained, eval.batch);
    eprintln!(
        "scoring the trained model on {} test samples, {batch} at a time",
        test.len()
    );
    let original = Model::new(&g, &candle_core::Device::Cpu)?;
    let trained_model = Model::new(&trained, &candle_core::Device::Cpu)?;
    let (what, acc) = if !scores {
        let reference = scoring::maps(&original, &test, &prep, batch)?;
        let now = scoring::maps(&trained_model, &test, &prep, batch)?;
        (
            "agreement with the model as given (largest output channel per position)",
            sss_onnx::measure::fidelity::agreement(&now, &reference),
        )
    } else if label_free {
        // the model as given answers for the labels: agreement with it
        let labels = scoring::predictions(&original, &test, &prep, batch, None)?;
        test.drop_labels();
        test.set_labels(labels, 0);
        let acc = scoring::top1(&trained_model, &test, &prep, batch, None)?;
        ("top-1 agreement with the model as given", acc)
    } else {
        let acc = scoring::top1(&trained_model, &test, &prep, batch, None)?;
        ("test accuracy", acc)
    };
    eprintln!(
        "{what} (candle, eval mode): {:.2}% on {} samples",
        acc * 100.0,
        test.len()
    );
    if let Some(last) = records.last() {
        eprintln!("final: {}", progress::line(last, None));
    }
    let summary = serde_json::json!({
        "output": output,
        "test_accuracy": acc,
        "metric": what,
        "labelled": !label_free,
        "curve": records,
    });
    let report = output.with_extension("train.json");
    write_atomic(&report, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    println!("{}", output.display());
    Ok(())
}
