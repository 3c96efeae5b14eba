//! Every op in the registry (`graph::ops::OPS`) either has a training
//! lowering (`train::lower`), checked here against tract on a small graph
//! that uses it, or has none, and then a model using it fails when it is
//! loaded for training, with the op and node named. The registry's pruning
//! claim (a per-channel constant passes through) is checked against
//! `prune::collapse::step` the same way.

mod common;
use candle_core::{Device, Tensor as Ct};
use common::*;
use sss_onnx::graph::build::Builder;
use sss_onnx::graph::ops::OPS;
use sss_onnx::graph::{Attr, Graph, Tensor};
use sss_onnx::train::lower;
use sss_onnx::train::model::{check_lowerable, to_ndarray, Model};

const C: usize = 4;

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

/// A constant [1, C, 1, 1] in [lo, lo + 1).
fn per_channel(b: &mut Builder, lo: f32) -> String {
    let w = b.weight("k", &[1, C, 1, 1], 0.5);
    if let Some(Tensor::F32(a)) = b.graph.initializers.get_mut(&w) {
        a.mapv_inplace(|v| v + 0.5 + lo);
    }
    w
}

fn scalar(b: &mut Builder, v: f32) -> String {
    let w = b.weight("s", &[], 1.0);
    if let Some(Tensor::F32(a)) = b.graph.initializers.get_mut(&w) {
        a.fill(v);
    }
    w
}

