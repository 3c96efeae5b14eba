//! sss-onnx: Sparse Structure Selection for exported ONNX ResNets.
//!
//! The data flow is a chain of plain functions (see `shared/DESIGN.md` in the
//! project's planning notes and the README):
//! `onnx` (files) → `graph` (the IR) → `structure` (what can be deleted) →
//! `gate` → `train` → `prune` → `runtime` (validate, time) → `report`.

pub mod alloc;
pub mod bn_restore;
pub mod compress;
pub mod data;
pub mod error;
pub mod gate;
pub mod graph;
pub mod inspect;
pub mod measure;
pub mod onnx;
pub mod progress;
pub mod prune;
pub mod report;
pub mod runtime;
pub mod structure;
pub mod threads;
pub mod train;

pub use error::{Error, Result};
