//! The graph lowered to candle: every learned float initializer (conv and
//! fully connected weights and biases, BN scale and shift, SSS gates) is a
//! `Var`; BN running statistics are state that train-mode forward passes
//! update with the node's momentum. Shape arithmetic is not executed: its
//! values come from shape inference at the batch size in use. Each node is
//! computed by its op's lowering (`train::lower`); the nodes `fusion` finds
//! run as one kernel in train mode on the CPU.

pub(crate) mod convert;
pub(crate) mod fusion;
mod params;

use super::kernels::conv::Conv2d;
use super::lower::{self, fused, Cx};
use super::tape::{Recorder, Tape};
use crate::error::{Error, Result};
use crate::graph::shape::{self, Facts};
use crate::graph::{Graph, Node, Tensor as GTensor};
use candle_core::{CustomOp1, CustomOp2, CustomOp3, DType, Device, Tensor, Var};
use convert::to_candle;
pub use convert::to_ndarray;
use fusion::{add_relus, chains, silus, Chain, Consumers};
use indexmap::IndexMap;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

fn ce(node: &Node, e: candle_core::Error) -> Error {
    Error::Candle(e).at_node(node)
}

pub struct Model {
    pub graph: Graph,
    pub device: Device,
    pub dtype: DType,
    /// Learned tensors by initializer name.
    pub vars: IndexMap<String, Var>,
    /// BN running statistics.
    pub stats: HashMap<String, Tensor>,
    pub(crate) consts: HashMap<String, Tensor>,
    facts: RefCell<HashMap<usize, Rc<Facts>>>,
    input: String,
    output: String,
    /// Whether the CPU custom kernels run (on the CPU); false: candle's own
    /// ops, the path every other device (CUDA) takes.
    pub(crate) fused: bool,
    chains: HashMap<String, Chain>,
    add_relus: HashMap<String, String>,
    silus: HashMap<String, String>,
    /// The record of a `forward_taped` pass in progress.
    rec: RefCell<Option<Recorder>>,
    /// Replaces every BN node's momentum in train-mode forwards when set
    /// (the recalibration's running average).
    pub stat_momentum: Option<f64>,
}

/// An error naming the first node training cannot lower: an op without a
/// lowering (`train::lower`), or one the tool does not know. Nodes whose
/// outputs are all known constants (shape arithmetic) are not run.
pub fn check_lowerable(g: &Graph, facts: &Facts) -> Result<()> {
    use crate::graph::ops;
    for node in &g.nodes {
        let constant = node
            .outputs
            .iter()
            .all(|o| facts.get(o).is_some_and(|f| f.value.is_some()));
        if constant || (node.is_onnx() && lower::find(&node.op_type).is_some()) {
            continue;
        }
        let why = match ops::info(node) {
            Some(i) if i.shape_arithmetic => {
                "shape arithmetic; training needs it folded into constants"
            }
            Some(_) => "no training lowering",
            None => {
                return Err(Error::node(
                    node,
                    format!(
                        "op {} (domain `{}`) is unknown to sss-onnx and cannot be trained",
                        node.op_type, node.domain
                    ),
                ))
            }
        };
        return Err(Error::node(
            node,
            format!("op {} cannot be trained ({why}); the runtimes can evaluate it, but SSS needs gradients through every node", node.op_type),
        ));
    }
    Ok(())
}

/// Whether training can lower every node of `g` (checked before any work
/// by commands that train).
pub fn check_trainable(g: &Graph) -> Result<()> {
    check_lowerable(g, &shape::infer_strict(g, 1)?)
}

/// Running-statistics updates from a train-mode pass.
pub type StatUpdates = Vec<(String, Tensor)>;

impl Model {
    pub fn new(graph: &Graph, device: &Device) -> Result<Self> {
        Self::with_dtype(graph, device, DType::F32)
    }

