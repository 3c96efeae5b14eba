//! `sss-onnx compress model.onnx`: the library's pipeline
//! (`sss_onnx::compress`) with a recipe file, flags over it, progress on
//! stderr and the summary on stdout.

use super::common::{OutputArgs, RuntimeArgs};
use super::flags::{CompressArgs, EvalArgs, TrainArgs};
use super::CliResult;
use sss_onnx::compress::{self, recipe, Options};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model (or `model` in --config).
    model: Option<PathBuf>,
    /// A recipe: TOML (see --print-config), or the JSON report of an
    /// earlier run; flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective recipe (TOML) on stdout and exit.
    #[arg(long)]
    print_config: bool,
    /// Print the JSON report on stdout instead of the Markdown summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    compress: CompressArgs,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    eval: EvalArgs,
    #[command(flatten)]
    rt: RuntimeArgs,
    #[command(flatten)]
    out: OutputArgs,
}

/// The recipe: the defaults, then the file, then the flags.
fn options(a: &Args) -> anyhow::Result<Options> {
    let mut o = match &a.config {
        Some(p) => recipe::load(p)?,
        None => Options::default(),
    };
    if let Some(m) = &a.model {
        o.model = Some(m.clone());
    }
    let gamma_only = a.config.is_none() && a.train.gamma.is_some();
    a.compress.apply(&mut o, gamma_only);
    a.train.apply(&mut o.train);
    a.eval.apply(&mut o.eval);
    o.preprocess = o.preprocess.overridden_by(&a.train.prep.spec());
    a.rt.apply(&mut o.runtime);
    a.out.apply(&mut o.write);
    Ok(o)
}

pub fn run(a: Args) -> CliResult {
    let started = Instant::now();
    let o = options(&a)?;
    if a.print_config {
        print!("{}", recipe::to_toml(&o));
        return Ok(());
    }
    let stop = super::stop_flag();
    let done = compress::run_with(&o, &mut sss_onnx::progress::Stderr, &stop)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&done.report)?);
    } else {
        print!("{}", sss_onnx::report::markdown(&done.report));
    }
    let files: Vec<String> = done
        .written
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    eprintln!(
        "wrote {} in {:.0} s",
        files.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
