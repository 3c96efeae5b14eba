//! The training loop: weights by Nesterov SGD with weight decay, gates by the
//! chosen proximal rule, from the same mini-batch gradient in the same step.
//! The loop is here; what it is told and reports is `config`, which factors
//! a budget step deletes is `budget` (pure), the γ controller `steering`,
//! the gates' own step and lock `gates`, the learning rate over the phases
//! `phases`, and the loss, checkpoints and BN recalibration their own files.

pub mod budget;
mod checkpointing;
mod config;
mod gates;
mod loss;
mod phases;
mod recalibrate;
mod steering;

pub use config::{Config, Outcome, Rank, Record, Selection, Stop};
pub use loss::{distillation, is_scores, output_matching};

use super::feed::{self, Batch};
use super::guard::{Guard, Verdict};
use super::model::Model;
use super::optim::{gate_rule, Nag, Rule};
use crate::cost::{self, Cost, Macs};
use crate::data::{Dataset, Preprocess};
use crate::error::{Error, Result};
use crate::gate::{self, GATE_PREFIX};
use crate::graph::Graph;
use crate::structure::GateKind;
use candle_core::{DType, Tensor};
use gates::GateVar;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use steering::{steer_aim, STEER_EVERY, STEER_HORIZON};

pub struct Trainer {
    pub model: Model,
    /// The model as it was at the start, frozen: the distillation teacher.
    teacher: Option<Model>,
    pub cfg: Config,
    nag: Nag,
    rule: Box<dyn Rule>,
    gates: Vec<GateVar>,
    no_decay: HashSet<String>,
    /// The MACs the zero pattern implies (every record reports them).
    macs: Macs,
    /// What a target is a fraction of: the MACs, or a latency table's
    /// prediction.
    cost: Box<dyn Cost>,
    pub gamma: f64,
    pub start_step: usize,
    /// Step at which the zero pattern was locked.
    pub locked_at: Option<usize>,
    /// Factors the MAC budget set to 0 (beyond APG's zeros).
    pub budget_zeroed: usize,
    /// What one factor of each gate costs, in the target's unit.
    costs: Vec<f64>,
    /// Σ (λ·∂L/∂λ)² per gate element since the start.
    taylor: HashMap<String, Tensor>,
    /// Per gate: 1 where the factor may move, 0 where a budget step (or the
    /// lock) deleted it for good.
    alive: HashMap<String, Tensor>,
    /// Step of the latest budget step (the learning rate warms up after it).
    last_cut: Option<usize>,
    /// Budget steps done.
    cuts: usize,
    /// Gate values at the last `STEER_WINDOW` controller updates, oldest
    /// first (their motion since projects the zero pattern ahead).
    moving: Vec<HashMap<String, Vec<f32>>>,
    guard: Guard,
    /// The last healthy state: learned tensors and BN statistics.
    snapshot: Option<(Vec<Tensor>, HashMap<String, Tensor>)>,
}

/// Loss and accuracy summed over the steps since the last record.
struct Window {
    loss_sum: f64,
    /// Samples answered as the labels (or the teacher) say; fractions of
    /// a sample for maps (positions that agree).
    correct: f64,
    seen: usize,
    steps: usize,
    since: Instant,
}

impl Window {
    fn new() -> Self {
        Window {
            loss_sum: 0.0,
            correct: 0.0,
            seen: 0,
            steps: 0,
            since: Instant::now(),
        }
    }
}

