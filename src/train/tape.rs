//! The training step's own backward pass over the CPU kernels.
//!
//! candle's `backward` starts every tensor's gradient as `zeros_like` and
//! adds each incoming gradient to it, so each activation costs a zero fill
//! and a full add even when one op reads it; and it keeps every gradient
//! until the pass ends. On ImageNet-size activations that is a sizeable
//! share of a step, in time and in memory. Here the forward pass records,
//! for each kernel it runs, the kernel's backward and where its input
//! gradients go; the backward walks that record in reverse, passes a
//! gradient on by moving it when one op reads a value and adds only where
//! several do, and drops each gradient and each saved activation once it is
//! used.
//!
//! Activations are plain (untracked) tensors. Parameters stay candle `Var`s:
//! a kernel's gradient for a parameter is summed here, and one for a small
//! tensor derived from parameters (a BN's packed scale and shift, a gate
//! flattened) goes through candle's graph in one last backward. Nodes with
//! no recorded kernel run on leaf copies of their inputs under candle's own
//! autograd (`Recorder::local`).

use super::kernels::conv::Conv2d;
use candle_core::backprop::GradStore;
use candle_core::{CustomOp1, CustomOp2, CustomOp3, Result, Tensor, TensorId, Var};
use std::collections::HashMap;

/// Where one gradient a recorded backward returns goes.
enum Target {
    /// Nowhere: a constant or a value no parameter influences.
    None,
    /// An activation recorded on the tape.
    Slot(usize),
    /// A parameter itself.
    Var(Tensor),
    /// A small tensor computed from parameters by candle ops.
    Derived(Tensor),
}

type Backward = Box<dyn FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>>>;

struct Entry {
    out: usize,
    targets: Vec<Target>,
    backward: Backward,
}

/// The record a forward pass builds.
#[derive(Default)]
pub(crate) struct Recorder {
    slot_of: HashMap<TensorId, usize>,
    /// Per slot: whether a gradient must reach it, and its dims.
    needs: Vec<bool>,
    dims: Vec<Vec<usize>>,
    entries: Vec<Entry>,
}

impl Recorder {
    /// Registers `t` as an activation (an input, or an output of a node
    /// that records nothing).
    pub(crate) fn value(&mut self, t: &Tensor, needs: bool) -> usize {
        let s = self.needs.len();
        self.slot_of.insert(t.id(), s);
        self.needs.push(needs);
        self.dims.push(t.dims().to_vec());
        s
    }

    fn target(&self, t: &Tensor) -> Target {
        match self.slot_of.get(&t.id()) {
            Some(&s) if self.needs[s] => Target::Slot(s),
            Some(_) => Target::None,
            None if t.is_variable() => Target::Var(t.clone()),
            None if t.track_op() => Target::Derived(t.clone()),
            None => Target::None,
        }
    }

    /// Whether a gradient must reach `t`.
    pub(crate) fn needs(&self, t: &Tensor) -> bool {
        !matches!(self.target(t), Target::None)
    }

    /// Records `y = f(args)` with the given backward (gradient of `y` → one
    /// gradient per argument, in order).
    pub(crate) fn record(&mut self, args: &[&Tensor], y: &Tensor, backward: Backward) {
        let targets: Vec<Target> = args.iter().map(|a| self.target(a)).collect();
        let live = targets.iter().any(|t| !matches!(t, Target::None));
        let out = self.value(y, live);
        if live {
            self.entries.push(Entry {
                out,
                targets,
                backward,
            });
        }
    }

