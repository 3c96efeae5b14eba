//! Allocator settings for training. The binary and the benchmarks use
//! mimalloc as the global allocator: a training step allocates and frees
//! activation tensors of megabytes, and the system allocator hands those
//! back to the OS every time.

/// mimalloc's `mi_option_purge_delay` (index 15 in its option enum, v2.1
/// onwards; the v3 the crate builds prints it under that name with
/// `MIMALLOC_VERBOSE=1`).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed pages committed instead of purging them after mimalloc's
/// default 10 ms: between two steps of a training loop the same sizes come
/// back, and a purged page costs a page fault plus the kernel zeroing it on
/// reuse, a visible share of a training step (docs/notebook/kernels.md). Memory
/// stays at the peak of one step.
/// Has no effect unless mimalloc is the global allocator.
pub fn keep_freed_pages() {
    // SAFETY: sets a process-wide option; mimalloc allows it at any time.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}
