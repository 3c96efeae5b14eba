//! Validate and measure: output agreement of two models, accuracy on a
//! labelled data set, and latency, each on a runtime from `runtime`.

pub mod accuracy;
pub mod bench;
pub mod fidelity;
pub mod inputs;
pub mod rebatch;
pub mod validate;