/// How many of the batch's samples `output` answers as the reference
/// does: the labels, or without labels the teacher's top-1; for outputs
/// that are not scores, the fraction of positions whose largest channel
/// (axis 1) is the teacher's, per sample.
fn agreement(
    output: &Tensor,
    teacher: Option<&Tensor>,
    labels: &[u32],
    label_free: bool,
) -> candle_core::Result<f64> {
    let top = |t: &Tensor, axis: usize| -> candle_core::Result<Vec<u32>> {
        t.argmax(axis)?.flatten_all()?.to_vec1::<u32>()
    };
    let same = |a: &[u32], b: &[u32]| a.iter().zip(b).filter(|(x, y)| x == y).count();
    if is_scores(output) {
        let pred = top(output, 1)?;
        let reference = match (teacher, label_free) {
            (Some(t), true) => top(t, 1)?,
            _ => labels.to_vec(),
        };
        return Ok(same(&pred, &reference) as f64);
    }
    let Some(t) = teacher else {
        return Ok(0.0);
    };
    let (pred, reference) = (top(output, 1)?, top(t, 1)?);
    let n = output.dims().first().copied().unwrap_or(1).max(1);
    Ok(same(&pred, &reference) as f64 / pred.len().max(1) as f64 * n as f64)
}

/// Which learned tensors are gates (by name, to their index).
type GateIndex = HashMap<String, usize>;

