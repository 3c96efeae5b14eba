//! Command-line front end: argument parsing, progress on stderr, exit codes.

mod bench;
mod common;
mod compress;
mod eval;
mod flags;
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
/// Exit code after Ctrl-C / SIGTERM (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: i32 = 130;

/// Ctrl-C / SIGTERM set this flag; training checkpoints and stops.
pub fn stop_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    // a second registration fails harmlessly
    let _ = ctrlc::set_handler(move || f.store(true, Ordering::SeqCst));
    flag
}

#[derive(Parser)]
#[command(
    name = "sss-onnx",
    disable_version_flag = true,
    about = "Sparse Structure Selection for ONNX ResNets: ONNX in, smaller ONNX out"
)]
struct Cli {
    /// Print the version, the ONNX Runtime library found and the build's
    /// features.
    #[arg(short = 'V', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// What `--version` says: the program, the runtime it would use, the build.
fn version_text() -> String {
    let ort = match sss_onnx::runtime::find_onnxruntime() {
        Ok(lib) => format!("{} ({})", lib.path.display(), lib.how),
        Err(why) => format!("not found: {why}"),
    };
    #[cfg(target_arch = "x86_64")]
    let cpu = format!(
        "avx512f {}, avx2+fma {}",
        if std::is_x86_feature_detected!("avx512f") {
            "yes"
        } else {
            "no"
        },
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            "yes"
        } else {
            "no"
        }
    );
    #[cfg(not(target_arch = "x86_64"))]
    let cpu = "no x86 kernels".to_string();
    format!(
        "sss-onnx {}\nonnx runtime: {ort}\nembedded runtime: tract 0.23\ntraining: cuda {} (cargo feature), cpu kernels: {cpu}",
        env!("CARGO_PKG_VERSION"),
        if cfg!(feature = "cuda") { "built in" } else { "not built" },
    )
}

#[derive(Subcommand)]
enum Command {
    /// The whole pipeline: gate, train, prune, validate, evaluate, bench, report.
    #[command(after_help = "Examples:\n  \
        sss-onnx compress fixtures/resnet20_fmnist.legacy13.onnx\n  \
        sss-onnx compress model.onnx --data ~/data/FashionMNIST --pad-value black --target-macs 0.5 --epochs 1\n  \
        sss-onnx compress resnet50.onnx --data photos/ --resize 256 --center-crop 224 --steps 200 --max-drop 1")]
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
    /// A completion script for a shell, on stdout (e.g. `sss-onnx
    /// completions bash > /etc/bash_completion.d/sss-onnx`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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
    if cli.version {
        println!("{}", version_text());
        return 0;
    }
    let Some(command) = cli.command else {
        use clap::CommandFactory;
        let _ = Cli::command().print_help();
        return EXIT_BAD_INPUT;
    };
    let result = match command {
        Command::Compress(a) => compress::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Gate(a) => gate::run(a),
        Command::Prune(a) => prune::run(a),
        Command::Train(a) => train::run(a),
        Command::Validate(a) => validate::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "sss-onnx",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    };
    use sss_onnx::Error as Lib;
    match result {
        Ok(()) => 0,
        Err(Failure::Input(e)) => match e.downcast_ref::<Lib>() {
            Some(Lib::Interrupted(msg)) => {
                eprintln!("{msg}");
                EXIT_INTERRUPTED
            }
            Some(Lib::Rejected(msg)) => {
                eprintln!("refused: {msg}");
                EXIT_VALIDATION
            }
            _ => {
                eprintln!("error: {e:#}");
                EXIT_BAD_INPUT
            }
        },
        Err(Failure::Validation(msg)) => {
            eprintln!("validation failed: {msg}");
            EXIT_VALIDATION
        }
    }
}
