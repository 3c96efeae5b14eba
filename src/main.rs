//! The `sss-onnx` command line. Exit codes: 0 success, 1 validation failure
//! (outputs differ beyond tolerance), 2 bad input or usage.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
