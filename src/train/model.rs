//! The graph lowered to candle: every learned float initializer (conv and
//! fully connected weights and biases, BN scale and shift, SSS gates) is a
//! `Var`; BN running statistics are state that train-mode forward passes
//! update with the node's momentum. Shape arithmetic is not executed: its
//! values come from shape inference at the batch size in use.

use super::kernels::batchnorm::{BatchNormTrain, ChannelStats};
use super::kernels::bn_chain::{BnChain, Norm};
use super::kernels::channel::{AddRelu, ChannelBias, ChannelScale, Relu};
use super::kernels::maxpool::{max_pool_generic, MaxPool};
use super::kernels::slice::StridedSlice;
use super::kernels::{conv::Conv2d, Geometry};
use super::tape::{Recorder, Tape};
use crate::error::{Error, Result};
use crate::gate::GATE_PREFIX;
use crate::graph::ops::conv::Window;
use crate::graph::ops::{reduce, shape_ops};
use crate::graph::shape::{self, node_ctx, Facts};
use crate::graph::{Graph, Node, Tensor as GTensor};
use candle_core::{CustomOp1, CustomOp2, CustomOp3, DType, Device, Tensor, Var, D};
use indexmap::IndexMap;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

fn ce(node: &Node, e: candle_core::Error) -> Error {
    Error::Candle(e).at_node(node)
}

fn to_candle(a: &ndarray::ArrayD<f32>, dev: &Device, dtype: DType) -> candle_core::Result<Tensor> {
    let v: Vec<f32> = a.iter().copied().collect();
    Tensor::from_vec(v, a.shape(), dev)?.to_dtype(dtype)
}

pub fn to_ndarray(t: &Tensor) -> Result<ndarray::ArrayD<f32>> {
    let shape = t.dims().to_vec();
    let v = t
        .flatten_all()
        .and_then(|f| f.to_dtype(DType::F32))
        .and_then(|f| f.to_vec1::<f32>())?;
    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), v)
        .map_err(|e| Error::Invalid(e.to_string()))
}

/// Which initializers are learned and which are BN statistics.
fn roles(g: &Graph) -> (HashSet<String>, HashSet<String>) {
    let (mut learned, mut stats) = (HashSet::new(), HashSet::new());
    for n in &g.nodes {
        let learned_at: &[usize] = match n.op_type.as_str() {
            "Conv" | "Gemm" => &[1, 2],
            "BatchNormalization" => &[1, 2],
            "MatMul" => &[0, 1],
            _ => &[],
        };
        for (i, name) in n.inputs.iter().enumerate() {
            let is_float = matches!(g.initializers.get(name), Some(GTensor::F32(_)));
            if !is_float {
                continue;
            }
            if learned_at.contains(&i) || name.starts_with(GATE_PREFIX) {
                learned.insert(name.clone());
            } else if n.op_type == "BatchNormalization" && (i == 3 || i == 4) {
                stats.insert(name.clone());
            }
        }
    }
    (learned, stats)
}

/// A BN (or a conv with a bias) whose output feeds only a gate `Mul` (by an
/// initializer), a ReLU, or a gate then a ReLU, none of them a graph output:
/// train mode on the CPU runs them as one kernel (`BnChain`; the conv itself
/// runs without its bias).
#[derive(Debug, Clone)]
struct Chain {
    /// The gate operand's name.
    gate: Option<String>,
    relu: bool,
    /// The output of the chain's last node: where the fused result goes.
    out: String,
    /// Outputs of the chain's other nodes (never computed).
    inner: Vec<String>,
}

/// Each value's consumers, to find nodes whose output feeds exactly one
/// other node (and is not a graph output): the fusable pairs.
struct Consumers<'g> {
    of: HashMap<&'g str, Vec<&'g Node>>,
    graph_outputs: HashSet<&'g str>,
}

impl<'g> Consumers<'g> {
    fn new(g: &'g Graph) -> Self {
        let mut of: HashMap<&str, Vec<&Node>> = HashMap::new();
        for n in &g.nodes {
            for i in n.inputs.iter().filter(|i| !i.is_empty()) {
                of.entry(i.as_str()).or_default().push(n);
            }
        }
        let graph_outputs = g.outputs.iter().map(|v| v.name.as_str()).collect();
        Consumers { of, graph_outputs }
    }

