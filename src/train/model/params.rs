//! Which initializers training learns and which are BatchNorm statistics.

use crate::gate::GATE_PREFIX;
use crate::graph::{Graph, Tensor};
use std::collections::HashSet;

/// (learned, statistics): conv and fully connected weights and biases
/// (a MatMul's bias is the Add after it), BN and LayerNorm scale and shift,
/// a transformer's class token (expanded to the batch, or concatenated as
/// is) and position embedding (an Add of a [1, tokens, width] tensor) and
/// SSS gates are learned; BN running means and variances are state that
/// train-mode passes update. Every other float initializer is a constant
/// (GELU's and a decomposed LayerNorm's scalars, a layer scale).
pub(crate) fn roles(g: &Graph) -> (HashSet<String>, HashSet<String>) {
    let (mut learned, mut stats) = (HashSet::new(), HashSet::new());
    let prod = g.producers();
    let after_matmul = |v: &str| prod.get(v).is_some_and(|&p| g.nodes[p].op_type == "MatMul");
    let token_table = |v: &str| match g.initializers.get(v) {
        Some(Tensor::F32(a)) => a.ndim() == 3 && a.shape()[0] == 1,
        _ => false,
    };
    for n in &g.nodes {
        let learned_at: &[usize] = match n.op_type.as_str() {
            "Conv" | "Gemm" => &[1, 2],
            "BatchNormalization" | "LayerNormalization" => &[1, 2],
            "MatMul" => &[0, 1],
            "Add" if n.inputs.len() == 2 && n.inputs.iter().any(|i| after_matmul(i)) => &[0, 1],
            "Add" if n.inputs.len() == 2 && n.inputs.iter().any(|i| token_table(i)) => &[0, 1],
            "Expand" => &[0],
            "Concat" if n.inputs.iter().any(|i| token_table(i)) => &[0, 1, 2, 3],
            _ => &[],
        };
        for (i, name) in n.inputs.iter().enumerate() {
            let is_float = matches!(g.initializers.get(name), Some(Tensor::F32(_)));
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