    /// A model computing in `dtype` (f64 for gradient checks).
    pub fn with_dtype(graph: &Graph, device: &Device, dtype: DType) -> Result<Self> {
        let (learned, stats) = params::roles(graph);
        let mut vars = IndexMap::new();
        let mut st = HashMap::new();
        let mut consts = HashMap::new();
        for (name, t) in &graph.initializers {
            let Some(a) = t.as_f32() else { continue };
            let x = to_candle(a, device, dtype).map_err(|e| Error::tensor(name, e.to_string()))?;
            if learned.contains(name) {
                vars.insert(
                    name.clone(),
                    Var::from_tensor(&x).map_err(|e| Error::tensor(name, e.to_string()))?,
                );
            } else if stats.contains(name) {
                st.insert(name.clone(), x);
            } else {
                consts.insert(name.clone(), x);
            }
        }
        let input = graph
            .data_inputs()
            .next()
            .map(|v| v.name.clone())
            .ok_or_else(|| Error::Invalid("the model has no input".into()))?;
        let output = graph
            .outputs
            .first()
            .map(|v| v.name.clone())
            .ok_or_else(|| Error::Invalid("the model has no output".into()))?;
        let consumers = Consumers::new(graph);
        let m = Model {
            graph: graph.clone(),
            device: device.clone(),
            dtype,
            vars,
            stats: st,
            consts,
            facts: RefCell::new(HashMap::new()),
            input,
            output,
            fused: device.is_cpu(),
            chains: chains(graph, &consumers),
            add_relus: add_relus(graph, &consumers),
            silus: silus(graph, &consumers),
            stat_momentum: None,
            rec: RefCell::new(None),
        };
        m.facts(1)?; // every op must be lowerable: fail now, not mid-training
        Ok(m)
    }

    /// Lowers with candle's own ops even on the CPU: the code path a GPU
    /// runs, so it can be checked against the custom kernels without one.
    pub fn without_custom_kernels(mut self) -> Self {
        self.fused = false;
        self
    }

    fn facts(&self, batch: usize) -> Result<Rc<Facts>> {
        if let Some(f) = self.facts.borrow().get(&batch) {
            return Ok(f.clone());
        }
        // what is computed from a learned tensor (a class token expanded
        // to the batch) is never a constant, however small
        let f = Rc::new(shape::infer_strict_varying(&self.graph, batch, &|n| {
            self.vars.contains_key(n)
        })?);
        check_lowerable(&self.graph, &f)?;
        self.facts.borrow_mut().insert(batch, f.clone());
        Ok(f)
    }

    /// A train-mode forward pass for a training step: compute the loss from
    /// `tape.output()` and take the gradients with `tape.backward(&loss)`
    /// (the CPU kernels' own backward, `tape.rs`; candle's autograd on
    /// other devices).
    pub fn forward_taped(&self, x: &Tensor) -> Result<(Tape, StatUpdates)> {
        if !self.fused {
            let (y, updates) = self.forward(x, true)?;
            return Ok((Tape::candle(y), updates));
        }
        let mut rec = Recorder::default();
        rec.value(x, x.track_op());
        *self.rec.borrow_mut() = Some(rec);
        let r = self.forward(x, true);
        let rec = self.rec.borrow_mut().take();
        let (y, updates) = r?;
        let rec = rec.ok_or_else(|| Error::Graph("the tape was lost".into()))?;
        let params = self.vars.values().map(|v| v.as_tensor().clone()).collect();
        Ok((rec.finish(x, &y, params)?, updates))
    }

