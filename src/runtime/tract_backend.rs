//! tract: the embedded pure-Rust runtime. Plans are optimised for concrete
//! input shapes, so one plan is kept per shape seen.

use super::{Session, Tensors};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tract_onnx::prelude::*;

const BACKEND: &str = "tract";

fn err(reason: impl std::fmt::Display) -> Error {
    Error::Runtime {
        backend: BACKEND,
        reason: reason.to_string(),
    }
}

type Plan = Arc<TypedRunnableModel>;

pub struct TractSession {
    path: PathBuf,
    model: InferenceModel,
    plans: HashMap<Vec<Vec<usize>>, Plan>,
    outputs: Vec<String>,
}

impl TractSession {
    pub fn open(model: &Path) -> Result<Self> {
        // Declared intermediate and output shapes use the exporter's batch
        // symbol, which cannot unify with the concrete batch we plan for:
        // tract re-derives them from the inputs.
        let m = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .with_ignore_output_shapes(true)
            .model_for_path(model)
            .map_err(|e| err(format!("{}: {e:#}", model.display())))?;
        Self::from_model(m, model)
    }

    /// A model serialised in memory; `label` names it in errors.
    pub fn open_bytes(bytes: &[u8], label: &Path) -> Result<Self> {
        let m = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .with_ignore_output_shapes(true)
            .model_for_read(&mut std::io::Cursor::new(bytes))
            .map_err(|e| err(format!("{}: {e:#}", label.display())))?;
        Self::from_model(m, label)
    }

    fn from_model(m: InferenceModel, model: &Path) -> Result<Self> {
        let outputs = m
            .output_outlets()
            .map_err(err)?
            .iter()
            .map(|o| {
                m.outlet_label(*o)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| m.node(o.node).name.clone())
            })
            .collect();
        Ok(TractSession {
            path: model.to_path_buf(),
            model: m,
            plans: HashMap::new(),
            outputs,
        })
    }

    fn plan(&mut self, shapes: Vec<Vec<usize>>) -> Result<Plan> {
        if let Some(p) = self.plans.get(&shapes) {
            return Ok(p.clone());
        }
        let mut m = self.model.clone();
        for (i, s) in shapes.iter().enumerate() {
            m = m.with_input_fact(i, f32::fact(s).into()).map_err(err)?;
        }
        let plan = m
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| err(format!("{}: {e:#}", self.path.display())))?;
        self.plans.insert(shapes, plan.clone());
        Ok(plan)
    }
}

impl Session for TractSession {
    fn describe(&self) -> String {
        "tract 0.23 (embedded)".into()
    }

    fn run(&mut self, inputs: &Tensors) -> Result<Tensors> {
        // tract takes inputs in declaration order
        let order: Vec<String> = self
            .model
            .input_outlets()
            .map_err(err)?
            .iter()
            .map(|o| self.model.node(o.node).name.clone())
            .collect();
        let mut ordered = Vec::new();
        for name in &order {
            let (_, a) = inputs
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| err(format!("no value given for input `{name}`")))?;
            ordered.push(a);
        }
        let plan = self.plan(ordered.iter().map(|a| a.shape().to_vec()).collect())?;
        let values: TVec<TValue> = ordered
            .into_iter()
            .map(|a| Tensor::from(a.clone()).into())
            .collect();
        let out = plan.run(values).map_err(err)?;
        let mut result = Vec::new();
        for (name, v) in self.outputs.iter().zip(out.iter()) {
            let a = v.to_plain_array_view::<f32>().map_err(err)?.to_owned();
            result.push((name.clone(), a));
        }
        Ok(result)
    }
}
