//! BatchNorm restored for BN-folded exports. PyTorch's default export of a
//! model in eval mode folds each BatchNorm into the conv before it; such a
//! net fine-tunes like a network without normalisation (deep ones diverge
//! at learning rates a BN net takes easily). We put a BatchNormalization
//! back after every conv that has none, set so that the network computes
//! exactly what it did (running statistics measured on training images,
//! affine terms that undo them), train with it, and fold it back into the
//! conv before writing.

use crate::error::{Error, Result};
use crate::graph::{Attr, Graph, Node, Tensor, ValueInfo};
use ndarray::{ArrayD, Axis, IxDyn};
use std::collections::HashMap;

/// Name prefix of the restored BatchNorm nodes and their tensors.
pub const PREFIX: &str = "sss_bn/";

const EPSILON: f32 = 1e-5;

/// Convs whose output no BatchNormalization reads: the ones a BN was
/// folded into (indices into `g.nodes`).
pub fn folded_convs(g: &Graph) -> Vec<usize> {
    let consumers = g.consumers();
    g.nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.op_type == "Conv" && n.is_onnx())
        .filter(|(_, n)| {
            let out = n.outputs[0].as_str();
            !consumers.get(out).is_some_and(|c| {
                c.iter()
                    .any(|&i| g.nodes[i].op_type == "BatchNormalization")
            })
        })
        .map(|(i, _)| i)
        .collect()
}

/// Whether the graph looks BN-folded: convs, no BatchNormalization, and no
/// other normalisation (a ConvNeXt or a transformer normalises with
/// LayerNorm, as an op or as arithmetic: it never had a BN to restore).
pub fn is_bn_folded(g: &Graph) -> bool {
    !g.nodes.iter().any(|n| n.op_type == "BatchNormalization")
        && g.nodes.iter().any(|n| n.op_type == "Conv")
        && !normalises_otherwise(g)
}

/// A LayerNorm, GroupNorm or InstanceNorm op, or a square root of a mean
/// (plus ε): a normalisation spelled out below opset 17.
fn normalises_otherwise(g: &Graph) -> bool {
    let prod = g.producers();
    let made_by = |v: &str, op: &str| prod.get(v).is_some_and(|&p| g.nodes[p].op_type == op);
    g.nodes.iter().any(|n| {
        matches!(
            n.op_type.as_str(),
            "LayerNormalization" | "GroupNormalization" | "InstanceNormalization"
        ) || (n.op_type == "Sqrt"
            && n.inputs.first().is_some_and(|v| {
                made_by(v, "ReduceMean")
                    || prod.get(v.as_str()).is_some_and(|&p| {
                        g.nodes[p].op_type == "Add"
                            && g.nodes[p].inputs.iter().any(|i| made_by(i, "ReduceMean"))
                    })
            }))
    })
}

/// Per-channel mean and (population) variance of some values [N, C, ...].
#[derive(Debug, Clone, Default)]
pub struct Moments {
    sum: Vec<f64>,
    sq: Vec<f64>,
    count: f64,
}

impl Moments {
    pub fn add(&mut self, x: &ArrayD<f32>) {
        let c = x.shape().get(1).copied().unwrap_or(1);
        if self.sum.len() != c {
            self.sum = vec![0.0; c];
            self.sq = vec![0.0; c];
        }
        for (k, plane) in x.axis_iter(Axis(1)).enumerate() {
            for &v in plane.iter() {
                let v = v as f64;
                self.sum[k] += v;
                self.sq[k] += v * v;
            }
        }
        self.count += (x.len() / c.max(1)) as f64;
    }

    pub fn mean_var(&self) -> (Vec<f32>, Vec<f32>) {
        let n = self.count.max(1.0);
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let var = self
            .sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| ((q / n - m * m).max(0.0)) as f32)
            .collect();
        (mean.into_iter().map(|m| m as f32).collect(), var)
    }
}

/// The graph with each of `convs`' outputs also a graph output, to
/// measure them.
pub fn exposing(g: &Graph, convs: &[usize]) -> Graph {
    let mut out = g.clone();
    for &i in convs {
        let name = &g.nodes[i].outputs[0];
        if !out.is_graph_output(name) {
            out.outputs.push(ValueInfo::tensor(
                name,
                crate::graph::tensor::dtype::FLOAT,
                vec![],
            ));
            if let Some(o) = out.outputs.last_mut() {
                o.shape = None;
            }
        }
    }
    out
}

fn vec_tensor(v: &[f32]) -> Tensor {
    Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).expect("1-D"))
}

/// Inserts a BatchNormalization after every conv of `stats` (keyed by the
/// conv's output name: mean and variance of that output), in eval mode an
/// identity: scale √(var + ε), bias = mean. Returns the new graph and how
/// many were inserted.
pub fn insert(g: &Graph, stats: &HashMap<String, (Vec<f32>, Vec<f32>)>) -> Result<(Graph, usize)> {
    let mut out = g.clone();
    let mut nodes = Vec::with_capacity(g.nodes.len() + stats.len());
    let mut count = 0;
    for n in &g.nodes {
        let y = n.outputs.first().cloned().unwrap_or_default();
        let Some((mean, var)) = stats.get(&y).filter(|_| n.op_type == "Conv") else {
            nodes.push(n.clone());
            continue;
        };
        let base = format!("{PREFIX}{count}");
        let pre = out.fresh_name(&format!("{y}_{PREFIX}pre"));
        let mut conv = n.clone();
        conv.outputs[0] = pre.clone();
        let scale: Vec<f32> = var.iter().map(|v| (v + EPSILON).sqrt()).collect();
        let names = ["scale", "bias", "mean", "var"].map(|k| format!("{base}/{k}"));
        for (name, t) in names.iter().zip([&scale, mean, mean, var]) {
            out.initializers.insert(name.clone(), vec_tensor(t));
        }
        let bn = Node::new(
            "BatchNormalization",
            &base,
            &[&pre, &names[0], &names[1], &names[2], &names[3]],
            &[&y],
        )
        .with_attr("epsilon", Attr::Float(EPSILON));
        nodes.push(conv);
        nodes.push(bn);
        count += 1;
    }
    out.nodes = nodes;
    out.value_info.clear();
    out.sort()?;
    Ok((out, count))
}