    /// Runs the model; in train mode BN uses batch statistics and the new
    /// running statistics are returned (apply them with `apply_stats`).
    /// The output carries candle's autograd graph (while `forward_taped`
    /// records, the kernels' own record instead).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<(Tensor, StatUpdates)> {
        let batch = x.dims().first().copied().unwrap_or(1);
        let facts = self.facts(batch)?;
        let mut env: HashMap<&str, Tensor> = HashMap::new();
        env.insert(self.input.as_str(), x.clone());
        let mut updates = Vec::new();
        let mut fused_away: HashSet<&str> = HashSet::new();
        for node in &self.graph.nodes {
            // shape arithmetic: every output already known as a constant
            if node
                .outputs
                .iter()
                .all(|o| facts.get(o).is_some_and(|f| f.value.is_some()))
            {
                continue;
            }
            // the gate or ReLU of a chain already computed with its BN
            if fused_away.contains(node.outputs[0].as_str()) {
                continue;
            }
            let (mark, stats) = (
                self.rec.borrow().as_ref().map(Recorder::mark),
                updates.len(),
            );
            let (name, y) = self.lower(node, &env, &facts, train, &mut updates, &mut fused_away)?;
            if let Some(mark) = mark {
                let inputs: Vec<&Tensor> =
                    self.node_inputs(node).filter_map(|n| env.get(n)).collect();
                let covered = self
                    .rec
                    .borrow()
                    .as_ref()
                    .is_some_and(|r| r.covers(mark, &inputs, &y));
                if !covered {
                    updates.truncate(stats);
                    let y = self.lower_locally(
                        node,
                        mark,
                        &env,
                        &facts,
                        &mut updates,
                        &mut fused_away,
                    )?;
                    env.insert(name, y);
                    continue;
                }
            }
            env.insert(name, y);
        }
        let y = env
            .remove(self.output.as_str())
            .ok_or_else(|| Error::Graph(format!("output `{}` was not computed", self.output)))?;
        Ok((y, updates))
    }
    /// One node (with the nodes fused into it): the name of the value it
    /// defines, and the value.
    fn lower<'a>(
        &'a self,
        node: &'a Node,
        env: &HashMap<&str, Tensor>,
        facts: &Facts,
        train: bool,
        updates: &mut StatUpdates,
        fused_away: &mut HashSet<&'a str>,
    ) -> Result<(&'a str, Tensor)> {
        let mut cx = Cx {
            model: self,
            node,
            env,
            facts,
            train,
            updates,
        };
        if train && self.fused {
            if let Some(chain) = self.chains.get(&node.outputs[0]) {
                if let Some(y) = fused::bn_chain(&mut cx, chain)? {
                    fused_away.insert(chain.out.as_str());
                    fused_away.extend(chain.inner.iter().map(String::as_str));
                    return Ok((chain.out.as_str(), y));
                }
            }
            if let Some(mul_out) = self.silus.get(&node.outputs[0]) {
                let y = fused::silu(&mut cx)?;
                fused_away.insert(mul_out.as_str());
                return Ok((mul_out.as_str(), y));
            }
            if let Some(relu_out) = self.add_relus.get(&node.outputs[0]) {
                if let Some(y) = fused::add_relu(&mut cx)? {
                    fused_away.insert(relu_out.as_str());
                    return Ok((relu_out.as_str(), y));
                }
            }
        }
        let out = run_lowering(&mut cx).map_err(|e| e.at_node(node))?;
        Ok((node.outputs[0].as_str(), out))
    }

    /// The names a node (with a fused chain's gate) reads.
    fn node_inputs<'a>(&'a self, node: &'a Node) -> impl Iterator<Item = &'a str> {
        let gate = self
            .chains
            .get(&node.outputs[0])
            .and_then(|c| c.gate.as_deref());
        node.inputs
            .iter()
            .map(String::as_str)
            .filter(|n| !n.is_empty())
            .chain(gate)
    }

    /// A node the tape has no kernel for, run with candle's own autograd
    /// on leaf copies of its activation inputs (`Recorder::local`).
    fn lower_locally<'a>(
        &'a self,
        node: &'a Node,
        mark: usize,
        env: &HashMap<&str, Tensor>,
        facts: &Facts,
        updates: &mut StatUpdates,
        fused_away: &mut HashSet<&'a str>,
    ) -> Result<Tensor> {
        let Some(mut rec) = self.rec.borrow_mut().take() else {
            return Err(Error::Graph("no tape is being recorded".into()));
        };
        rec.truncate(mark);
        let mut local = env.clone();
        let mut leaves = Vec::new();
        for name in self.node_inputs(node) {
            if let Some(t) = env.get(name) {
                if rec.needs(t) {
                    let leaf = Var::from_tensor(t).map_err(|e| ce(node, e))?;
                    local.insert(name, leaf.as_tensor().clone());
                    leaves.push((t.clone(), leaf.as_tensor().clone()));
                }
            } else if let Some(v) = self.vars.get(name) {
                leaves.push((v.as_tensor().clone(), v.as_tensor().clone()));
            }
        }
        let r = self.lower(node, &local, facts, true, updates, fused_away);
        let y = r.map(|(_, y)| rec.local(leaves, &y));
        *self.rec.borrow_mut() = Some(rec);
        y
    }

    /// Applies a CPU kernel, recorded when a tape is being made.
    pub(crate) fn op1<O>(&self, x: &Tensor, op: O) -> candle_core::Result<Tensor>
    where
        O: CustomOp1 + Send + Sync + 'static,
    {
        match self.rec.borrow_mut().as_mut() {
            Some(r) => r.apply1(x, op),
            None => x.apply_op1(op),
        }
    }

    pub(crate) fn op2<O>(&self, a: &Tensor, b: &Tensor, op: O) -> candle_core::Result<Tensor>
    where
        O: CustomOp2 + Send + Sync + 'static,
    {
        match self.rec.borrow_mut().as_mut() {
            Some(r) => r.apply2(a, b, op),
            None => a.apply_op2(b, op),
        }
    }

    pub(crate) fn op3<O>(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        op: O,
    ) -> candle_core::Result<Tensor>
    where
        O: CustomOp3 + Send + Sync + 'static,
    {
        match self.rec.borrow_mut().as_mut() {
            Some(r) => r.apply3(a, b, c, op),
            None => a.apply_op3(b, c, op),
        }
    }

    /// The conv kernel, recorded by hand on a tape (its candle backward
    /// decides the input gradient from `track_op`, which the tape's
    /// detached activations never have).
    pub(crate) fn conv_op(
        &self,
        x: &Tensor,
        w: &Tensor,
        op: Conv2d,
    ) -> candle_core::Result<Tensor> {
        match self.rec.borrow_mut().as_mut() {
            Some(r) => r.conv(x, w, op),
            None => x.apply_op2(w, op),
        }
    }

    /// Eval mode for scoring (evaluation, a distillation teacher): nothing
    /// is recorded for gradients (the weights enter detached) and every
    /// value is dropped after its last use, so memory stays near the
    /// largest few activations of the batch instead of all of them.
    pub fn infer(&self, x: &Tensor) -> Result<Tensor> {
        let batch = x.dims().first().copied().unwrap_or(1);
        let facts = self.facts(batch)?;
        let mut last_use: HashMap<&str, usize> = HashMap::new();
        for (i, node) in self.graph.nodes.iter().enumerate() {
            for name in &node.inputs {
                last_use.insert(name.as_str(), i);
            }
        }
        let mut env: HashMap<&str, Tensor> = self
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_tensor().detach()))
            .collect();
        env.insert(self.input.as_str(), x.detach());
        let mut updates = Vec::new();
        for (i, node) in self.graph.nodes.iter().enumerate() {
            if node
                .outputs
                .iter()
                .all(|o| facts.get(o).is_some_and(|f| f.value.is_some()))
            {
                continue;
            }
            let mut cx = Cx {
                model: self,
                node,
                env: &env,
                facts: &facts,
                train: false,
                updates: &mut updates,
            };
            let out = run_lowering(&mut cx).map_err(|e| e.at_node(node))?;
            env.insert(node.outputs[0].as_str(), out);
            for name in &node.inputs {
                let done = last_use.get(name.as_str()) == Some(&i);
                if done && *name != self.output && !self.vars.contains_key(name) {
                    env.remove(name.as_str());
                }
            }
        }
        env.remove(self.output.as_str())
            .ok_or_else(|| Error::Graph(format!("output `{}` was not computed", self.output)))
    }

    pub fn apply_stats(&mut self, updates: StatUpdates) {
        for (k, v) in updates {
            self.stats.insert(k, v);
        }
    }
    /// Writes learned tensors and BN statistics back into the graph.
    pub fn write_back(&self) -> Result<Graph> {
        let mut g = self.graph.clone();
        for (name, v) in &self.vars {
            g.initializers
                .insert(name.clone(), GTensor::F32(to_ndarray(v.as_tensor())?));
        }
        for (name, t) in &self.stats {
            g.initializers
                .insert(name.clone(), GTensor::F32(to_ndarray(t)?));
        }
        Ok(g)
    }

    pub fn input_name(&self) -> &str {
        &self.input
    }
}

/// The node computed by its op's lowering.
fn run_lowering(cx: &mut Cx) -> Result<Tensor> {
    match lower::find(&cx.node.op_type).filter(|_| cx.node.is_onnx()) {
        Some(l) => (l.run)(cx),
        None => Err(cx.err(format!("op {} cannot be trained", cx.node.op_type))),
    }
}
