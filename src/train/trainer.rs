//! The training loop: weights by Nesterov SGD with weight decay, gates by the
//! chosen proximal rule, from the same mini-batch gradient in the same step.

use super::checkpoint::{self, Meta};
use super::feed::{self, Augment};
use super::model::Model;
use super::optim::{gate_rule, GateOptimizer, Nag, Rule};
use super::schedule::Schedule;
use crate::data::{Dataset, Preprocess};
use crate::error::{Error, Result};
use crate::gate::{self, GATE_PREFIX};
use crate::graph::shape;
use crate::prune::{plan, predict};
use crate::structure::GateKind;
use candle_core::{DType, Tensor, Var, D};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Config {
    pub steps: usize,
    pub batch: usize,
    pub schedule: Schedule,
    pub momentum: f64,
    pub weight_decay: f64,
    /// The L1 penalty γ on the gates.
    pub gamma: f64,
    /// Peak learning rate of the gates (same schedule shape as the weights);
    /// `None`: the weights' rate, as in the paper.
    pub gate_lr: Option<f64>,
    pub gate_optimizer: GateOptimizer,
    pub seed: u64,
    pub augment: Augment,
    pub log_every: usize,
    pub checkpoint_dir: Option<PathBuf>,
    pub checkpoint_every: usize,
    /// Steer γ so the implied MACs reach this fraction of the original.
    pub target_macs: Option<f64>,
    /// Fraction of the run after which the zero pattern is locked and the
    /// rest is fine-tuning (γ = 0, zero gates stay 0). In target mode the lock also happens as soon as the
    /// target is reached. `None`: never (the paper's single run).
    pub lock_at: Option<f64>,
}

/// One line of the training curve.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub step: usize,
    pub epoch: f64,
    pub loss: f64,
    pub accuracy: f64,
    pub lr: f64,
    pub gamma: f64,
    pub zero_gates: usize,
    pub gates: usize,
    /// MACs the current zero pattern implies, over the original MACs.
    pub macs_ratio: f64,
    pub images_per_s: f64,
    /// Whether the zero pattern is locked (fine-tuning phase).
    pub locked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    Finished,
    Interrupted,
}

pub struct Outcome {
    pub records: Vec<Record>,
    pub stopped: Stop,
    pub gamma: f64,
    pub steps_done: usize,
}

/// Steps of learning-rate warm-up after the lock.
const LOCK_WARMUP: usize = 20;

/// Steps between MAC-controller updates.
const STEER_EVERY: usize = 5;

struct GateVar {
    name: String,
    /// Channels per factor (group gates tie C/G channels).
    span: usize,
    /// γ multiplier: 1, or the MACs one factor costs relative to the mean.
    weight: f64,
}

pub struct Trainer {
    pub model: Model,
    pub cfg: Config,
    nag: Nag,
    rule: Box<dyn Rule>,
    gates: Vec<GateVar>,
    no_decay: HashSet<String>,
    base_macs: u64,
    pub gamma: f64,
    pub start_step: usize,
    /// Step at which the zero pattern was locked.
    pub locked_at: Option<usize>,
    /// Factors the MAC budget set to 0 at the lock (beyond APG's zeros).
    pub budget_zeroed: usize,
}