/// A graph on x: [N, C, 6, 6] whose output goes through `op`; `None` for
/// ops that have no small test graph of their own here.
fn graph_using(op: &str) -> Option<Graph> {
    let mut b = Builder::new("x", &[-1, C as i64, 6, 6], 11);
    let x = "x";
    let y = match op {
        "Conv" => b.conv(x, C, C, 3, 1),
        "BatchNormalization" => b.bn(x, C),
        "Clip" => {
            let (lo, hi) = (scalar(&mut b, -0.2), scalar(&mut b, 0.3));
            b.node("Clip", &[x, &lo, &hi], vec![])
        }
        "LeakyRelu" => b.node("LeakyRelu", &[x], vec![("alpha", Attr::Float(0.2))]),
        "Add" | "Sub" | "Mul" | "Div" => {
            let k = per_channel(&mut b, 0.5);
            b.node(op, &[x, &k], vec![])
        }
        "Sum" => b.node("Sum", &[x, x, x], vec![]),
        "MaxPool" => b.node(
            "MaxPool",
            &[x],
            vec![
                ("kernel_shape", ints(&[3, 3])),
                ("strides", ints(&[2, 2])),
                ("pads", ints(&[1, 1, 1, 1])),
            ],
        ),
        "AveragePool" => b.node(
            "AveragePool",
            &[x],
            vec![("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2]))],
        ),
        "ReduceMean" => b.node(
            "ReduceMean",
            &[x],
            vec![("axes", ints(&[2, 3])), ("keepdims", Attr::Int(1))],
        ),
        "Gemm" => b.head(x, C, 5),
        "MatMul" => {
            let f = b.node("Flatten", &[x], vec![("axis", Attr::Int(1))]);
            let w = b.weight("w", &[C * 36, 5], 0.1);
            b.node("MatMul", &[&f, &w], vec![])
        }
        "Flatten" => b.node("Flatten", &[x], vec![("axis", Attr::Int(1))]),
        "Reshape" => {
            let s = b.ints("shape", &[0, -1, 6]);
            b.node("Reshape", &[x, &s], vec![])
        }
        "Squeeze" | "Unsqueeze" => {
            let p = b.node("GlobalAveragePool", &[x], vec![]);
            let axes = b.ints("axes", if op == "Squeeze" { &[3] } else { &[1] });
            b.node(op, &[&p, &axes], vec![])
        }
        "Transpose" => b.node("Transpose", &[x], vec![("perm", ints(&[0, 1, 3, 2]))]),
        "Concat" => b.node("Concat", &[x, x], vec![("axis", Attr::Int(1))]),
        "Slice" => {
            let (s, e, a, st) = (
                b.ints("starts", &[1, 0]),
                b.ints("ends", &[4, 6]),
                b.ints("axes", &[1, 2]),
                b.ints("steps", &[2, 2]),
            );
            b.node("Slice", &[x, &s, &e, &a, &st], vec![])
        }
        "Pad" => {
            let p = b.ints("pads", &[0, 1, 1, 0, 0, 1, 0, 1]);
            b.node("Pad", &[x, &p], vec![])
        }
        // one data input, no attributes needed
        "Relu" | "Identity" | "Dropout" | "GlobalAveragePool" | "GlobalMaxPool" | "Sigmoid"
        | "Neg" | "Exp" | "Tanh" | "HardSigmoid" | "HardSwish" | "Erf" | "Abs" | "ReduceSum"
        | "ReduceMax" | "Cast" => {
            let mut attrs = vec![];
            if op == "Cast" {
                attrs.push(("to", Attr::Int(1)));
            }
            b.node(op, &[x], attrs)
        }
        "Sqrt" => {
            let a = b.node("Relu", &[x], vec![]);
            b.node("Sqrt", &[&a], vec![])
        }
        "Pow" => {
            let e = scalar(&mut b, 2.0);
            b.node("Pow", &[x, &e], vec![])
        }
        "LayerNormalization" => {
            // over the last axis, as ConvNeXt's channels-last blocks do
            let (s, t) = (b.weight("ln_s", &[6], 1.0), b.weight("ln_b", &[6], 0.5));
            b.node(
                "LayerNormalization",
                &[x, &s, &t],
                vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(1e-3))],
            )
        }
        "Gelu" => b.node("Gelu", &[x], vec![]),
        "Gather" => {
            let i = b.ints("idx", &[0, 3, -1, 1]);
            let s = b.ints("shape", &[2, 2]);
            let i = b.node("Reshape", &[&i, &s], vec![]);
            b.node("Gather", &[x, &i], vec![("axis", Attr::Int(1))])
        }
        "Max" | "Min" => {
            let k = per_channel(&mut b, 0.5);
            b.node(op, &[x, &k], vec![])
        }
        // over a middle axis: attention's is the last, a single axis from
        // opset 13 on
        "Softmax" => b.node("Softmax", &[x], vec![("axis", Attr::Int(1))]),
        "Expand" => {
            // [N, C, 1, 6] broadcast against [1, 1, 6, 1]
            let m = b.node(
                "ReduceMean",
                &[x],
                vec![("axes", ints(&[2])), ("keepdims", Attr::Int(1))],
            );
            let s = b.ints("shape", &[1, 1, 6, 1]);
            b.node("Expand", &[&m, &s], vec![])
        }
        _ => return None,
    };
    let mut g = b.finish(&y);
    g.outputs[0].shape = None;
    Some(g)
}

fn input() -> ndarray::ArrayD<f32> {
    sss_onnx::measure::inputs::normal(&[3, C, 6, 6], 5)
}

fn candle_eval(g: &Graph, x: &ndarray::ArrayD<f32>) -> sss_onnx::Result<ndarray::ArrayD<f32>> {
    let m = Model::new(g, &Device::Cpu)?;
    let t = Ct::from_vec(
        x.iter().copied().collect::<Vec<_>>(),
        x.shape(),
        &Device::Cpu,
    )
    .map_err(|e| sss_onnx::Error::Invalid(e.to_string()))?;
    to_ndarray(&m.forward(&t, false)?.0)
}

#[test]
fn every_lowered_op_computes_what_tract_computes() {
    let x = input();
    let mut checked = vec![];
    for op in lower::ops() {
        let g = graph_using(op).unwrap_or_else(|| panic!("{op}: lowered, but no test graph here"));
        let c = candle_eval(&g, &x).unwrap_or_else(|e| panic!("{op}: {e}"));
        let mut s = sss_onnx::runtime::open_graph(&g, std::path::Path::new(op), &tract())
            .unwrap_or_else(|e| panic!("{op}: tract: {e}"));
        let t = s.run(&vec![("x".into(), x.clone())]).unwrap().remove(0).1;
        assert!(
            max_abs(&c, &t) <= 1e-4,
            "{op}: candle vs tract {}",
            max_abs(&c, &t)
        );
        checked.push(op);
    }
    assert!(checked.len() >= 25, "{checked:?}");
}

