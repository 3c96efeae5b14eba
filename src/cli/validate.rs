//! `sss-onnx validate A.onnx B.onnx`: same inputs to both, differences per
//! output; exit 1 beyond tolerance.

use super::common::{import_model, load_data, open_imported, PrepArgs, RuntimeArgs};
use super::{CliResult, Failure};
use sss_onnx::data::Split;
use sss_onnx::measure::validate::{validate, Check, Pairing};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    a: PathBuf,
    b: PathBuf,
    #[command(flatten)]
    rt: RuntimeArgs,
    #[command(flatten)]
    prep: PrepArgs,
    /// Random input batches.
    #[arg(long, default_value_t = 4)]
    inputs: usize,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Also compare on real samples from this data folder (test split).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Real samples to use with --data.
    #[arg(long, default_value_t = 256)]
    samples: usize,
    #[arg(long, default_value_t = 1e-4)]
    atol: f64,
    /// Relative tolerance, for large logits.
    #[arg(long, default_value_t = 1e-4)]
    rtol: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> CliResult {
    let (ia, ib) = (import_model(&a.a)?, import_model(&a.b)?);
    let g = &ia.graph;
    let pairing = Pairing::of(g, &ib.graph)?;
    let opts = a.rt.options();
    let (mut sa, mut sb) = (
        open_imported(&ia, &a.a, &opts)?,
        open_imported(&ib, &a.b, &opts)?,
    );
    let real = match &a.data {
        Some(dir) => Some(load_data(dir, Split::Test, g, &a.prep)?),
        None => None,
    };
    let check = Check {
        pairing: Some(&pairing),
        random_batches: a.inputs,
        batch: a.batch,
        seed: a.seed,
        real: real.as_ref().map(|(ds, p, _)| (ds, p, a.samples)),
        atol: a.atol,
        rtol: a.rtol,
    };
    let v = validate(g, sa.as_mut(), sb.as_mut(), &check)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{} vs {} on {} ({} random batches of {}, {} real samples)",
            a.a.display(),
            a.b.display(),
            v.runtime,
            v.random_batches,
            a.batch,
            v.real_samples
        );
        println!(
            "{:<20} {:>12} {:>12} {:>10} {:>8}",
            "output", "max abs", "max rel", "cosine", "top-1"
        );
        for d in &v.outputs {
            println!(
                "{:<20} {:>12.3e} {:>12.3e} {:>10.6} {:>7.1}%",
                d.output,
                d.max_abs,
                d.max_rel,
                d.cosine,
                d.top1_agreement * 100.0
            );
        }
    }
    if !v.passed {
        return Err(Failure::Validation(format!(
            "outputs differ beyond atol {} / rtol {}",
            a.atol, a.rtol
        )));
    }
    eprintln!("ok: within atol {} / rtol {}", a.atol, a.rtol);
    Ok(())
}