impl Trainer {
    pub fn new(model: Model, cfg: Config) -> Result<Self> {
        let g = &model.graph;
        let found = gate::find(g)?;
        let facts = shape::infer_strict(g, 1)?;
        let base_macs = crate::graph::cost::count(g, &facts).macs;
        let costs = if cfg.target_macs.is_some() && !found.is_empty() {
            unit_costs(g, &found)?
        } else {
            vec![1.0; found.len()]
        };
        let mean = costs.iter().sum::<f64>() / costs.len().max(1) as f64;
        let gates = found
            .iter()
            .zip(&costs)
            .map(|(gt, &c)| GateVar {
                name: gt.name.clone(),
                span: if gt.kind == GateKind::Group {
                    gt.span
                } else {
                    1
                },
                // cost-aware but bounded: a block gate must not carry 10× the
                // penalty of a channel (it would die before the net adapts)
                weight: if mean > 0.0 {
                    (c / mean).clamp(0.25, 4.0)
                } else {
                    1.0
                },
            })
            .collect();
        // BN scale/shift and gates take no weight decay
        let mut no_decay: HashSet<String> = HashSet::new();
        for n in g.nodes.iter().filter(|n| n.op_type == "BatchNormalization") {
            no_decay.extend(n.inputs.iter().skip(1).cloned());
        }
        no_decay.extend(
            g.initializers
                .keys()
                .filter(|k| k.starts_with(GATE_PREFIX))
                .cloned(),
        );
        Ok(Trainer {
            nag: Nag::new(cfg.momentum, cfg.weight_decay),
            rule: gate_rule(cfg.gate_optimizer, cfg.momentum),
            gamma: cfg.gamma,
            model,
            cfg,
            gates,
            no_decay,
            base_macs,
            start_step: 0,
            locked_at: None,
            budget_zeroed: 0,
        })
    }

    /// Continues from a checkpoint directory.
    pub fn resume(&mut self, ck: checkpoint::Checkpoint) -> Result<()> {
        self.model = Model::new(&ck.graph, &self.model.device)?;
        self.nag.load_state(ck.weights_state);
        self.rule.load_state(ck.gates_state);
        self.gamma = ck.meta.gamma;
        self.start_step = ck.meta.step;
        Ok(())
    }

    fn save(&self, step: usize) -> Result<()> {
        let Some(dir) = &self.cfg.checkpoint_dir else {
            return Ok(());
        };
        let meta = Meta {
            step,
            gamma: self.gamma,
            seed: self.cfg.seed,
            total_steps: self.cfg.steps,
        };
        checkpoint::save(
            dir,
            &self.model.write_back()?,
            &meta,
            self.nag.state(),
            self.rule.state(),
        )
    }

    /// Fraction of the original MACs the current zero pattern implies, and
    /// (zero factors, all factors).
    pub fn implied(&self) -> Result<(f64, usize, usize)> {
        if self.gates.is_empty() {
            return Ok((1.0, 0, 0));
        }
        let mut g = self.model.graph.clone();
        let mut zeros = 0;
        let mut total = 0;
        for gv in &self.gates {
            let var = &self.model.vars[&gv.name];
            let a = super::model::to_ndarray(var.as_tensor())?;
            let n = a.len() / gv.span;
            zeros += a.iter().step_by(gv.span).filter(|&&v| v == 0.0).count();
            total += n;
            g.initializers
                .insert(gv.name.clone(), crate::graph::Tensor::F32(a));
        }
        let p = plan::plan(&g)?;
        let facts = shape::infer_strict(&g, 1)?;
        let macs = predict::predict(&g, &facts, &p).macs;
        Ok((macs as f64 / self.base_macs.max(1) as f64, zeros, total))
    }

    fn gate_step(
        &mut self,
        gv: &GateVar,
        var: &Var,
        grad: &Tensor,
        lr: f64,
    ) -> candle_core::Result<()> {
        let lam = var.as_tensor().detach();
        let shape = lam.dims().to_vec();
        let gamma = self.gamma * gv.weight;
        let locked = self.locked_at.is_some();
        let gamma = if locked { 0.0 } else { gamma };
        let new = if gv.span > 1 {
            let c = lam.elem_count();
            let groups = c / gv.span;
            let l = lam
                .reshape((groups, gv.span))?
                .narrow(1, 0, 1)?
                .flatten_all()?;
            let g = grad.reshape((groups, gv.span))?.sum(1)?;
            let u = self.rule.update(&gv.name, &l, &g, lr, gamma)?;
            u.reshape((groups, 1))?
                .broadcast_as((groups, gv.span))?
                .contiguous()?
                .reshape(shape)?
        } else {
            self.rule.update(&gv.name, &lam, grad, lr, gamma)?
        };
        // after the lock a deleted structure stays deleted
        let new = if locked {
            new.broadcast_mul(&lam.ne(0.0)?.to_dtype(lam.dtype())?)?
        } else {
            new
        };
        var.set(&new)
    }