#[test]
fn every_lowering_is_of_a_registered_op_and_unique() {
    let mut seen = std::collections::HashSet::new();
    for op in lower::ops() {
        assert!(
            OPS.iter().any(|i| i.op == op),
            "{op}: lowered but not in OPS"
        );
        assert!(seen.insert(op), "{op}: lowered twice");
    }
}

#[test]
fn an_inference_only_op_fails_at_load_naming_op_and_node() {
    let x = input();
    let mut checked = 0;
    for info in OPS {
        if lower::find(info.op).is_some() {
            continue;
        }
        let (e, node) = match graph_using(info.op) {
            Some(g) => {
                let node = g.nodes.last().unwrap().name.clone();
                match candle_eval(&g, &x) {
                    Ok(_) => panic!("{}: trained although marked inference-only", info.op),
                    Err(e) => (e.to_string(), node),
                }
            }
            None => {
                // ops that compute shapes (no small graph of their own):
                // the check on a data node renamed to them
                let relu = graph_using("Relu").unwrap();
                let facts = sss_onnx::graph::shape::infer_strict(&relu, 1).unwrap();
                let mut g = relu.clone();
                g.nodes[0].op_type = info.op.to_string();
                let e = check_lowerable(&g, &facts).expect_err(info.op);
                (e.to_string(), g.nodes[0].name.clone())
            }
        };
        assert!(
            e.contains(info.op) && e.contains(&node) && e.contains("cannot be trained"),
            "{}: {e}",
            info.op
        );
        checked += 1;
    }
    assert!(checked >= 15);
    // an op of another domain, unknown to the tool
    let mut g = graph_using("Relu").unwrap();
    g.nodes[0].op_type = "FancyRelu".into();
    g.nodes[0].domain = "com.example".into();
    let e = Model::new(&g, &Device::Cpu)
        .err()
        .expect("unknown op trained");
    assert!(e.to_string().contains("FancyRelu"), "{e}");
}

#[test]
fn compress_refuses_an_untrainable_model_before_any_work() {
    // the first residual branch's ReLU turned into Abs: the runtimes run
    // it, training cannot; compress must say so at import, naming both
    let d = tempfile::tempdir().unwrap();
    let mut g = load(&fixture("resnet20_fmnist.legacy13.onnx"));
    let relu = g.nodes.iter_mut().find(|n| n.op_type == "Relu").unwrap();
    relu.op_type = "Abs".into();
    let name = relu.name.clone();
    let p = d.path().join("abs.onnx");
    sss_onnx::onnx::convert::save(&g, &p, &Default::default()).unwrap();
    let o = run(&["compress", p.to_str().unwrap(), "--steps", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("abs.onnx") && e.contains("Abs") && e.contains(&name),
        "{e}"
    );
    assert!(!e.contains("[2/8]"), "work began: {e}");
}

#[test]
fn the_ops_pruning_carries_a_constant_through_are_those_it_handles() {
    use sss_onnx::prune::collapse::step;
    let mut carried = vec![];
    for info in OPS {
        let Some(g) = graph_using(info.op) else {
            assert!(!info.collapses, "{}: no test graph", info.op);
            continue;
        };
        let node = g.nodes.last().unwrap();
        let got = step(&g, node, &[0.0; C]);
        if info.collapses {
            assert!(
                got.is_some(),
                "{}: registry says it collapses, step does not",
                info.op
            );
            carried.push(info.op);
        } else {
            assert!(
                got.is_none(),
                "{}: step handles it, the registry says not",
                info.op
            );
        }
    }
    assert_eq!(
        carried,
        [
            "Conv",
            "BatchNormalization",
            "Relu",
            "Clip",
            "LeakyRelu",
            "Identity",
            "Mul"
        ]
    );
}
