//! Do two models compute the same function? Same inputs to both (seeded
//! random and, when given, real samples), differences per output.

use crate::data::{Dataset, Preprocess};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::runtime::compare::{self, Diff};
use crate::runtime::{Session, Tensors};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    pub runtime: String,
    pub random_batches: usize,
    pub real_samples: usize,
    pub atol: f64,
    pub rtol: f64,
    /// Worst figures per output over all batches.
    pub outputs: Vec<Diff>,
    pub passed: bool,
}

/// How the second model's inputs and outputs correspond to the first's:
/// by name when the names agree, by position when each side has one (an
/// export from another exporter renames `input.1` to `x`).
#[derive(Debug, Clone, PartialEq)]
pub struct Pairing {
    /// (first model's input, second model's input)
    pub inputs: Vec<(String, String)>,
    /// For each output of the first model, the index of the second's.
    pub outputs: Vec<usize>,
}

fn names<'a>(v: impl Iterator<Item = &'a crate::graph::ValueInfo>) -> Vec<String> {
    v.map(|x| x.name.clone()).collect()
}

fn pair_names(what: &str, a: &[String], b: &[String]) -> Result<Vec<usize>> {
    if a.len() == 1 && b.len() == 1 {
        return Ok(vec![0]);
    }
    let idx: Option<Vec<usize>> = a.iter().map(|n| b.iter().position(|m| m == n)).collect();
    match idx {
        Some(i) if a.len() == b.len() => Ok(i),
        _ => Err(Error::Invalid(format!(
            "the models' {what} do not correspond: {a:?} against {b:?} (paired by name when there are several)"
        ))),
    }
}

impl Pairing {
    pub fn of(a: &Graph, b: &Graph) -> Result<Pairing> {
        let (ia, ib) = (names(a.data_inputs()), names(b.data_inputs()));
        let inputs = pair_names("inputs", &ia, &ib)?
            .into_iter()
            .zip(&ia)
            .map(|(j, n)| (n.clone(), ib[j].clone()))
            .collect();
        let outputs = pair_names(
            "outputs",
            &names(a.outputs.iter()),
            &names(b.outputs.iter()),
        )?;
        Ok(Pairing { inputs, outputs })
    }

    fn rename(&self, inputs: &Tensors) -> Tensors {
        inputs
            .iter()
            .map(|(n, t)| {
                let m = self
                    .inputs
                    .iter()
                    .find(|(a, _)| a == n)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_else(|| n.clone());
                (m, t.clone())
            })
            .collect()
    }

    fn reorder(&self, outputs: Tensors) -> Tensors {
        self.outputs
            .iter()
            .filter_map(|&j| outputs.get(j).cloned())
            .collect()
    }
}

/// What a validation feeds both models and how close they must agree.
pub struct Check<'a> {
    /// `None`: the second model has the first's input and output names.
    pub pairing: Option<&'a Pairing>,
    pub random_batches: usize,
    pub batch: usize,
    pub seed: u64,
    pub real: Option<(&'a Dataset, &'a Preprocess, usize)>,
    pub atol: f64,
    pub rtol: f64,
}

fn merge(acc: &mut Vec<Diff>, new: Vec<Diff>) {
    if acc.is_empty() {
        *acc = new;
        return;
    }
    for (a, n) in acc.iter_mut().zip(new) {
        a.max_abs = a.max_abs.max(n.max_abs);
        a.max_rel = a.max_rel.max(n.max_rel);
        a.cosine = a.cosine.min(n.cosine);
        a.top1_agreement = a.top1_agreement.min(n.top1_agreement);
    }
}

pub fn validate(
    g: &Graph,
    a: &mut dyn Session,
    b: &mut dyn Session,
    check: &Check,
) -> Result<Validation> {
    let mut batches: Vec<Tensors> = (0..check.random_batches)
        .map(|i| {
            super::inputs::random_inputs(g, check.batch, check.seed.wrapping_add(1000 * i as u64))
        })
        .collect::<Result<_>>()?;
    let mut real_samples = 0;
    if let Some((ds, prep, n)) = check.real {
        let (name, _) = crate::graph::io::image_input(g)?;
        let n = n.min(ds.len());
        for start in (0..n).step_by(check.batch.max(1)) {
            let idx: Vec<usize> = (start..(start + check.batch).min(n)).collect();
            batches.push(vec![(name.clone(), prep.batch(ds, &idx)?)]);
        }
        real_samples = n;
    }
    let mut worst = Vec::new();
    for inputs in &batches {
        let (ya, yb) = match check.pairing {
            Some(p) => (a.run(inputs)?, p.reorder(b.run(&p.rename(inputs))?)),
            None => (a.run(inputs)?, b.run(inputs)?),
        };
        merge(&mut worst, compare::diff(&ya, &yb).map_err(Error::Invalid)?);
    }
    let passed = compare::within(&worst, check.atol, check.rtol);
    Ok(Validation {
        runtime: a.describe(),
        random_batches: check.random_batches,
        real_samples,
        atol: check.atol,
        rtol: check.rtol,
        outputs: worst,
        passed,
    })
}