    /// Trains from `start_step` to `cfg.steps`; `stop` is polled between
    /// steps (Ctrl-C) and leaves a checkpoint.
    pub fn run(
        &mut self,
        data: Arc<Dataset>,
        prep: &Preprocess,
        stop: &AtomicBool,
        progress: &mut dyn FnMut(&Record),
    ) -> Result<Outcome> {
        let spe = feed::steps_per_epoch(data.len(), self.cfg.batch);
        let feed = feed::spawn(
            data.clone(),
            prep.clone(),
            self.cfg.batch,
            self.cfg.seed,
            self.start_step,
            self.cfg.steps,
            self.cfg.augment,
        );
        let dev = self.model.device.clone();
        let mut records = Vec::new();
        let (mut loss_sum, mut correct, mut seen, mut n_steps) = (0f64, 0usize, 0usize, 0usize);
        let mut t0 = Instant::now();
        let names: Vec<String> = self.model.vars.keys().cloned().collect();
        let gate_index: HashMap<String, usize> = self
            .gates
            .iter()
            .enumerate()
            .map(|(i, g)| (g.name.clone(), i))
            .collect();
        let mut last = self.start_step;
        while let Some(b) = feed.recv() {
            if stop.load(Ordering::SeqCst) {
                self.save(b.step)?;
                return Ok(Outcome {
                    records,
                    stopped: Stop::Interrupted,
                    gamma: self.gamma,
                    steps_done: b.step,
                });
            }
            let step = b.step;
            // the schedule runs on through the lock, with a short warm-up
            // after it: an abrupt deletion plus stale momentum made BN-less
            // (folded) nets diverge within a few steps
            let lr = match self.locked_at {
                Some(at) => {
                    self.cfg.schedule.lr(step)
                        * ((step + 1 - at) as f64 / LOCK_WARMUP as f64).min(1.0)
                }
                None => self.cfg.schedule.lr(step),
            };
            let gate_lr = match self.cfg.gate_lr {
                Some(g) if self.cfg.schedule.base > 0.0 => lr * g / self.cfg.schedule.base,
                Some(g) => g,
                None => lr,
            };
            let e =
                |err: candle_core::Error| Error::Invalid(format!("training step {step}: {err}"));
            let x = Tensor::from_vec(b.x.iter().copied().collect::<Vec<f32>>(), b.x.shape(), &dev)
                .map_err(e)?;
            let x = x.to_dtype(self.model.dtype).map_err(e)?;
            let y = Tensor::new(b.labels.as_slice(), &dev).map_err(e)?;
            let (logits, updates) = self.model.forward(&x, true)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y).map_err(e)?;
            let lv = loss
                .to_dtype(DType::F64)
                .and_then(|l| l.to_scalar::<f64>())
                .map_err(e)?;
            if !lv.is_finite() || lv > 1e4 {
                return Err(Error::Invalid(format!(
                    "training diverged at step {step} (loss {lv}); the last checkpoint is kept; lower --lr"
                )));
            }
            let grads = loss.backward().map_err(e)?;
            for name in &names {
                let var = self.model.vars[name].clone();
                let Some(g) = grads.get(var.as_tensor()) else {
                    continue;
                };
                if let Some(&gi) = gate_index.get(name) {
                    let gv = GateVar {
                        name: self.gates[gi].name.clone(),
                        span: self.gates[gi].span,
                        weight: self.gates[gi].weight,
                    };
                    self.gate_step(&gv, &var, g, gate_lr).map_err(e)?;
                } else {
                    let wd = if self.no_decay.contains(name) {
                        0.0
                    } else {
                        self.cfg.weight_decay
                    };
                    let w = var.as_tensor().detach();
                    let new = self.nag.update_with_decay(name, &w, g, lr, wd).map_err(e)?;
                    var.set(&new).map_err(e)?;
                }
            }
            self.model.apply_stats(updates);
            let pred = logits
                .argmax(D::Minus1)
                .and_then(|p| p.to_vec1::<u32>())
                .map_err(e)?;
            correct += pred.iter().zip(&b.labels).filter(|(p, l)| p == l).count();
            seen += b.labels.len();
            loss_sum += lv;
            n_steps += 1;
            last = step + 1;
            let end = step + 1 == self.cfg.steps;
            if self.locked_at.is_none() {
                let due = self
                    .cfg
                    .lock_at
                    .is_some_and(|f| (step + 1) as f64 >= f * self.cfg.steps as f64);
                let mut reached = false;
                if let Some(target) = self.cfg.target_macs {
                    if (step + 1) % STEER_EVERY == 0 {
                        let (ratio, _, _) = self.implied()?;
                        reached = ratio <= target * 1.02;
                        // with a lock the budget step meets the target; γ
                        // steering is for single-phase runs
                        if !reached && self.cfg.lock_at.is_none() {
                            self.steer(ratio, target);
                        }
                    }
                }
                if due || (reached && self.cfg.lock_at.is_some()) {
                    if let Some(target) = self.cfg.target_macs {
                        self.budget_zeroed = self.enforce_budget(target)?;
                    }
                    self.locked_at = Some(step + 1);
                    self.nag.load_state(HashMap::new());
                }
            }
            if (step + 1) % self.cfg.log_every.max(1) == 0 || end {
                let secs = t0.elapsed().as_secs_f64();
                let (ratio, zeros, total) = self.implied()?;
                let r = Record {
                    step: step + 1,
                    epoch: (step + 1) as f64 / spe as f64,
                    loss: loss_sum / n_steps.max(1) as f64,
                    accuracy: correct as f64 / seen.max(1) as f64,
                    lr,
                    gamma: self.gamma,
                    zero_gates: zeros,
                    gates: total,
                    macs_ratio: ratio,
                    images_per_s: seen as f64 / secs.max(1e-9),
                    locked: self.locked_at.is_some(),
                };
                progress(&r);
                records.push(r);
                (loss_sum, correct, seen, n_steps) = (0.0, 0, 0, 0);
                t0 = Instant::now();
            }
            if self.cfg.checkpoint_dir.is_some()
                && ((step + 1) % self.cfg.checkpoint_every.max(1) == 0 || end)
            {
                self.save(step + 1)?;
            }
        }
        Ok(Outcome {
            records,
            stopped: Stop::Finished,
            gamma: self.gamma,
            steps_done: last,
        })
    }

    /// MAC-target controller: raise γ while the implied MACs are above the
    /// target, lower it (so gates can revive) when below. Small bounded
    /// multiplicative steps: structures die one by one and the network has
    /// time to adapt; inside the ±2 % band γ holds.
    fn steer(&mut self, ratio: f64, target: f64) {
        let err = (ratio - target) / target;
        self.gamma *= (2.0 * err).clamp(-0.15, 0.15).exp();
        self.gamma = self.gamma.clamp(1e-4, 100.0);
    }
}

