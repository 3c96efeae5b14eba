//! The training loop: weights by Nesterov SGD with weight decay, gates by the
//! chosen proximal rule, from the same mini-batch gradient in the same step.

use super::checkpoint::{self, Meta};
use super::feed::{self, Augment};
use super::guard::{Guard, Verdict};
use super::model::Model;
use super::optim::{gate_rule, GateOptimizer, Nag, Rule};
use super::schedule::Schedule;
use crate::data::{Dataset, Preprocess};
use crate::error::{Error, Result};
use crate::gate::{self, GATE_PREFIX};
use crate::graph::shape;
use crate::measure::latency_table::LatencyTable;
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
    /// rest is fine-tuning (γ = 0, zero gates stay 0). In target mode the
    /// lock also happens as soon as the target is reached. `None`: never
    /// (the paper's single run).
    pub lock_at: Option<f64>,
    /// How the MAC budget picks the factors it zeroes.
    pub rank: Rank,
    /// Budget steps spread over the first phase (the last one at the lock);
    /// 1: everything at the lock.
    pub budget_steps: usize,
    /// Whether the budget deletes whole blocks before channels and groups.
    pub blocks_first: bool,
    /// Weight of distillation from the model as it was at the start (its
    /// softened logits as targets): 0 = labels only, 1 = no labels.
    pub distill: f64,
    /// Softening temperature of the distillation targets.
    pub distill_temperature: f64,
    /// When set, `target_macs` is a fraction of this table's predicted
    /// runtime latency instead of the MACs.
    pub latency: Option<Arc<LatencyTable>>,
    /// How a target is reached.
    pub selection: Selection,
}

/// How a run reaches its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    /// Budget steps zero the least important factors in steps up to the
    /// lock, APG's zeros counted.
    Budget,
    /// γ steered along a glide path so APG's exact zeros alone reach the
    /// target (the paper's mechanism); the pattern locks when they do.
    /// At the lock the budget steps in only if they have not (counted in
    /// `budget_zeroed`).
    Gamma,
}

impl Default for Config {
    /// `TrainOptions::default()` for one epoch of 4000 samples, no MAC
    /// target, no lock: tests and library users change what they need.
    fn default() -> Self {
        super::options::TrainOptions::default().config(
            crate::measure::batching::TRAIN_BATCH,
            4000,
            super::options::Unset::OneEpoch,
            None,
        )
    }
}

/// Ordering of the factors the MAC budget zeroes (least important first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rank {
    /// The gate value |λ| (what APG has learned).
    Value,
    /// First-order loss change of removing the factor, (λ·∂L/∂λ)² summed
    /// over the steps so far, per MAC the factor costs.
    Taylor,
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
    /// The latency it implies over the original's, when a latency table
    /// steers the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ratio: Option<f64>,
    pub images_per_s: f64,
    /// Whether the zero pattern is locked (fine-tuning phase).
    pub locked: bool,
    /// Rewinds so far (the loss ran away; back to the last healthy state at
    /// half the learning rate).
    pub rewinds: usize,
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

/// Steps of learning-rate warm-up after the lock and each budget step.
const LOCK_WARMUP: usize = 20;

/// Steps between target-controller updates.
const STEER_EVERY: usize = 5;

/// Controller updates over which the gates' motion is measured.
const STEER_WINDOW: usize = 3;

/// Steps ahead the target controller projects the gates' motion.
const STEER_HORIZON: usize = 10;

/// Fraction of a single-phase run by which the controller aims to reach
/// its target (the rest trains the pattern with γ holding it).
const STEER_REACH: f64 = 0.6;

#[derive(Clone)]
struct GateVar {
    name: String,
    block_gate: bool,
    /// Channels per factor (group gates tie C/G channels).
    span: usize,
    /// γ multiplier: 1, or the MACs one factor costs relative to the mean.
    weight: f64,
    /// With a latency table: the widths (factor counts) the budget may
    /// leave this gate at.
    widths: Option<Vec<usize>>,
}

