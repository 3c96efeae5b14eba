//! Topological order and source checks: every input must come from a graph
//! input, an initializer or an earlier node; a cycle is an error that names
//! the nodes on it.

use super::Graph;
use crate::error::{Error, Result};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

pub(super) fn sort(g: &mut Graph) -> Result<()> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            if let Some(prev) = producer.insert(o.as_str(), i) {
                return Err(Error::node(
                    &g.nodes[i],
                    format!(
                        "output `{o}` is also produced by node `{}`",
                        g.nodes[prev].display_name()
                    ),
                ));
            }
        }
    }
    let sources: HashSet<&str> = g
        .inputs
        .iter()
        .map(|v| v.name.as_str())
        .chain(g.initializers.keys().map(|k| k.as_str()))
        .collect();

    let mut indegree = vec![0usize; g.nodes.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        for inp in n.inputs.iter().filter(|s| !s.is_empty()) {
            match producer.get(inp.as_str()) {
                Some(&p) => {
                    indegree[i] += 1;
                    users[p].push(i);
                }
                None if sources.contains(inp.as_str()) => {}
                None => {
                    return Err(Error::node(
                        n,
                        format!("input `{inp}` is produced by no node, initializer or graph input"),
                    ))
                }
            }
        }
    }
    // Smallest index first: a file already in order keeps its order exactly.
    let mut queue: BinaryHeap<Reverse<usize>> = (0..g.nodes.len())
        .filter(|&i| indegree[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(g.nodes.len());
    while let Some(Reverse(i)) = queue.pop() {
        order.push(i);
        for &u in &users[i] {
            indegree[u] -= 1;
            if indegree[u] == 0 {
                queue.push(Reverse(u));
            }
        }
    }
    if order.len() != g.nodes.len() {
        let stuck: Vec<String> = (0..g.nodes.len())
            .filter(|&i| indegree[i] > 0)
            .take(6)
            .map(|i| format!("`{}`", g.nodes[i].display_name()))
            .collect();
        return Err(Error::Graph(format!(
            "the nodes form a cycle (nodes on or after it: {})",
            stuck.join(", ")
        )));
    }
    for o in &g.outputs {
        if !producer.contains_key(o.name.as_str()) && !sources.contains(o.name.as_str()) {
            return Err(Error::Graph(format!(
                "graph output `{}` is produced by no node",
                o.name
            )));
        }
    }
    let mut nodes: Vec<Option<super::Node>> =
        std::mem::take(&mut g.nodes).into_iter().map(Some).collect();
    g.nodes = order.into_iter().filter_map(|i| nodes[i].take()).collect();
    Ok(())
}