impl Trainer {
    /// At the lock, with a MAC target not yet met: set to 0 the factors with
    /// the smallest values (the structures APG found least useful), one at a
    /// time, skipping any whose removal would undershoot the band, until the
    /// implied MACs reach the target. Returns how many were zeroed.
    fn enforce_budget(&mut self, target: f64) -> Result<usize> {
        let (mut ratio, _, _) = self.implied()?;
        if ratio <= target * 1.02 {
            return Ok(0);
        }
        let e = |err: candle_core::Error| Error::Invalid(format!("budget: {err}"));
        // candidates: (value, gate index, factor index)
        let mut units: Vec<(f32, usize, usize)> = Vec::new();
        let mut values: Vec<Vec<f32>> = Vec::new();
        for (gi, gv) in self.gates.iter().enumerate() {
            let a = super::model::to_ndarray(self.model.vars[&gv.name].as_tensor())?;
            let f: Vec<f32> = a.iter().step_by(gv.span).copied().collect();
            for (k, &v) in f.iter().enumerate() {
                if v != 0.0 {
                    units.push((v.abs(), gi, k));
                }
            }
            values.push(f);
        }
        units.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut alive: Vec<usize> = values
            .iter()
            .map(|f| f.iter().filter(|&&v| v != 0.0).count())
            .collect();
        let mut zeroed = 0;
        for (_, gi, k) in units {
            if ratio <= target * 1.02 {
                break;
            }
            // a branch goes only through its block gate: emptying a conv via
            // its channel gates leaves the next conv's bias as a constant
            // offset (measured: training collapsed)
            if values[gi].len() > 1 && alive[gi] == 1 {
                continue;
            }
            let old = values[gi][k];
            values[gi][k] = 0.0;
            self.write_gate(gi, &values[gi]).map_err(e)?;
            let (r, _, _) = self.implied()?;
            if r < target * 0.95 {
                values[gi][k] = old; // too much at once (a whole block): skip it
                self.write_gate(gi, &values[gi]).map_err(e)?;
                continue;
            }
            ratio = r;
            alive[gi] -= 1;
            zeroed += 1;
        }
        Ok(zeroed)
    }

