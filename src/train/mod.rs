//! Training weights and SSS gates together: the graph lowered to candle,
//! fast CPU kernels, optimizers (NAG for weights, APG/ISTA/L1-SGD for the
//! gates), schedules, data feeding, the loop, checkpoints.

pub mod kernels;
pub mod model;