pub struct Trainer {
    pub model: Model,
    /// The model as it was at the start, frozen: the distillation teacher.
    teacher: Option<Model>,
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
    /// Factors the MAC budget set to 0 (beyond APG's zeros).
    pub budget_zeroed: usize,
    /// MACs one factor of each gate costs.
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

impl Trainer {
    pub fn new(model: Model, cfg: Config) -> Result<Self> {
        let g = &model.graph;
        let found = gate::find(g)?;
        let facts = shape::infer_strict(g, 1)?;
        let base_macs = crate::graph::cost::count(g, &facts).macs;
        // what one factor costs matters only to a MAC target
        let costs = if cfg.target_macs.is_some() && !found.is_empty() {
            unit_costs(g, &found, cfg.latency.as_deref())?
        } else {
            vec![1.0; found.len()]
        };
        let mean = costs.iter().sum::<f64>() / costs.len().max(1) as f64;
        let gate_widths = gate_widths(g, cfg.latency.as_deref())?;
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
        let teacher = if cfg.distill > 0.0 {
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
            base_macs,
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

    /// Cross-entropy on the labels, mixed with distillation from the
    /// teacher when there is one: α·T²·H(softmax(t/T), softmax(s/T)) +
    /// (1 − α)·CE (Hinton et al. 2015; T² keeps the gradient scale).
    pub fn loss(&self, x: &Tensor, logits: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
        let ce = || candle_nn::loss::cross_entropy(logits, y);
        let Some(teacher) = &self.teacher else {
            return ce();
        };
        let (a, t) = (self.cfg.distill, self.cfg.distill_temperature.max(1e-3));
        let tl = teacher
            .infer(x)
            .map_err(|e| candle_core::Error::Msg(format!("distillation teacher: {e}")))?;
        let p = candle_nn::ops::softmax(&(tl.detach() / t)?, D::Minus1)?;
        let logq = candle_nn::ops::log_softmax(&(logits / t)?, D::Minus1)?;
        let kd = ((p * logq)?.sum(D::Minus1)?.mean_all()?.neg()? * (t * t))?;
        if a >= 1.0 {
            return Ok(kd);
        }
        (ce()? * (1.0 - a))? + (kd * a)?
    }

    /// Continues from a checkpoint directory.
    pub fn resume(&mut self, ck: checkpoint::Checkpoint) -> Result<()> {
        self.model = Model::new(&ck.graph, &self.model.device)?;
        self.nag.load_state(ck.weights_state);
        self.rule.load_state(ck.gates_state);
        self.gamma = ck.meta.gamma;
        self.start_step = ck.meta.step;
        // the phase and the frozen zeros follow from the step: budget steps
        // already taken are not repeated, their zeros stay (the Taylor sums
        // start again)
        let e = |err: candle_core::Error| Error::during("resuming", err);
        if self.lock_step().is_some_and(|l| self.start_step >= l) {
            self.lock().map_err(e)?;
            self.locked_at = self.lock_step();
        } else if self.cfg.target_macs.is_some() && self.cfg.selection == Selection::Budget {
            while self.budget_due(self.start_step.saturating_sub(1)).is_some() {
                self.cuts += 1;
            }
            if self.cuts > 0 {
                self.lock().map_err(e)?;
            }
        }
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

    /// The graph with the current gate values, and (zero factors, all
    /// factors) as they are. With `ahead` steps, every factor whose motion
    /// over the remembered controller updates (`moving`), kept up, would
    /// cross 0 within them is set to 0: a projection of the zero pattern.
    /// The window spans several updates: one gate's noise over 5 steps
    /// (a whole block's, at a high gate learning rate) is no trend.
    fn pattern(&self, ahead: usize) -> Result<(crate::graph::Graph, usize, usize)> {
        let mut g = self.model.graph.clone();
        let mut zeros = 0;
        let mut total = 0;
        for gv in &self.gates {
            let var = &self.model.vars[&gv.name];
            let mut a = super::model::to_ndarray(var.as_tensor())?;
            let n = a.len() / gv.span;
            zeros += a.iter().step_by(gv.span).filter(|&&v| v == 0.0).count();
            total += n;
            let oldest = self.moving.first().and_then(|m| m.get(&gv.name));
            if let Some(before) = oldest.filter(|_| ahead > 0) {
                let k = ahead as f32 / (STEER_EVERY * self.moving.len()) as f32;
                for (v, &p) in a.iter_mut().zip(before) {
                    if *v + (*v - p) * k <= 0.0 {
                        *v = 0.0;
                    }
                }
            }
            g.initializers
                .insert(gv.name.clone(), crate::graph::Tensor::F32(a));
        }
        Ok((g, zeros, total))
    }

    /// Remembers the gate values for the next projection.
    fn remember_gates(&mut self) -> Result<()> {
        let mut now = HashMap::new();
        for gv in &self.gates {
            let a = super::model::to_ndarray(self.model.vars[&gv.name].as_tensor())?;
            now.insert(gv.name.clone(), a.iter().copied().collect());
        }
        self.moving.push(now);
        if self.moving.len() > STEER_WINDOW {
            self.moving.remove(0);
        }
        Ok(())
    }

    /// Fraction of the original MACs the current zero pattern implies, and
    /// (zero factors, all factors).
    pub fn implied(&self) -> Result<(f64, usize, usize)> {
        if self.gates.is_empty() {
            return Ok((1.0, 0, 0));
        }
        let (g, zeros, total) = self.pattern(0)?;
        Ok((self.macs_ratio_of(&g, &plan::plan(&g)?)?, zeros, total))
    }

    /// The MACs gate values `g` (with plan `p`) imply, over the original's.
    fn macs_ratio_of(&self, g: &crate::graph::Graph, p: &plan::Plan) -> Result<f64> {
        let facts = shape::infer_strict(g, 1)?;
        Ok(predict::predict(g, &facts, p).macs as f64 / self.base_macs.max(1) as f64)
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
    fn target_ratio_of(&self, g: &crate::graph::Graph) -> Result<f64> {
        let p = plan::plan(g)?;
        Ok(match &self.cfg.latency {
            Some(table) => table.ratio(&predict::conv_shapes(g, &p)),
            None => self.macs_ratio_of(g, &p)?,
        })
    }

    /// The target's ratio as the current zero pattern implies it.
    fn target_ratio(&self) -> Result<f64> {
        if self.gates.is_empty() {
            return Ok(1.0);
        }
        self.target_ratio_of(&self.pattern(0)?.0)
    }

    fn gate_step(
        &mut self,
        gv: &GateVar,
        var: &Var,
        grad: &Tensor,
        lr: f64,
    ) -> candle_core::Result<()> {
        let lam = var.as_tensor().detach();
        // importance before the step: the first-order loss change of λ → 0,
        // kept only while a budget step can still use it
        if self.cfg.rank == Rank::Taylor
            && self.cfg.target_macs.is_some()
            && self.locked_at.is_none()
        {
            let t = (&lam * grad)?.sqr()?;
            let t = match self.taylor.remove(&gv.name) {
                Some(acc) => (acc + t)?,
                None => t,
            };
            self.taylor.insert(gv.name.clone(), t);
        }
        let shape = lam.dims().to_vec();
        let gamma = if self.locked_at.is_some() {
            0.0
        } else {
            self.gamma * gv.weight
        };
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
        // what a budget step or the lock deleted stays deleted
        let new = match self.alive.get(&gv.name) {
            Some(m) if self.locked_at.is_some() => {
                // after the lock the pattern is fixed both ways: a factor
                // alive at the lock keeps its last value rather than reach
                // 0 (a gate still falling when γ's zeros reached the target
                // would otherwise take the MACs past it)
                let new = new.broadcast_mul(m)?;
                let hit = new.eq(0.0)?.to_dtype(new.dtype())?.broadcast_mul(m)?;
                (&new + (hit * &lam)?)?
            }
            Some(m) => new.broadcast_mul(m)?,
            None => new,
        };
        var.set(&new)
    }

    fn lock_step(&self) -> Option<usize> {
        lock_step(&self.cfg)
    }

    fn lr_at(&self, step: usize) -> f64 {
        phase_lr(&self.cfg, self.locked_at, self.last_cut, step) * self.guard.lr_scale
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
        budget_aim(&self.cfg, self.cuts, step)
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
            let (tape, updates) = self.model.forward_taped(&x)?;
            let logits = tape.output().clone();
            let loss = self.loss(&x, &logits, &y).map_err(e)?;
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
            for name in &names {
                let var = self.model.vars[name].clone();
                let Some(g) = grads.get(var.as_tensor()) else {
                    continue;
                };
                if let Some(&gi) = gate_index.get(name) {
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
                    if (step + 1) % STEER_EVERY == 0 {
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
                    latency_ratio: self.implied_latency()?,
                    images_per_s: seen as f64 / secs.max(1e-9),
                    locked: self.locked_at.is_some(),
                    rewinds: self.guard.rewinds,
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

    /// The target controller of single-phase runs (APG's own zeros do the
    /// selecting): γ is steered so the ratio the zeros imply follows a
    /// glide path to the target (`steer_aim`). `now`: (the ratio now, the
    /// path's value now); `ahead`: (the ratio if every factor kept moving
    /// as it did since the last update for `STEER_HORIZON` steps, the
    /// path's value then). γ rises while both are above the path, falls
    /// while either is below it (more factors are on their way to 0 than
    /// the path allows: easing off lets the loss gradient hold up the ones
    /// it needs, and zeros below the target may revive), and holds inside
    /// the ±2 % band. Steps are multiplicative and bounded; while the
    /// projection is more than 5 % below the path the gates' momentum is
    /// cleared too. Steering on the zeros alone, γ rises until the first zeros appear, by which time
    /// every gate has shrunk alike and a flood crosses 0 at once.
    fn steer(&mut self, now: (f64, f64), ahead: (f64, f64)) {
        let (over_now, over_ahead) = (now.0 / now.1 - 1.0, ahead.0 / ahead.1 - 1.0);
        let rate = if over_now > 0.02 && over_ahead > 0.02 {
            (2.0 * over_now).clamp(0.02, 0.3)
        } else if over_now < -0.02 || over_ahead < -0.02 {
            (2.0 * over_now.min(over_ahead)).clamp(-0.3, -0.02)
        } else {
            0.0
        };
        if rate < 0.0 && over_ahead < -0.05 {
            // brake: the gates' momentum would carry the falling ones on
            // past the path whatever γ does now
            self.rule.load_state(HashMap::new());
        }
        self.gamma = (self.gamma * rate.exp()).clamp(1e-4, 100.0);
    }
}

/// The glide path of the target controller: from 1 at the start to
/// `target` at `STEER_REACH` of `steps` (the lock, or the run), linear,
/// then the target.
fn steer_aim(target: f64, step: usize, steps: usize) -> f64 {
    let reach = (steps as f64 * STEER_REACH).max(1.0);
    let f = (step as f64 / reach).min(1.0);
    1.0 - (1.0 - target) * f
}

impl Trainer {
    /// Re-estimates every BatchNorm's running statistics as the plain
    /// average of the batch statistics over `samples` training images
    /// (spread over the split, no augmentation), the weights fixed. After
    /// a short run that deleted structures, the running averages still
    /// carry the statistics of the network before the deletions, and the
    /// model scores far below its training accuracy in eval mode. Returns
    /// the number of batches used (0 when the model has no BatchNorm).
    pub fn recalibrate_bn(
        &mut self,
        data: &Dataset,
        prep: &Preprocess,
        samples: usize,
    ) -> Result<usize> {
        if self.model.stats.is_empty() || samples == 0 || data.is_empty() {
            return Ok(0);
        }
        let picks = crate::measure::batching::spread(data.len(), samples.min(data.len()));
        let e = |err: candle_core::Error| Error::during("BatchNorm recalibration", err);
        let mut used = 0;
        for chunk in picks.chunks(self.cfg.batch.max(2)) {
            if chunk.len() < 2 {
                break; // one sample has no variance
            }
            let x = prep.batch(data, chunk)?;
            let t = Tensor::from_vec(
                x.iter().copied().collect::<Vec<f32>>(),
                x.shape(),
                &self.model.device,
            )
            .and_then(|t| t.to_dtype(self.model.dtype))
            .map_err(e)?;
            // batch i enters with weight 1/(i+1): a running mean
            self.model.stat_momentum = Some(used as f64 / (used + 1) as f64);
            let r = self.model.forward(&t, true);
            self.model.stat_momentum = None;
            let (_, updates) = r?;
            self.model.apply_stats(updates);
            used += 1;
        }
        Ok(used)
    }

    /// Freezes the zero pattern: every gate element that is 0 stays 0.
    fn lock(&mut self) -> candle_core::Result<()> {
        for gv in &self.gates {
            let v = self.model.vars[&gv.name].as_tensor();
            let m = v.ne(0.0)?.to_dtype(v.dtype())?;
            self.alive.insert(gv.name.clone(), m);
        }
        Ok(())
    }

    /// A budget step: set to 0 the least important factors (by `cfg.rank`),
    /// one at a time, skipping any whose removal would undershoot the band,
    /// until the implied MACs reach `target`; then every zero (APG's too) is
    /// frozen. Returns how many factors the budget zeroed.
    fn enforce_budget(&mut self, target: f64) -> Result<usize> {
        let mut ratio = self.target_ratio()?;
        if ratio <= target * 1.02 {
            return Ok(0);
        }
        let e = |err: candle_core::Error| Error::during("a MAC budget step", err);
        // candidates: (score, gate index, factors), least important first;
        // a gate with allowed widths gives chunks that step between them
        let mut units: Vec<(f64, usize, Vec<usize>)> = Vec::new();
        let mut values: Vec<Vec<f32>> = Vec::new();
        for (gi, gv) in self.gates.iter().enumerate() {
            let f = self.factors(gi)?;
            let scores = self.scores(gi, &f)?;
            let mut order: Vec<usize> = (0..f.len()).filter(|&k| f[k] != 0.0).collect();
            match &gv.widths {
                Some(w) => {
                    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
                    for c in super::widths::chunks(&order, w) {
                        let mean = c.iter().map(|&k| scores[k]).sum::<f64>() / c.len() as f64;
                        units.push((mean, gi, c));
                    }
                }
                None => units.extend(order.into_iter().map(|k| (scores[k], gi, vec![k]))),
            }
            values.push(f);
        }
        // blocks first when asked: a deleted block shortens the graph, while
        // thinner inner convs barely speed a CPU runtime up (docs/algorithm.md).
        // Ties (a branch whose every part scores 0) go to the bigger
        // structure: one block gate rather than its channels one by one
        let costs = &self.costs;
        let first = |gi: usize| !(self.cfg.blocks_first && self.gates[gi].block_gate);
        units.sort_by(|a, b| {
            first(a.1)
                .cmp(&first(b.1))
                .then_with(|| a.0.total_cmp(&b.0))
                .then_with(|| costs[b.1].total_cmp(&costs[a.1]))
        });
        let mut alive: Vec<usize> = values
            .iter()
            .map(|f| f.iter().filter(|&&v| v != 0.0).count())
            .collect();
        // a chunk skipped leaves the gate's later chunks misaligned
        let mut blocked: HashSet<usize> = HashSet::new();
        let mut zeroed = 0;
        for (_, gi, ks) in units {
            if ratio <= target * 1.02 {
                break;
            }
            // a branch goes only through its block gate: emptying a conv via
            // its channel gates leaves the next conv's bias as a constant
            // offset the rest of the network was not trained with
            if blocked.contains(&gi) || (values[gi].len() > 1 && alive[gi] <= ks.len()) {
                continue;
            }
            let old: Vec<f32> = ks.iter().map(|&k| values[gi][k]).collect();
            for &k in &ks {
                values[gi][k] = 0.0;
            }
            self.write_gate(gi, &values[gi]).map_err(e)?;
            let r = self.target_ratio()?;
            // too much at once (a whole block), or, timed, no faster
            let slower = self.cfg.latency.is_some() && r >= ratio;
            if r < target * 0.95 || slower {
                for (&k, &v) in ks.iter().zip(&old) {
                    values[gi][k] = v;
                }
                self.write_gate(gi, &values[gi]).map_err(e)?;
                if self.gates[gi].widths.is_some() {
                    blocked.insert(gi);
                }
                continue;
            }
            ratio = r;
            alive[gi] -= ks.len();
            zeroed += ks.len();
        }
        zeroed += self.align_gates()?;
        // budget zeros are final: APG must not revive them (earlier frozen
        // factors are 0 already, so the new mask covers them)
        self.lock().map_err(e)?;
        Ok(zeroed)
    }

    /// One value per factor of gate `gi`.
    fn factors(&self, gi: usize) -> Result<Vec<f32>> {
        let gv = &self.gates[gi];
        let a = super::model::to_ndarray(self.model.vars[&gv.name].as_tensor())?;
        Ok(a.iter().step_by(gv.span).copied().collect())
    }

    /// The budget's importance of each factor of gate `gi` (`f`: its
    /// values): Taylor per unit of cost, or |λ|.
    fn scores(&self, gi: usize, f: &[f32]) -> Result<Vec<f64>> {
        let gv = &self.gates[gi];
        if let (Rank::Taylor, Some(t)) = (self.cfg.rank, self.taylor.get(&gv.name)) {
            let t = super::model::to_ndarray(t)?;
            let t: Vec<f64> = t.iter().map(|&v| v as f64).collect();
            return Ok(t
                .chunks(gv.span)
                .map(|c| c.iter().sum::<f64>() / self.costs[gi].max(1.0))
                .collect());
        }
        Ok(f.iter().map(|v| v.abs() as f64).collect())
    }

    /// Zeroes, in every gate with allowed widths whose alive count (after
    /// APG's zeros) lies between two, its least important factors down to
    /// the narrower. Returns how many.
    fn align_gates(&mut self) -> Result<usize> {
        let e = |err: candle_core::Error| Error::during("aligning channel counts", err);
        let mut zeroed = 0;
        for gi in 0..self.gates.len() {
            let Some(w) = self.gates[gi].widths.clone() else {
                continue;
            };
            let mut f = self.factors(gi)?;
            let scores = self.scores(gi, &f)?;
            let mut order: Vec<usize> = (0..f.len()).filter(|&k| f[k] != 0.0).collect();
            let Some(keep) = super::widths::align_down(order.len(), &w) else {
                continue;
            };
            if keep == order.len() {
                continue;
            }
            order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
            for &k in &order[..order.len() - keep] {
                f[k] = 0.0;
            }
            zeroed += order.len() - keep;
            self.write_gate(gi, &f).map_err(e)?;
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

/// Step at which the zero pattern is due to lock (two-phase runs).
fn lock_step(cfg: &Config) -> Option<usize> {
    cfg.lock_at
        .map(|f| ((f * cfg.steps as f64).round() as usize).clamp(1, cfg.steps))
}

/// The weights' learning rate at `step`. Two-phase runs hold the base rate
/// until the lock and run the schedule over the fine-tuning phase, so what
/// was deleted is recovered from at a real rate; after every budget step
/// (`last_cut`) it warms up again over `LOCK_WARMUP` steps: an abrupt
/// deletion plus stale momentum made BN-less, folded nets diverge within a
/// few steps.
fn phase_lr(cfg: &Config, locked_at: Option<usize>, last_cut: Option<usize>, step: usize) -> f64 {
    let sched = &cfg.schedule;
    let lr = match (lock_step(cfg), locked_at) {
        (None, _) => sched.lr(step),
        (Some(_), None) if step < sched.warmup => sched.lr(step),
        (Some(_), None) => sched.base,
        (Some(_), Some(at)) => {
            let mut s = sched.clone();
            s.total = cfg.steps.saturating_sub(at).max(1);
            s.warmup = 0;
            s.lr(step.saturating_sub(at))
        }
    };
    match last_cut {
        Some(c) => lr * ((step + 1).saturating_sub(c) as f64 / LOCK_WARMUP as f64).min(1.0),
        None => lr,
    }
}

/// Whether budget step `cuts + 1` (of `budget_steps`) is due after `step`,
/// and the MAC fraction it aims at. The steps are spread evenly over the
/// first phase, the last at the lock, and the aims follow a cubic (most of
/// the cut early, while the net is most redundant; finer ones later), as
/// in gradual magnitude pruning (Zhu & Gupta 2017).
fn budget_aim(cfg: &Config, cuts: usize, step: usize) -> Option<f64> {
    let target = cfg.target_macs?;
    let lock = lock_step(cfg)?;
    let k_all = cfg.budget_steps.max(1);
    let k = cuts + 1;
    if k > k_all || step + 1 < (lock * k).div_ceil(k_all) {
        return None;
    }
    let frac = k as f64 / k_all as f64;
    Some(1.0 - (1.0 - target) * (1.0 - (1.0 - frac).powi(3)))
}

/// With a latency table, the widths each channel or group gate may be left
/// at: the timed widths of the conv it gates, by gate name.
fn gate_widths(
    g: &crate::graph::Graph,
    latency: Option<&LatencyTable>,
) -> Result<HashMap<String, Vec<usize>>> {
    let mut out = HashMap::new();
    let Some(table) = latency else {
        return Ok(out);
    };
    let p = plan::plan(g)?;
    for bp in &p.blocks {
        for (i, cg) in bp.convs.iter().enumerate() {
            let Some(cg) = cg else { continue };
            if let Some(w) = table.gate_widths(&bp.block.convs[i].conv) {
                out.insert(cg.gate.name.clone(), w.to_vec());
            }
        }
    }
    Ok(out)
}

/// What one factor of each gate stands for: the drop in predicted MACs (or
/// in the table's predicted latency, in nanoseconds) when the whole gate
/// is 0, per factor.
fn unit_costs(
    g: &crate::graph::Graph,
    gates: &[crate::gate::Gate],
    latency: Option<&LatencyTable>,
) -> Result<Vec<f64>> {
    let facts = shape::infer_strict(g, 1)?;
    let cost = |h: &crate::graph::Graph| -> Result<f64> {
        let p = plan::plan(h)?;
        Ok(match latency {
            Some(t) => t.predict_ms(&predict::conv_shapes(h, &p)) * 1e6,
            None => predict::predict(h, &facts, &p).macs as f64,
        })
    };
    let base = cost(g)?;
    let mut out = Vec::new();
    for gt in gates {
        let mut h = g.clone();
        gate::set_factors(&mut h, gt, &vec![0.0; gt.count])?;
        out.push(((base - cost(&h)?) / gt.count as f64).max(0.0));
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
        let x = prep.batch(ds, &idx)?;
        let e = |err: candle_core::Error| Error::during("evaluation", err);
        let t = Tensor::from_vec(
            x.iter().copied().collect::<Vec<f32>>(),
            x.shape(),
            &model.device,
        )
        .and_then(|t| t.to_dtype(model.dtype))
        .map_err(e)?;
        let y = model.infer(&t)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::schedule::Kind;

    fn cfg(lock_at: Option<f64>) -> Config {
        Config {
            steps: 100,
            batch: 8,
            schedule: Schedule {
                kind: Kind::Cosine,
                base: 0.1,
                total: 100,
                warmup: 0,
                factor: 0.1,
                step_every: 1,
                milestones: vec![],
            },
            momentum: 0.9,
            weight_decay: 0.0,
            gamma: 0.0,
            gate_lr: None,
            gate_optimizer: GateOptimizer::Apg,
            seed: 0,
            augment: Augment::NONE,
            log_every: 10,
            checkpoint_dir: None,
            checkpoint_every: 10,
            target_macs: Some(0.6),
            lock_at,
            rank: Rank::Taylor,
            budget_steps: 4,
            blocks_first: true,
            distill: 0.0,
            distill_temperature: 4.0,
            latency: None,
            selection: Selection::Budget,
        }
    }

    #[test]
    fn the_glide_path_reaches_the_target_at_its_fraction_of_the_run() {
        assert_eq!(steer_aim(0.5, 0, 100), 1.0);
        assert!((steer_aim(0.5, 30, 100) - 0.75).abs() < 1e-12);
        assert!((steer_aim(0.5, 60, 100) - 0.5).abs() < 1e-12);
        assert_eq!(steer_aim(0.5, 90, 100), 0.5);
    }

    #[test]
    fn single_phase_runs_follow_the_schedule() {
        let c = cfg(None);
        assert_eq!(phase_lr(&c, None, None, 0), 0.1);
        assert!((phase_lr(&c, None, None, 50) - 0.05).abs() < 1e-12);
        assert_eq!(budget_aim(&c, 0, 99), None);
    }

    #[test]
    fn two_phase_runs_hold_the_base_rate_then_restart_the_schedule() {
        let c = cfg(Some(0.4));
        assert_eq!(lock_step(&c), Some(40));
        // phase 1: constant (the cosine would be 0.0905 at step 30)
        assert_eq!(phase_lr(&c, None, None, 30), 0.1);
        // 5 steps after a budget step at 20: 6/20 of the rate
        assert!((phase_lr(&c, None, Some(20), 25) - 0.1 * 6.0 / 20.0).abs() < 1e-12);
        // fine-tuning: cosine over the 60 remaining steps, from the lock;
        // half-way (step 70) it is base/2, once the warm-up is over
        assert!((phase_lr(&c, Some(40), Some(40), 70) - 0.05).abs() < 1e-12);
        assert!(phase_lr(&c, Some(40), Some(40), 99) < 0.001);
    }

    #[test]
    fn budget_steps_are_spread_over_the_first_phase_with_cubic_aims() {
        let c = cfg(Some(0.4));
        // four steps at 10, 20, 30, 40 (1-based step counts)
        assert_eq!(budget_aim(&c, 0, 8), None);
        let a1 = budget_aim(&c, 0, 9).unwrap();
        // 1 − 0.4·(1 − 0.75³) = 0.76875
        assert!((a1 - 0.76875).abs() < 1e-12, "{a1}");
        assert_eq!(budget_aim(&c, 1, 18), None);
        let a2 = budget_aim(&c, 1, 19).unwrap();
        assert!((a2 - (1.0 - 0.4 * (1.0 - 0.125))).abs() < 1e-12);
        let a4 = budget_aim(&c, 3, 39).unwrap();
        assert!((a4 - 0.6).abs() < 1e-12);
        assert_eq!(budget_aim(&c, 4, 99), None);
        // without a target there is no budget
        let mut n = cfg(Some(0.4));
        n.target_macs = None;
        assert_eq!(budget_aim(&n, 0, 50), None);
    }
}
