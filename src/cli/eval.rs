//! `sss-onnx eval model.onnx --data DIR`: top-1 / top-5 accuracy.

use super::common::{import_model, load_data, open_imported, PrepArgs, RuntimeArgs};
use super::CliResult;
use sss_onnx::data::Split;
use sss_onnx::measure::accuracy::evaluate;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    /// Data folder (idx, CIFAR binary or ImageFolder); its test split is used.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    rt: RuntimeArgs,
    #[command(flatten)]
    prep: PrepArgs,
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Evaluate only the first N samples.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> CliResult {
    let imp = import_model(&a.model)?;
    let g = &imp.graph;
    let (ds, prep, input) = load_data(&a.data, Split::Test, g, &a.prep)?;
    let opts = a.rt.options();
    let mut s = open_imported(&imp, &a.model, &opts)?;
    eprintln!(
        "data: {} ({} test samples); {}",
        ds.name,
        ds.len(),
        prep.describe()
    );
    let acc = evaluate(s.as_mut(), &input, &ds, &prep, a.batch, a.limit)?;
    if a.json {
        let mut v = serde_json::to_value(&acc)?;
        v["runtime"] = s.describe().into();
        v["data"] = ds.name.clone().into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{}: top-1 {:.2}%  top-5 {:.2}%  on {} samples of {} ({})",
            a.model.display(),
            acc.top1 * 100.0,
            acc.top5 * 100.0,
            acc.samples,
            ds.name,
            s.describe()
        );
    }
    Ok(())
}
