//! sss-onnx: Sparse Structure Selection for exported ONNX networks.
//!
//! `compress::run` is the whole pipeline; its stages are plain functions
//! over the IR: `onnx` (files, protobuf ⇄ IR, import) → `graph` (the IR and
//! its op registry) → `structure` (what can be deleted, one pattern a
//! file) → `gate` → `train` (one lowering per op, steered by a `cost`) →
//! `prune` → `runtime` / `measure` (validate, time) → `report`.
//! `docs/pipeline.md` walks through it; the library builds without the
//! command line (`--no-default-features`).

pub mod alloc;
pub mod batching;
pub mod bn_restore;
pub mod compress;
pub mod cost;
pub mod data;
pub mod error;
pub mod files;
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
