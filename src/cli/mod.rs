//! Command-line front end: argument parsing, progress on stderr, exit codes.

mod bench;
mod common;
mod compress;
mod eval;
mod gate;
mod inspect;
mod prune;
mod train;
mod validate;

use clap::{Parser, Subcommand};

/// Exit code for a validation failure (outputs differ beyond tolerance).
pub const EXIT_VALIDATION: i32 = 1;
/// Exit code for bad input or usage.
pub const EXIT_BAD_INPUT: i32 = 2;

#[derive(Parser)]
#[command(
    name = "sss-onnx",
    version,
    about = "Sparse Structure Selection for ONNX ResNets: ONNX in, smaller ONNX out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole pipeline: gate, train, prune, validate, evaluate, bench, report.
    Compress(compress::Args),
    /// Ops, shapes, MACs, parameters, residual blocks and gateable structures.
    Inspect(inspect::Args),
    /// Insert SSS gates (λ = 1) on channels, groups and residual blocks.
    Gate(gate::Args),
    /// Delete zero-gated structures and fold the other gates away.
    Prune(prune::Args),
    /// Train weights and gates (NAG + APG) on a labelled data set.
    Train(train::Args),
    /// Compare two models' outputs on the same inputs; exit 1 beyond tolerance.
    Validate(validate::Args),
    /// Top-1 / top-5 accuracy on a labelled data set.
    Eval(eval::Args),
    /// Latency and throughput of one or more models, interleaved.
    Bench(bench::Args),
}

/// Errors the CLI maps to exit codes.
#[derive(Debug)]
pub enum Failure {
    /// Bad input, usage, I/O: exit 2.
    Input(anyhow::Error),
    /// A validation that ran and failed: exit 1.
    Validation(String),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Input(e.into())
    }
}

pub type CliResult = Result<(), Failure>;

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_BAD_INPUT } else { 0 };
        }
    };
    let result = match cli.command {
        Command::Compress(a) => compress::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Gate(a) => gate::run(a),
        Command::Prune(a) => prune::run(a),
        Command::Train(a) => train::run(a),
        Command::Validate(a) => validate::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Bench(a) => bench::run(a),
    };
    match result {
        Ok(()) => 0,
        Err(Failure::Input(e)) => {
            eprintln!("error: {e:#}");
            EXIT_BAD_INPUT
        }
        Err(Failure::Validation(msg)) => {
            eprintln!("validation failed: {msg}");
            EXIT_VALIDATION
        }
    }
}