    pub(crate) fn apply1<O: CustomOp1 + 'static>(&mut self, x: &Tensor, op: O) -> Result<Tensor> {
        let y = x.apply_op1_no_bwd(&op)?;
        let (xc, yc) = (x.clone(), y.clone());
        self.record(&[x], &y, Box::new(move |g| Ok(vec![op.bwd(&xc, &yc, g)?])));
        Ok(y)
    }

    pub(crate) fn apply2<O: CustomOp2 + 'static>(
        &mut self,
        a: &Tensor,
        b: &Tensor,
        op: O,
    ) -> Result<Tensor> {
        let y = a.apply_op2_no_bwd(b, &op)?;
        let (ac, bc, yc) = (a.clone(), b.clone(), y.clone());
        self.record(
            &[a, b],
            &y,
            Box::new(move |g| {
                let (da, db) = op.bwd(&ac, &bc, &yc, g)?;
                Ok(vec![da, db])
            }),
        );
        Ok(y)
    }

    pub(crate) fn apply3<O: CustomOp3 + 'static>(
        &mut self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        op: O,
    ) -> Result<Tensor> {
        let y = a.apply_op3_no_bwd(b, c, &op)?;
        let (ac, bc, cc, yc) = (a.clone(), b.clone(), c.clone(), y.clone());
        self.record(
            &[a, b, c],
            &y,
            Box::new(move |g| {
                let (da, db, dc) = op.bwd(&ac, &bc, &cc, &yc, g)?;
                Ok(vec![da, db, dc])
            }),
        );
        Ok(y)
    }

    /// A convolution: its input gradient only where one is needed (not for
    /// the network's input).
    pub(crate) fn conv(&mut self, x: &Tensor, w: &Tensor, op: Conv2d) -> Result<Tensor> {
        let y = x.apply_op2_no_bwd(w, &op)?;
        let input_grad = self.needs(x);
        let (xc, wc) = (x.clone(), w.clone());
        self.record(
            &[x, w],
            &y,
            Box::new(move |g| {
                let (dx, dw) = op.backward(&xc, &wc, g, input_grad)?;
                Ok(vec![dx, Some(dw)])
            }),
        );
        Ok(y)
    }

    /// A node computed by candle's own ops on `leaves` (leaf copies of the
    /// node's activation inputs, or its parameters): its backward is
    /// candle's, run on this node alone. `y` is the node's tracked output;
    /// returns the untracked value to carry on with.
    pub(crate) fn local(&mut self, leaves: Vec<(Tensor, Tensor)>, y: &Tensor) -> Tensor {
        let value = y.detach();
        let (args, grads_of): (Vec<Tensor>, Vec<Tensor>) = leaves.into_iter().unzip();
        let y = y.clone();
        let arg_refs: Vec<&Tensor> = args.iter().collect();
        let targets: Vec<Target> = arg_refs.iter().map(|a| self.target(a)).collect();
        let live = y.track_op() && targets.iter().any(|t| !matches!(t, Target::None));
        let out = self.value(&value, live);
        if live {
            self.entries.push(Entry {
                out,
                targets,
                backward: Box::new(move |g| {
                    let grads = (&y * g.detach())?.sum_all()?.backward()?;
                    Ok(grads_of.iter().map(|l| grads.get(l).cloned()).collect())
                }),
            });
        }
        value
    }

    /// How many entries are recorded: a mark to `truncate` back to.
    pub(crate) fn mark(&self) -> usize {
        self.entries.len()
    }

    /// Drops what was recorded after `mark`.
    pub(crate) fn truncate(&mut self, mark: usize) {
        self.entries.truncate(mark);
    }

    /// Whether the entries after `mark` produced `y` and send gradients to
    /// every input in `inputs` that needs one (else the node must run on
    /// candle's autograd: some of its ops were not recorded).
    pub(crate) fn covers(&self, mark: usize, inputs: &[&Tensor], y: &Tensor) -> bool {
        let Some(&out) = self.slot_of.get(&y.id()) else {
            return false;
        };
        let reached: Vec<usize> = self.entries[mark..]
            .iter()
            .flat_map(|e| &e.targets)
            .filter_map(|t| match t {
                Target::Slot(s) => Some(*s),
                _ => None,
            })
            .collect();
        inputs.iter().all(|x| match self.slot_of.get(&x.id()) {
            Some(&s) if self.needs[s] => s == out || reached.contains(&s),
            _ => true,
        })
    }

    /// Finishes the record: `input` is the network input (a gradient is
    /// returned for it when it is a `Var`), `output` the network output.
    /// `params` are the model's parameters.
    pub(crate) fn finish(
        self,
        input: &Tensor,
        output: &Tensor,
        params: Vec<Tensor>,
    ) -> Result<Tape> {
        let out = *self
            .slot_of
            .get(&output.id())
            .ok_or_else(|| candle_core::Error::Msg("the output was not recorded".into()))?;
        Ok(Tape {
            output: Var::from_tensor(&output.detach())?.as_tensor().clone(),
            recorded: Some(Recorded {
                input: input.is_variable().then(|| input.clone()),
                input_slot: self.slot_of.get(&input.id()).copied(),
                out,
                params,
                needs: self.needs,
                dims: self.dims,
                entries: self.entries,
            }),
        })
    }
}

