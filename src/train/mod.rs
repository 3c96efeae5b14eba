//! Training weights and SSS gates together: the graph lowered to candle,
//! fast CPU kernels, optimizers (NAG for weights, APG/ISTA/L1-SGD for the
//! gates), schedules, data feeding, the loop, checkpoints.

pub mod checkpoint;
pub mod device;
pub mod feed;
pub mod fit;
pub mod guard;
pub mod kernels;
pub mod lower;
pub mod model;
pub mod optim;
pub mod options;
pub mod schedule;
pub mod scoring;
pub mod tape;
pub mod trainer;
pub mod widths;