impl Trainer {
    pub fn new(model: Model, cfg: Config) -> Result<Self> {
        let g = &model.graph;
        let found = gate::find(g)?;
        let macs = Macs::of_original(g)?;
        let cost: Box<dyn Cost> = match &cfg.latency {
            Some(table) => Box::new(cost::Latency {
                table: table.clone(),
            }),
            None => Box::new(macs.clone()),
        };
        // what one factor costs matters only to a target
        let costs = if cfg.target_macs.is_some() && !found.is_empty() {
            unit_costs(g, &found, cost.as_ref())?
        } else {
            vec![1.0; found.len()]
        };
        let mean = costs.iter().sum::<f64>() / costs.len().max(1) as f64;
        let gate_widths = cost.gate_widths(g)?;
        let gates = found
            .iter()
            .zip(&costs)
            .map(|(gt, &c)| GateVar {
                name: gt.name.clone(),
                block_gate: gt.kind == GateKind::Block,
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
                widths: gate_widths.get(&gt.name).cloned(),
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
        let teacher = if cfg.distill > 0.0 || cfg.label_free {
            Some(Model::new(&model.graph, &model.device)?)
        } else {
            None
        };
        Ok(Trainer {
            teacher,
            nag: Nag::new(cfg.momentum, cfg.weight_decay),
            rule: gate_rule(cfg.gate_optimizer, cfg.momentum),
            gamma: cfg.gamma,
            model,
            cfg,
            gates,
            no_decay,
            macs,
            cost,
            start_step: 0,
            locked_at: None,
            budget_zeroed: 0,
            costs,
            taylor: HashMap::new(),
            alive: HashMap::new(),
            last_cut: None,
            cuts: 0,
            moving: Vec::new(),
            guard: Guard::new(),
            snapshot: None,
        })
    }

    /// Fraction of the original MACs the current zero pattern implies, and
    /// (zero factors, all factors).
    pub fn implied(&self) -> Result<(f64, usize, usize)> {
        if self.gates.is_empty() {
            return Ok((1.0, 0, 0));
        }
        let (g, zeros, total) = self.pattern(0)?;
        Ok((self.macs.ratio(&g)?, zeros, total))
    }

    /// The predicted latency over the original's, when a table is set.
    pub fn implied_latency(&self) -> Result<Option<f64>> {
        if self.cfg.latency.is_none() {
            return Ok(None);
        }
        if self.gates.is_empty() {
            return Ok(Some(1.0));
        }
        let (g, _, _) = self.pattern(0)?;
        self.target_ratio_of(&g).map(Some)
    }

    /// What the target is a fraction of (the latency with a table, else
    /// the MACs) for gate values `g`.
    fn target_ratio_of(&self, g: &Graph) -> Result<f64> {
        self.cost.ratio(g)
    }

    /// The target's ratio as the current zero pattern implies it.
    fn target_ratio(&self) -> Result<f64> {
        if self.gates.is_empty() {
            return Ok(1.0);
        }
        self.target_ratio_of(&self.pattern(0)?.0)
    }

    fn lock_step(&self) -> Option<usize> {
        budget::lock_step(&self.cfg)
    }

    fn lr_at(&self, step: usize) -> f64 {
        phases::phase_lr(&self.cfg, self.locked_at, self.last_cut, step) * self.guard.lr_scale
    }

    /// Rewinds done so far by the divergence guard.
    pub fn rewinds(&self) -> usize {
        self.guard.rewinds
    }

    /// Deep copies: `Var::set` writes in place.
    fn take_snapshot(&mut self) -> candle_core::Result<()> {
        let vars = self
            .model
            .vars
            .values()
            .map(|v| v.as_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()?;
        self.snapshot = Some((vars, self.model.stats.clone()));
        Ok(())
    }

    fn rewind(&mut self) -> candle_core::Result<()> {
        if let Some((vars, stats)) = &self.snapshot {
            for (v, t) in self.model.vars.values().zip(vars) {
                v.set(t)?;
            }
            self.model.stats = stats.clone();
        }
        self.nag.load_state(HashMap::new());
        Ok(())
    }

    fn budget_due(&self, step: usize) -> Option<f64> {
        budget::aim(&self.cfg, self.cuts, step)
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
        let mut records = Vec::new();
        let mut window = Window::new();
        let index: GateIndex = self
            .gates
            .iter()
            .enumerate()
            .map(|(i, g)| (g.name.clone(), i))
            .collect();
        let mut last = self.start_step;
        while let Some(b) = feed.recv() {
            let b = b?;
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
            let lr = self.lr_at(step);
            let (loss, correct) = self.step(&b, lr, &index)?;
            window.loss_sum += loss;
            window.correct += correct;
            window.seen += b.labels.len();
            window.steps += 1;
            last = step + 1;
            if self.locked_at.is_none() {
                self.phase_change(step)?;
            }
            let end = step + 1 == self.cfg.steps;
            if (step + 1) % self.cfg.log_every.max(1) == 0 || end {
                let r = self.record(step, spe, lr, &window)?;
                progress(&r);
                records.push(r);
                window = Window::new();
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

    /// One training step on batch `b` at learning rate `lr`: forward,
    /// loss, the tape's backward, NAG for the weights and the gate rule for
    /// the gates, BN statistics, the divergence guard. Returns the loss and
    /// how many samples the batch's logits got right.
    fn step(&mut self, b: &Batch, lr: f64, index: &GateIndex) -> Result<(f64, f64)> {
        let step = b.step;
        let gate_lr = match self.cfg.gate_lr {
            Some(g) if self.cfg.schedule.base > 0.0 => lr * g / self.cfg.schedule.base,
            Some(g) => g,
            None => lr,
        };
        let e = |err: candle_core::Error| Error::Invalid(format!("training step {step}: {err}"));
        let dev = self.model.device.clone();
        let x = Tensor::from_vec(b.x.iter().copied().collect::<Vec<f32>>(), b.x.shape(), &dev)
            .map_err(e)?;
        let x = x.to_dtype(self.model.dtype).map_err(e)?;
        let y = Tensor::new(b.labels.as_slice(), &dev).map_err(e)?;
        let (tape, updates) = self.model.forward_taped(&x)?;
        let logits = tape.output().clone();
        let (loss, teacher_logits) = self.loss(&x, &logits, &y).map_err(e)?;
        let lv = loss
            .to_dtype(DType::F64)
            .and_then(|l| l.to_scalar::<f64>())
            .map_err(e)?;
        if !lv.is_finite() || lv > 1e4 {
            return Err(Error::Invalid(format!(
                "training diverged at step {step} (loss {lv}); the last checkpoint is kept; lower --lr"
            )));
        }
        let grads = tape.backward(&loss).map_err(e)?;
        let names: Vec<String> = self.model.vars.keys().cloned().collect();
        for name in &names {
            let var = self.model.vars[name].clone();
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            if let Some(&gi) = index.get(name) {
                let gv = self.gates[gi].clone();
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
        match self.guard.observe(lv) {
            Some(Verdict::Healthy) => self.take_snapshot().map_err(e)?,
            Some(Verdict::Rewind) => self.rewind().map_err(e)?,
            None => {}
        }
        let correct = agreement(
            &logits,
            teacher_logits.as_ref(),
            &b.labels,
            self.cfg.label_free,
        )
        .map_err(e)?;
        Ok((lv, correct))
    }

    /// After `step`, before the lock: a due budget step, the γ controller,
    /// and the lock itself once due or once the target is reached.
    fn phase_change(&mut self, step: usize) -> Result<()> {
        let e = |err: candle_core::Error| Error::Invalid(format!("training step {step}: {err}"));
        let due = self.lock_step().is_some_and(|l| step + 1 >= l);
        let mut reached = false;
        let steering = self.cfg.lock_at.is_none() || self.cfg.selection == Selection::Gamma;
        if let Some(target) = self.cfg.target_macs {
            let due_cut = match self.cfg.selection {
                Selection::Budget => self.budget_due(step),
                Selection::Gamma => None,
            };
            if let Some(aim) = due_cut {
                self.budget_zeroed += self.enforce_budget(aim.max(target))?;
                self.cuts += 1;
                self.last_cut = Some(step + 1);
                self.nag.load_state(HashMap::new());
                self.guard.restart();
                self.take_snapshot().map_err(e)?;
            }
            if (step + 1).is_multiple_of(STEER_EVERY) {
                let ratio = self.target_ratio()?;
                reached = ratio <= target * 1.02;
                // with a lock the budget steps meet the target
                // unless γ is to do it
                if steering {
                    let projected = if self.moving.is_empty() {
                        ratio
                    } else {
                        self.target_ratio_of(&self.pattern(STEER_HORIZON)?.0)?
                    };
                    let until = self.lock_step().unwrap_or(self.cfg.steps);
                    let now = steer_aim(target, step + 1, until);
                    let ahead = steer_aim(target, step + 1 + STEER_HORIZON, until);
                    self.steer((ratio, now), (projected, ahead));
                    self.remember_gates()?;
                }
            }
        }
        let gamma_mode = self.cfg.selection == Selection::Gamma;
        if due || (reached && (self.cfg.lock_at.is_some() || gamma_mode)) {
            if let Some(target) = self.cfg.target_macs {
                // γ's zeros that reached the target stand as they are
                if !(gamma_mode && reached) {
                    self.budget_zeroed += self.enforce_budget(target)?;
                } else {
                    self.budget_zeroed += self.align_gates()?;
                }
            }
            self.lock().map_err(e)?;
            self.locked_at = Some(step + 1);
            self.last_cut = Some(step + 1);
            self.nag.load_state(HashMap::new());
            self.guard.restart();
            self.take_snapshot().map_err(e)?;
        }
        Ok(())
    }

    /// The curve's record after `step`, from the steps since the last.
    fn record(&self, step: usize, spe: usize, lr: f64, w: &Window) -> Result<Record> {
        let secs = w.since.elapsed().as_secs_f64();
        let (ratio, zeros, total) = self.implied()?;
        Ok(Record {
            step: step + 1,
            epoch: (step + 1) as f64 / spe as f64,
            loss: w.loss_sum / w.steps.max(1) as f64,
            accuracy: w.correct / w.seen.max(1) as f64,
            lr,
            gamma: self.gamma,
            zero_gates: zeros,
            gates: total,
            macs_ratio: ratio,
            latency_ratio: self.implied_latency()?,
            images_per_s: w.seen as f64 / secs.max(1e-9),
            locked: self.locked_at.is_some(),
            rewinds: self.guard.rewinds,
        })
    }
}

/// What one factor of each gate stands for: the drop in `cost` (MACs, or
/// predicted nanoseconds) when the whole gate is 0, per factor.
fn unit_costs(g: &Graph, gates: &[gate::Gate], cost: &dyn Cost) -> Result<Vec<f64>> {
    let base = cost.of(g)?;
    let mut out = Vec::new();
    for gt in gates {
        let mut h = g.clone();
        gate::set_factors(&mut h, gt, &vec![0.0; gt.count])?;
        out.push(((base - cost.of(&h)?) / gt.count as f64).max(0.0));
    }
    Ok(out)
}