/// A train-mode forward pass, ready for its backward.
pub struct Tape {
    /// The network output, a leaf when recorded: the loss is computed
    /// from it.
    output: Tensor,
    recorded: Option<Recorded>,
}

struct Recorded {
    input: Option<Tensor>,
    input_slot: Option<usize>,
    out: usize,
    params: Vec<Tensor>,
    needs: Vec<bool>,
    dims: Vec<Vec<usize>>,
    entries: Vec<Entry>,
}

/// Adds `g` into the gradient kept for the parameter `v`.
fn add_into(params: &mut HashMap<TensorId, Tensor>, v: &Tensor, g: Tensor) -> Result<()> {
    let mut acc = params.remove(&v.id());
    accumulate(&mut acc, g, v.dims())?;
    if let Some(a) = acc {
        params.insert(v.id(), a);
    }
    Ok(())
}

/// Adds `g` into `acc`, reshaped to `dims`.
fn accumulate(acc: &mut Option<Tensor>, g: Tensor, dims: &[usize]) -> Result<()> {
    let g = if g.dims() == dims {
        g
    } else {
        g.reshape(dims)?
    };
    *acc = Some(match acc.take() {
        Some(a) => (a + g)?,
        None => g,
    });
    Ok(())
}

impl Tape {
    /// A pass candle's autograd differentiates (devices without the CPU
    /// kernels): `output` carries its graph.
    pub(crate) fn candle(output: Tensor) -> Tape {
        Tape {
            output,
            recorded: None,
        }
    }

    /// The network output, what the loss is computed from.
    pub fn output(&self) -> &Tensor {
        &self.output
    }

    /// The gradients of `loss` (computed from `output()`, and possibly from
    /// parameters directly) for every parameter, and for the input when it
    /// is a `Var`, as candle's `backward` would return them.
    pub fn backward(self, loss: &Tensor) -> Result<GradStore> {
        let mut grads = loss.backward()?;
        let Some(rec) = self.recorded else {
            return Ok(grads);
        };
        let Some(g_out) = grads.remove(&self.output) else {
            return Ok(grads);
        };
        rec.backward(g_out, grads)
    }
}

impl Recorded {
    fn backward(self, g_out: Tensor, mut grads: GradStore) -> Result<GradStore> {
        let mut slot_grads: Vec<Option<Tensor>> = vec![None; self.needs.len()];
        slot_grads[self.out] = Some(g_out);
        let mut params: HashMap<TensorId, Tensor> = HashMap::new();
        let mut derived: Vec<(Tensor, Tensor)> = Vec::new();
        for e in self.entries.into_iter().rev() {
            let Some(g) = slot_grads[e.out].take() else {
                continue;
            };
            let gs = (e.backward)(&g)?;
            drop(g);
            for (t, gi) in e.targets.into_iter().zip(gs) {
                let Some(gi) = gi else { continue };
                match t {
                    Target::None => {}
                    Target::Slot(s) => accumulate(&mut slot_grads[s], gi, &self.dims[s])?,
                    Target::Var(v) => add_into(&mut params, &v, gi)?,
                    Target::Derived(d) => derived.push((d, gi)),
                }
            }
        }
        // gradients of tensors computed from parameters: through candle's
        // graph of those (small) computations, all at once
        let mut surrogate: Option<Tensor> = None;
        for (d, g) in derived {
            let term = (&d * g.reshape(d.dims())?.detach())?.sum_all()?;
            surrogate = Some(match surrogate {
                Some(s) => (s + term)?,
                None => term,
            });
        }
        let more = surrogate.map(|s| s.backward()).transpose()?;
        for v in &self.params {
            let via_derived = more.as_ref().and_then(|m| m.get(v)).cloned();
            if let Some(g) = via_derived {
                add_into(&mut params, v, g)?;
            }
            if let Some(g) = params.remove(&v.id()) {
                let total = match grads.get(v) {
                    Some(old) => (old + g)?,
                    None => g,
                };
                grads.insert(v, total);
            }
        }
        if let (Some(x), Some(s)) = (self.input, self.input_slot) {
            if let Some(g) = slot_grads[s].take() {
                grads.insert(&x, g);
            }
        }
        Ok(grads)
    }
}