    /// The one node reading `name`, if exactly one does and it is not a
    /// graph output.
    fn sole(&self, name: &str) -> Option<&'g Node> {
        match self.of.get(name) {
            Some(v) if v.len() == 1 && !self.graph_outputs.contains(name) => Some(v[0]),
            _ => None,
        }
    }
}

/// The fusable chains, by the BN node's output name.
fn chains(g: &Graph, consumers: &Consumers) -> HashMap<String, Chain> {
    let sole = |name: &str| consumers.sole(name);
    let mut found = HashMap::new();
    let heads = g.nodes.iter().filter(|n| {
        n.op_type == "BatchNormalization"
            || (n.op_type == "Conv" && n.inputs.get(2).is_some_and(|b| !b.is_empty()))
    });
    for head in heads {
        let Some(start) = head.outputs.first() else {
            continue;
        };
        let (mut out, mut gate, mut relu) = (start.clone(), None, false);
        let mut inner = Vec::new();
        if let Some(m) = sole(&out).filter(|m| m.op_type == "Mul" && m.inputs.len() == 2) {
            let other = if m.inputs[0] == out {
                &m.inputs[1]
            } else {
                &m.inputs[0]
            };
            if g.initializers.contains_key(other) && other != &out {
                gate = Some(other.clone());
                out = m.outputs[0].clone();
                inner.push(out.clone());
            }
        }
        if let Some(r) = sole(&out).filter(|r| r.op_type == "Relu") {
            relu = true;
            out = r.outputs[0].clone();
            inner.push(out.clone());
        }
        if gate.is_some() || relu {
            inner.pop(); // the last is `out`
            found.insert(
                start.clone(),
                Chain {
                    gate,
                    relu,
                    out,
                    inner,
                },
            );
        }
    }
    found
}

/// Residual sums `Add(a, b)` whose only consumer is a ReLU (not a graph
/// output): add output → ReLU output. Train mode on the CPU runs each pair
/// as one `AddRelu`.
fn add_relus(g: &Graph, consumers: &Consumers) -> HashMap<String, String> {
    g.nodes
        .iter()
        .filter(|a| a.op_type == "Add" && a.inputs.len() == 2)
        .filter_map(|a| {
            let x = a.outputs.first()?;
            let r = consumers.sole(x).filter(|r| r.op_type == "Relu")?;
            Some((x.clone(), r.outputs.first()?.clone()))
        })
        .collect()
}

pub struct Model {
    pub graph: Graph,
    pub device: Device,
    pub dtype: DType,
    /// Learned tensors by initializer name.
    pub vars: IndexMap<String, Var>,
    /// BN running statistics.
    pub stats: HashMap<String, Tensor>,
    consts: HashMap<String, Tensor>,
    facts: RefCell<HashMap<usize, Rc<Facts>>>,
    input: String,
    output: String,
    /// Whether the CPU custom kernels run (on the CPU); false: candle's own
    /// ops, the path every other device (CUDA) takes.
    fused: bool,
    chains: HashMap<String, Chain>,
    add_relus: HashMap<String, String>,
    /// The record of a `forward_taped` pass in progress.
    rec: RefCell<Option<Recorder>>,
    /// Replaces every BN node's momentum in train-mode forwards when set
    /// (the recalibration's running average).
    pub stat_momentum: Option<f64>,
}

