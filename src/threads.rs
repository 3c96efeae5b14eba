//! Thread settings for training on the CPU. Our kernels run on rayon's
//! global pool; candle runs its own ops on a separate "barrier pool" whose
//! idle worker spins 25 000 rounds before it sleeps. On a machine with as
//! many cores as threads, that spinning after each candle op takes a core
//! from the kernel that runs next (ResNet-20 at batch 128, 2 cores: a step
//! of 257–286 ms with candle's default, 223–241 ms with 2 000–5 000 rounds,
//! runs alternated in one sitting).

/// candle's environment variable for the spin count, read once when its
/// pool starts.
const SPIN_LIMIT_VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// Shortens candle's idle spinning unless the user chose a value. Call at
/// the start of `main`, before any other thread exists (the environment is
/// process-wide).
pub fn tune_for_training() {
    if std::env::var_os(SPIN_LIMIT_VAR).is_none() {
        std::env::set_var(SPIN_LIMIT_VAR, "2000");
    }
}
