//! Checkpoints: the gated model with its current weights (ONNX, so any
//! runtime can read it), the optimizer state (safetensors), and a small
//! JSON written last, so a checkpoint is complete exactly when its JSON is.

use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::graph::Graph;
use crate::onnx::convert;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub step: usize,
    pub gamma: f64,
    pub seed: u64,
    pub total_steps: usize,
}

pub struct Checkpoint {
    pub graph: Graph,
    pub meta: Meta,
    pub weights_state: HashMap<String, Tensor>,
    pub gates_state: HashMap<String, Tensor>,
}

fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("checkpoint.onnx"),
        dir.join("optimizer.safetensors"),
        dir.join("checkpoint.json"),
    )
}

pub fn save(
    dir: &Path,
    graph: &Graph,
    meta: &Meta,
    weights: &HashMap<String, Tensor>,
    gates: &HashMap<String, Tensor>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (model, opt, json) = paths(dir);
    convert::save(graph, &model, &Default::default())?;
    let mut all: HashMap<String, Tensor> = HashMap::new();
    for (k, v) in weights {
        all.insert(format!("w/{k}"), v.clone());
    }
    for (k, v) in gates {
        all.insert(format!("g/{k}"), v.clone());
    }
    let tmp = dir.join(".optimizer.safetensors.tmp");
    candle_core::safetensors::save(&all, &tmp)
        .map_err(|e| Error::Invalid(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, &opt).map_err(|e| Error::io(&opt, e))?;
    let text = serde_json::to_string_pretty(meta).map_err(|e| Error::Invalid(e.to_string()))?;
    write_atomic(&json, text.as_bytes())
}

pub fn load(dir: &Path, device: &Device) -> Result<Checkpoint> {
    let (model, opt, json) = paths(dir);
    let text = std::fs::read_to_string(&json).map_err(|e| Error::io(&json, e))?;
    let meta: Meta = serde_json::from_str(&text).map_err(|e| Error::Decode {
        path: json.clone(),
        reason: e.to_string(),
    })?;
    let graph = convert::load(&model)?;
    let all = candle_core::safetensors::load(&opt, device).map_err(|e| Error::Decode {
        path: opt.clone(),
        reason: e.to_string(),
    })?;
    let (mut w, mut g) = (HashMap::new(), HashMap::new());
    for (k, v) in all {
        if let Some(n) = k.strip_prefix("w/") {
            w.insert(n.to_string(), v);
        } else if let Some(n) = k.strip_prefix("g/") {
            g.insert(n.to_string(), v);
        }
    }
    Ok(Checkpoint {
        graph,
        meta,
        weights_state: w,
        gates_state: g,
    })
}