/// An error naming the first node training cannot lower: an op the
/// registry marks inference-only, or one it does not know. Nodes whose
/// outputs are all known constants (shape arithmetic) are not run.
pub fn check_lowerable(g: &Graph, facts: &Facts) -> Result<()> {
    use crate::graph::ops::{self, Training};
    for node in &g.nodes {
        let constant = node
            .outputs
            .iter()
            .all(|o| facts.get(o).is_some_and(|f| f.value.is_some()));
        if constant {
            continue;
        }
        match ops::info(node).map(|i| i.training) {
            Some(Training::Lowered) => {}
            Some(Training::InferenceOnly(why)) => {
                return Err(Error::node(
                    node,
                    format!("op {} cannot be trained ({why}); the runtimes can evaluate it, but SSS needs gradients through every node", node.op_type),
                ))
            }
            None => {
                return Err(Error::node(
                    node,
                    format!("op {} (domain `{}`) is unknown to sss-onnx and cannot be trained", node.op_type, node.domain),
                ))
            }
        }
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
        let (learned, stats) = roles(graph);
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
        let f = Rc::new(shape::infer_strict(&self.graph, batch)?);
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
        if train && self.fused {
            if let Some(chain) = self.chains.get(&node.outputs[0]) {
                if let Some(y) = self.bn_chain(node, chain, env, facts, updates)? {
                    fused_away.insert(chain.out.as_str());
                    fused_away.extend(chain.inner.iter().map(String::as_str));
                    return Ok((chain.out.as_str(), y));
                }
            }
        }
        if let (true, Some(relu_out)) = (train && self.fused, self.add_relus.get(&node.outputs[0]))
        {
            let (a, b) = (
                self.value(&node.inputs[0], env, facts, node)?,
                self.value(&node.inputs[1], env, facts, node)?,
            );
            if a.dims() == b.dims() {
                let y = a
                    .contiguous()
                    .and_then(|a| self.op2(&a, &b.contiguous()?, AddRelu))
                    .map_err(|err| ce(node, err))?;
                fused_away.insert(relu_out.as_str());
                return Ok((relu_out.as_str(), y));
            }
        }
        let out = self
            .eval(node, env, facts, train, updates)
            .map_err(|e| e.at_node(node))?;
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
    fn op1<O>(&self, x: &Tensor, op: O) -> candle_core::Result<Tensor>
    where
        O: CustomOp1 + Send + Sync + 'static,
    {
        match self.rec.borrow_mut().as_mut() {
            Some(r) => r.apply1(x, op),
            None => x.apply_op1(op),
        }
    }

    fn op2<O>(&self, a: &Tensor, b: &Tensor, op: O) -> candle_core::Result<Tensor>
    where
        O: CustomOp2 + Send + Sync + 'static,
    {
        match self.rec.borrow_mut().as_mut() {
            Some(r) => r.apply2(a, b, op),
            None => a.apply_op2(b, op),
        }
    }

    fn op3<O>(&self, a: &Tensor, b: &Tensor, c: &Tensor, op: O) -> candle_core::Result<Tensor>
    where
        O: CustomOp3 + Send + Sync + 'static,
    {
        match self.rec.borrow_mut().as_mut() {
            Some(r) => r.apply3(a, b, c, op),
            None => a.apply_op3(b, c, op),
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
            let out = self
                .eval(node, &env, &facts, false, &mut updates)
                .map_err(|e| e.at_node(node))?;
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

    fn value(
        &self,
        name: &str,
        env: &HashMap<&str, Tensor>,
        facts: &Facts,
        node: &Node,
    ) -> Result<Tensor> {
        if let Some(t) = env.get(name) {
            return Ok(t.clone());
        }
        if let Some(v) = self.vars.get(name) {
            return Ok(v.as_tensor().clone());
        }
        if let Some(t) = self.stats.get(name).or_else(|| self.consts.get(name)) {
            return Ok(t.clone());
        }
        let known = facts
            .get(name)
            .and_then(|f| f.value.as_ref())
            .and_then(|v| v.to_f32());
        match known {
            Some(a) => to_candle(&a, &self.device, self.dtype).map_err(|e| ce(node, e)),
            None => Err(Error::node(node, format!("input `{name}` has no value"))),
        }
    }

    fn eval(
        &self,
        node: &Node,
        env: &HashMap<&str, Tensor>,
        facts: &Facts,
        train: bool,
        updates: &mut StatUpdates,
    ) -> Result<Tensor> {
        let input = |i: usize| -> Result<Tensor> {
            let name = node
                .input(i)
                .ok_or_else(|| Error::node(node, format!("input {i} missing")))?;
            self.value(name, env, facts, node)
        };
        let out_shape = || -> Result<Vec<usize>> {
            facts
                .shape(&node.outputs[0])
                .map(|s| s.to_vec())
                .ok_or_else(|| Error::node(node, "output shape unknown"))
        };
        let y = match node.op_type.as_str() {
            "Conv" => self.conv(
                node,
                &input(0)?,
                &input(1)?,
                node.input(2).map(|_| input(2)).transpose()?,
                facts,
            )?,
            "BatchNormalization" => self.batch_norm(
                node,
                &input(0)?,
                [input(1)?, input(2)?, input(3)?, input(4)?],
                train,
                updates,
            )?,
            "Relu" if self.fused => input(0)?.contiguous().and_then(|x| self.op1(&x, Relu))?,
            "Relu" => input(0)?.relu()?,
            "Clip" => {
                let bound = |i: usize, d: f32| -> Result<f32> {
                    match node.input(i) {
                        Some(_) => Ok(input(i)?
                            .flatten_all()
                            .and_then(|t| t.to_dtype(DType::F32))
                            .and_then(|t| t.to_vec1::<f32>())?[0]),
                        None => node.attr_float_or(if i == 1 { "min" } else { "max" }, d),
                    }
                };
                input(0)?.clamp(bound(1, f32::MIN)?, bound(2, f32::MAX)?)?
            }
            "LeakyRelu" => {
                let a = node.attr_float_or("alpha", 0.01)? as f64;
                let x = input(0)?;
                (x.relu()? - (x.neg()?.relu()? * a)?)?
            }
            "Identity" | "Dropout" => input(0)?,
            "Add" | "Sum" => {
                let mut acc = input(0)?;
                for i in 1..node.inputs.len() {
                    acc = acc.broadcast_add(&input(i)?)?;
                }
                acc
            }
            "Sub" => input(0)?.broadcast_sub(&input(1)?)?,
            "Mul" => {
                let (a, b) = (input(0)?, input(1)?);
                match channel_operand(&a, &b) {
                    Some((x, s)) if self.fused => {
                        let s = s.flatten_all()?;
                        x.contiguous()
                            .and_then(|x| self.op2(&x, &s, ChannelScale))?
                    }
                    _ => a.broadcast_mul(&b)?,
                }
            }
            "Div" => input(0)?.broadcast_div(&input(1)?)?,
            "MaxPool" => {
                let x = input(0)?;
                let cx = node_ctx(&self.graph, facts, node);
                let xs = x.dims().to_vec();
                let k: Vec<usize> = node
                    .attr_ints("kernel_shape")?
                    .unwrap_or(&[])
                    .iter()
                    .map(|&v| v as usize)
                    .collect();
                let (w, _) =
                    Window::from_node(&cx, k, &xs[2..], node.attr_int_or("ceil_mode", 0)? != 0)?;
                let os = out_shape()?;
                let mut geo = geometry(&xs, &w)?;
                geo.oh = os[2];
                geo.ow = os[3];
                if self.fused {
                    x.contiguous().and_then(|x| self.op1(&x, MaxPool(geo)))?
                } else {
                    // candle's max_pool2d has the wrong gradient
                    max_pool_generic(&x, &geo)?
                }
            }
            "AveragePool" => {
                let x = input(0)?;
                let k: Vec<usize> = node
                    .attr_ints("kernel_shape")?
                    .unwrap_or(&[])
                    .iter()
                    .map(|&v| v as usize)
                    .collect();
                let s: Vec<usize> = node
                    .attr_ints("strides")?
                    .map(|s| s.iter().map(|&v| v as usize).collect())
                    .unwrap_or(k.clone());
                let no_pad = node
                    .attr_ints("pads")?
                    .is_none_or(|p| p.iter().all(|&v| v == 0));
                if k.len() != 2 || k != s || !no_pad {
                    return Err(Error::node(
                        node,
                        "training supports AveragePool only with kernel = stride and no padding",
                    ));
                }
                x.avg_pool2d((k[0], k[1]))?
            }
            "GlobalAveragePool" => input(0)?
                .mean_keepdim(D::Minus1)
                .and_then(|t| t.mean_keepdim(D::Minus2))?,
            "ReduceMean" => {
                let x = input(0)?;
                let cx = node_ctx(&self.graph, facts, node);
                let axes = reduce::axes(&cx, x.rank())?;
                let mut t = x;
                for &a in axes.iter().rev() {
                    t = t.mean_keepdim(a)?;
                }
                t.reshape(out_shape()?)?
            }
            "Flatten" | "Reshape" | "Squeeze" | "Unsqueeze" => input(0)?.reshape(out_shape()?)?,
            "Transpose" => {
                let perm: Vec<usize> = match node.attr_ints("perm")? {
                    Some(p) => p.iter().map(|&v| v as usize).collect(),
                    None => (0..input(0)?.rank()).rev().collect(),
                };
                input(0)?.permute(perm)?
            }
            "Concat" => {
                let xs: Vec<Tensor> = (0..node.inputs.len()).map(&input).collect::<Result<_>>()?;
                let r = xs[0].rank() as i64;
                let a = node.attr_int_or("axis", 0)?;
                Tensor::cat(&xs, if a < 0 { (a + r) as usize } else { a as usize })?
            }
            "Gemm" => {
                let (mut a, mut b) = (input(0)?, input(1)?);
                if node.attr_int_or("transA", 0)? != 0 {
                    a = a.t()?;
                }
                if node.attr_int_or("transB", 0)? != 0 {
                    b = b.t()?;
                }
                let alpha = node.attr_float_or("alpha", 1.0)? as f64;
                let beta = node.attr_float_or("beta", 1.0)? as f64;
                let mut y = (a.matmul(&b)? * alpha)?;
                if node.input(2).is_some() {
                    y = y.broadcast_add(&(input(2)? * beta)?)?;
                }
                y
            }
            "MatMul" => input(0)?.broadcast_matmul(&input(1)?)?,
            "Slice" => {
                let x = input(0)?;
                let cx = node_ctx(&self.graph, facts, node);
                let plan = shape_ops::slice_plan(&cx, x.dims())?;
                let strided = plan.iter().any(|&(_, step, _)| step != 1);
                let one_op = (self.fused && strided)
                    .then(|| StridedSlice::new(x.dims(), &plan))
                    .flatten();
                if let Some(op) = one_op {
                    return Ok(x.contiguous().and_then(|x| self.op1(&x, op))?);
                }
                let mut t = x.clone();
                for (axis, &(start, step, len)) in plan.iter().enumerate() {
                    if step == 1 && start == 0 && len == x.dims()[axis] {
                        continue;
                    }
                    if step == 1 {
                        t = t.narrow(axis, start as usize, len)?;
                    } else {
                        let idx: Vec<u32> =
                            (0..len).map(|i| (start + i as i64 * step) as u32).collect();
                        let idx = Tensor::new(idx.as_slice(), &self.device)?;
                        t = t.index_select(&idx, axis)?;
                    }
                }
                t
            }
            "Pad" => {
                let x = input(0)?;
                let cx = node_ctx(&self.graph, facts, node);
                let mode = node
                    .attr_string("mode")?
                    .unwrap_or_else(|| "constant".into());
                let value = match node.input(2) {
                    Some(_) => input(2)?
                        .flatten_all()
                        .and_then(|t| t.to_dtype(DType::F32))
                        .and_then(|t| t.to_vec1::<f32>())?
                        .first()
                        .copied()
                        .unwrap_or(0.0),
                    None => 0.0,
                };
                if mode != "constant" || value != 0.0 {
                    return Err(Error::node(
                        node,
                        "training supports only zero constant padding",
                    ));
                }
                let r = x.rank();
                let pads = shape_ops::pads(&cx, r)?;
                let mut t = x;
                for a in 0..r {
                    let (b, en) = (pads[a], pads[a + r]);
                    if b < 0 || en < 0 {
                        return Err(Error::node(
                            node,
                            "negative pads are not supported in training",
                        ));
                    }
                    if b > 0 || en > 0 {
                        t = t.pad_with_zeros(a, b as usize, en as usize)?;
                    }
                }
                t
            }
            other => return Err(Error::node(node, format!("op {other} cannot be trained"))),
        };
        Ok(y)
    }

    fn conv(
        &self,
        node: &Node,
        x: &Tensor,
        w: &Tensor,
        b: Option<Tensor>,
        facts: &Facts,
    ) -> Result<Tensor> {
        let xs = x.dims().to_vec();
        let ws = w.dims().to_vec();
        if xs.len() != 4 {
            return Err(Error::node(
                node,
                format!("training supports 2-D convolutions (input {xs:?})"),
            ));
        }
        let groups = crate::graph::ops::conv::groups(node)?;
        let cx = node_ctx(&self.graph, facts, node);
        let (win, _) = Window::from_node(&cx, ws[2..].to_vec(), &xs[2..], false)?;
        let geo = geometry(&xs, &win)?;
        let cout = ws[0];
        let y = if self.fused {
            let op = Conv2d {
                g: geo,
                groups,
                cout,
            };
            let (x, w) = (x.contiguous()?, w.contiguous()?);
            match self.rec.borrow_mut().as_mut() {
                Some(r) => r.conv(&x, &w, op)?,
                None => x.apply_op2(&w, op)?,
            }
        } else {
            let sym = win.pads[0] == win.pads[2]
                && win.pads[1] == win.pads[3]
                && win.pads[0] == win.pads[1];
            let xp = if sym {
                x.clone()
            } else {
                x.pad_with_zeros(2, win.pads[0], win.pads[2])
                    .and_then(|t| t.pad_with_zeros(3, win.pads[1], win.pads[3]))?
            };
            let p = if sym { win.pads[0] } else { 0 };
            if win.strides[0] != win.strides[1] || win.dilations[0] != win.dilations[1] {
                return Err(Error::node(
                    node,
                    "non-square strides/dilations need the CPU path",
                ));
            }
            xp.conv2d(w, p, win.strides[0], win.dilations[0], groups)?
        };
        match b {
            Some(b) if self.fused => Ok(self.op2(&y, &b.flatten_all()?, ChannelBias)?),
            Some(b) => Ok(y.broadcast_add(&b.reshape((1, cout, 1, 1))?)?),
            None => Ok(y),
        }
    }

    /// Train-mode BN (or a conv's bias) with its gate and ReLU as one
    /// kernel; None when the gate's shape is not per-channel or scalar (then
    /// the nodes run apart).
    fn bn_chain(
        &self,
        node: &Node,
        chain: &Chain,
        env: &HashMap<&str, Tensor>,
        facts: &Facts,
        updates: &mut StatUpdates,
    ) -> Result<Option<Tensor>> {
        let input = |i: usize| -> Result<Tensor> {
            let name = node
                .input(i)
                .ok_or_else(|| Error::node(node, format!("input {i} missing")))?;
            self.value(name, env, facts, node)
        };
        let gate = match &chain.gate {
            Some(name) => {
                let g = self.value(name, env, facts, node)?;
                let fits = facts
                    .shape(&node.outputs[0])
                    .is_some_and(|xd| scales_channels(xd, g.dims()));
                if !fits {
                    return Ok(None);
                }
                g.flatten_all()?
            }
            None => Tensor::ones(1, self.dtype, &self.device)?,
        };
        let relu = chain.relu;
        if node.op_type == "Conv" {
            // the conv without its bias; the bias is the chain's shift
            let x = self.conv(node, &input(0)?, &input(1)?, None, facts)?;
            let b = input(2)?;
            let p = b.reshape((1, b.elem_count()))?;
            let op = BnChain {
                norm: Norm::Bias,
                relu,
            };
            return Ok(self.op3(&x, &p, &gate, op).map(Some)?);
        }
        let x = input(0)?;
        let eps = node.attr_float_or("epsilon", 1e-5)? as f64;
        let params = [input(1)?, input(2)?, input(3)?, input(4)?];
        let packed = self.batch_statistics(node, &x, &params, updates)?;
        let op = BnChain {
            norm: Norm::Batch { eps },
            relu,
        };
        Ok(x.contiguous()
            .and_then(|x| self.op3(&x, &packed, &gate, op))
            .map(Some)?)
    }

    /// Train-mode BN's batch statistics, computed once: queued as running
    /// statistic updates, and returned packed with scale and bias as the
    /// [4, C] operand of the fused BN kernels. `p`: scale, bias, running
    /// mean, running variance.
    fn batch_statistics(
        &self,
        node: &Node,
        x: &Tensor,
        p: &[Tensor; 4],
        updates: &mut StatUpdates,
    ) -> Result<Tensor> {
        let c = p[0].elem_count();
        let st = x
            .contiguous()
            .and_then(|x| x.apply_op1_no_bwd(&ChannelStats))?;
        let (bm, bv) = (st.get(0)?, st.get(1)?);
        let shape = (1, c, 1, 1);
        let (mean, var) = (p[2].reshape(shape)?, p[3].reshape(shape)?);
        self.running_update(node, &bm, &bv, x.elem_count() / c, &mean, &var, updates)?;
        let flat = |t: &Tensor| t.flatten_all();
        Ok(Tensor::stack(&[flat(&p[0])?, flat(&p[1])?, bm, bv], 0)?)
    }

    fn batch_norm(
        &self,
        node: &Node,
        x: &Tensor,
        p: [Tensor; 4],
        train: bool,
        updates: &mut StatUpdates,
    ) -> Result<Tensor> {
        let eps = node.attr_float_or("epsilon", 1e-5)? as f64;
        if train && self.fused {
            // fused kernels: statistics for the running averages, then the
            // normalisation with its closed-form backward
            let packed = self.batch_statistics(node, x, &p, updates)?;
            return Ok(x
                .contiguous()
                .and_then(|x| self.op2(&x, &packed, BatchNormTrain { eps }))?);
        }
        let c = p[0].dims()[0];
        let shape = (1, c, 1, 1);
        let [scale, bias, mean, var] = p.map(|t| t.reshape(shape));
        let (scale, bias, mean, var) = (scale?, bias?, mean?, var?);
        let (m, v) = if train {
            let m = x.mean_keepdim((0, 2, 3))?;
            let xc = x.broadcast_sub(&m)?;
            let v = xc.sqr().and_then(|t| t.mean_keepdim((0, 2, 3)))?;
            self.running_update(
                node,
                &m.flatten_all()?,
                &v.flatten_all()?,
                x.elem_count() / c,
                &mean,
                &var,
                updates,
            )?;
            (m, v)
        } else {
            (mean, var)
        };
        let inv = (v + eps).and_then(|t| t.sqrt()).and_then(|t| t.recip())?;
        let k = scale.broadcast_mul(&inv)?;
        let shift = bias.broadcast_sub(&m.broadcast_mul(&k)?)?;
        Ok(x.broadcast_mul(&k).and_then(|t| t.broadcast_add(&shift))?)
    }

    /// New running statistics: the node's momentum, unbiased variance.
    #[allow(clippy::too_many_arguments)]
    fn running_update(
        &self,
        node: &Node,
        bm: &Tensor,
        bv: &Tensor,
        count: usize,
        mean: &Tensor,
        var: &Tensor,
        updates: &mut StatUpdates,
    ) -> Result<()> {
        let momentum = match self.stat_momentum {
            Some(m) => m,
            None => node.attr_float_or("momentum", 0.9)? as f64,
        };
        let count = count as f64;
        let unbiased = (bv.detach() * (count / (count - 1.0).max(1.0)))?;
        let old_m = mean.flatten_all()?;
        let old_v = var.flatten_all()?;
        let new_mean = ((old_m * momentum)? + (bm.detach() * (1.0 - momentum))?)?;
        let new_var = ((old_v * momentum)? + (unbiased * (1.0 - momentum))?)?;
        if let (Some(mn), Some(vn)) = (node.input(3), node.input(4)) {
            updates.push((mn.to_string(), new_mean));
            updates.push((vn.to_string(), new_var));
        }
        Ok(())
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

/// For `a · b`: the [N, C, ...] operand and the per-channel ([1, C, 1, 1],
/// [C, 1, 1]) or scalar one, when the product has that form.
fn channel_operand(a: &Tensor, b: &Tensor) -> Option<(Tensor, Tensor)> {
    let fits = |x: &Tensor, s: &Tensor| s.elem_count() > 0 && scales_channels(x.dims(), s.dims());
    if fits(a, b) && a.elem_count() >= b.elem_count() {
        Some((a.clone(), b.clone()))
    } else if fits(b, a) && b.elem_count() > a.elem_count() {
        Some((b.clone(), a.clone()))
    } else {
        None
    }
}

/// Whether a tensor of dims `sd` is a per-channel ([1, C, 1, 1], [C, 1, 1])
/// or scalar factor for an [N, C, ...] tensor of dims `xd`.
fn scales_channels(xd: &[usize], sd: &[usize]) -> bool {
    if xd.len() < 2 || sd.len() > xd.len() {
        return false;
    }
    let c = xd[1];
    let n: usize = sd.iter().product();
    n == 1
        || (n == c && {
            // the C entries must sit on axis 1 once right-aligned
            let off = xd.len() - sd.len();
            sd.iter()
                .enumerate()
                .all(|(i, &d)| if i + off == 1 { d == c } else { d == 1 })
        })
}

fn geometry(xs: &[usize], w: &Window) -> Result<Geometry> {
    if xs.len() != 4 || w.kernel.len() != 2 {
        return Err(Error::Invalid(
            "only 2-D windows are supported in training".into(),
        ));
    }
    Ok(Geometry::new(
        xs[1],
        xs[2],
        xs[3],
        [w.kernel[0], w.kernel[1]],
        [w.strides[0], w.strides[1]],
        [w.pads[0], w.pads[1], w.pads[2], w.pads[3]],
        [w.dilations[0], w.dilations[1]],
    ))
}
