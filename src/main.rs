//! The `sss-onnx` command line. Exit codes: 0 success, 1 validation failure
//! (outputs differ beyond tolerance), 2 bad input or usage, 130 interrupted.

mod cli;

// Training allocates and frees tensors of megabytes every step; the system
// allocator returns them to the OS each time (page faults, TLB shootdowns:
// ~25% of a step measured here). mimalloc keeps and reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    sss_onnx::alloc::keep_freed_pages();
    sss_onnx::threads::tune_for_training();
    std::process::exit(cli::main());
}