    fn write_gate(&self, gi: usize, factors: &[f32]) -> candle_core::Result<()> {
        let gv = &self.gates[gi];
        let var = &self.model.vars[&gv.name];
        let shape = var.as_tensor().dims().to_vec();
        let full: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|i| factors[i / gv.span])
            .collect();
        let t = Tensor::from_vec(full, shape, var.as_tensor().device())?
            .to_dtype(var.as_tensor().dtype())?;
        var.set(&t)
    }
}

/// MACs that one factor of each gate stands for: the drop in predicted MACs
/// when the whole gate is 0, per factor.
fn unit_costs(g: &crate::graph::Graph, gates: &[crate::gate::Gate]) -> Result<Vec<f64>> {
    let facts = shape::infer_strict(g, 1)?;
    let base = predict::predict(g, &facts, &plan::plan(g)?).macs as f64;
    let mut out = Vec::new();
    for gt in gates {
        let mut h = g.clone();
        gate::set_factors(&mut h, gt, &vec![0.0; gt.count])?;
        let m = predict::predict(&h, &facts, &plan::plan(&h)?).macs as f64;
        out.push(((base - m) / gt.count as f64).max(0.0));
    }
    Ok(out)
}

/// Top-1 accuracy of the candle model in eval mode on the first `limit` samples.
pub fn evaluate(
    model: &Model,
    ds: &Dataset,
    prep: &Preprocess,
    batch: usize,
    limit: Option<usize>,
) -> Result<f64> {
    let n = limit.unwrap_or(ds.len()).min(ds.len());
    let mut correct = 0;
    for start in (0..n).step_by(batch.max(1)) {
        let idx: Vec<usize> = (start..(start + batch).min(n)).collect();
        let x = prep.batch(ds, &idx);
        let e = |err: candle_core::Error| Error::Invalid(format!("evaluation: {err}"));
        let t = Tensor::from_vec(
            x.iter().copied().collect::<Vec<f32>>(),
            x.shape(),
            &model.device,
        )
        .and_then(|t| t.to_dtype(model.dtype))
        .map_err(e)?;
        let (y, _) = model.forward(&t, false)?;
        let pred = y
            .argmax(D::Minus1)
            .and_then(|p| p.to_vec1::<u32>())
            .map_err(e)?;
        correct += pred
            .iter()
            .zip(&idx)
            .filter(|(p, &i)| **p == ds.labels[i])
            .count();
    }
    Ok(correct as f64 / n.max(1) as f64)
}