/// Folds every restored BatchNorm back into the conv before it:
/// W ← W·s, b ← (b − mean)·s + β with s = γ / √(var + ε), per output
/// channel. Returns how many were folded; a restored BN whose input is not
/// a conv's sole output is an error (training never makes one).
pub fn fold_back(g: &mut Graph) -> Result<usize> {
    let producers: HashMap<String, usize> = g
        .producers()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let consumers: HashMap<String, Vec<usize>> = g
        .consumers()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut drop = Vec::new();
    for bi in 0..g.nodes.len() {
        let bn = &g.nodes[bi];
        if bn.op_type != "BatchNormalization" || !bn.name.starts_with(PREFIX) {
            continue;
        }
        let x = bn.inputs[0].clone();
        let ci = *producers
            .get(&x)
            .ok_or_else(|| Error::node(bn, "its input has no producer"))?;
        if g.nodes[ci].op_type != "Conv" || consumers.get(&x).map(|c| c.len()) != Some(1) {
            return Err(Error::node(bn, "not the sole reader of a conv's output"));
        }
        let eps = bn.attr_float_or("epsilon", EPSILON)?;
        let get = |k: usize| -> Result<Vec<f32>> {
            let name = bn.input(k).unwrap_or_default();
            g.initializers
                .get(name)
                .and_then(|t| t.as_f32())
                .map(|a| a.iter().copied().collect())
                .ok_or_else(|| Error::node(bn, format!("input {k} is not a float initializer")))
        };
        let (gamma, beta, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
        let s: Vec<f32> = gamma
            .iter()
            .zip(&var)
            .map(|(g, v)| g / (v + eps).sqrt())
            .collect();
        let conv = g.nodes[ci].clone();
        let w_name = conv.inputs[1].clone();
        let mut w = g
            .initializers
            .get(&w_name)
            .and_then(|t| t.as_f32())
            .cloned()
            .ok_or_else(|| Error::node(&conv, "weight is not a float initializer"))?;
        if w.shape()[0] != s.len() {
            return Err(Error::node(bn, "channel count differs from the conv's"));
        }
        for (o, mut filt) in w.axis_iter_mut(Axis(0)).enumerate() {
            filt.mapv_inplace(|v| v * s[o]);
        }
        let b_old: Vec<f32> = match conv.input(2) {
            Some(b) => g
                .initializers
                .get(b)
                .and_then(|t| t.as_f32())
                .map(|a| a.iter().copied().collect())
                .ok_or_else(|| Error::node(&conv, "bias is not a float initializer"))?,
            None => vec![0.0; s.len()],
        };
        let b: Vec<f32> = (0..s.len())
            .map(|o| (b_old[o] - mean[o]) * s[o] + beta[o])
            .collect();
        // fresh names: the old tensors may be shared (never in exports we
        // restore, but cheap to be safe)
        let wn = g.fresh_name(&format!("{w_name}_bnfold"));
        let bname = g.fresh_name(&format!("{}_bias_bnfold", conv.display_name()));
        g.initializers.insert(wn.clone(), Tensor::F32(w));
        g.initializers.insert(bname.clone(), vec_tensor(&b));
        let y = g.nodes[bi].outputs[0].clone();
        let c = &mut g.nodes[ci];
        c.inputs[1] = wn;
        if c.inputs.len() < 3 {
            c.inputs.push(bname);
        } else {
            c.inputs[2] = bname;
        }
        c.outputs[0] = y;
        drop.push(bi);
    }
    let n = drop.len();
    let mut i = 0;
    g.nodes.retain(|_| {
        let keep = !drop.contains(&i);
        i += 1;
        keep
    });
    g.value_info.clear();
    g.remove_dead();
    g.sort()?;
    Ok(n)
}

/// Restores a BatchNorm after every conv that has none, with statistics
/// measured over up to `samples` images of `ds` (spread over the set),
/// `batch` at a time, in the runtime `opts` names. Returns the graph and
/// how many were restored.
pub fn restore(
    g: &Graph,
    ds: &crate::data::Dataset,
    prep: &crate::data::Preprocess,
    input: &str,
    opts: &crate::runtime::Options,
    samples: usize,
    batch: usize,
) -> Result<(Graph, usize)> {
    let convs = folded_convs(g);
    if convs.is_empty() {
        return Ok((g.clone(), 0));
    }
    let exposed = exposing(g, &convs);
    let label = std::path::Path::new("<BatchNorm calibration graph>");
    let mut s = crate::runtime::open_graph(&exposed, label, opts)?;
    let n = samples.min(ds.len()).max(1);
    let picks = crate::batching::spread(ds.len(), n);
    let wanted: Vec<String> = convs
        .iter()
        .map(|&i| g.nodes[i].outputs[0].clone())
        .collect();
    let mut moments: HashMap<String, Moments> = HashMap::new();
    for chunk in picks.chunks(batch.max(1)) {
        let x = prep.batch(ds, chunk)?;
        for (name, y) in s.run(&vec![(input.to_string(), x)])? {
            if wanted.contains(&name) {
                moments.entry(name).or_default().add(&y);
            }
        }
    }
    let stats = moments
        .into_iter()
        .map(|(k, m)| (k, m.mean_var()))
        .collect();
    insert(g, &stats)
}
