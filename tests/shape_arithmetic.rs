//! Integer shape arithmetic evaluated during shape inference, against
//! hand-computed values: the Equal/Where spelling of `expand(-1)` that
//! PyTorch writes for a ViT's class token, and Mod in both of ONNX's
//! sign conventions. Without them every shape after the class token is
//! unknown and the MACs of the whole encoder go uncounted.

use sss_onnx::graph::attr::Attr;
use sss_onnx::graph::build::Builder;
use sss_onnx::graph::shape;
use std::collections::HashMap;

fn ints(facts: &shape::Facts, name: &str) -> Vec<i64> {
    facts
        .get(name)
        .and_then(|f| f.value.as_ref())
        .and_then(|v| v.to_i64())
        .unwrap_or_else(|| panic!("`{name}` has no value"))
        .iter()
        .copied()
        .collect()
}

#[test]
fn where_equal_and_mod_on_constants_are_evaluated() {
    let mut b = Builder::new("x", &[1, 1, 96], 0);
    // torch: shape = where(shape == -1 * ones, ones, shape)
    let wanted = b.ints("shape", &[2, -1, -1]);
    let ones = b.ints("ones", &[1, 1, 1]);
    let minus = b.ints("minus", &[-1]);
    let neg = b.node("Mul", &[&ones, &minus], vec![]);
    let eq = b.node("Equal", &[&wanted, &neg], vec![]);
    let shape_ = b.node("Where", &[&eq, &ones, &wanted], vec![]);
    let expanded = b.node("Expand", &["x", &shape_], vec![]);
    let a = b.ints("a", &[7, -7, 7, -7, 6]);
    let d = b.ints("d", &[3, 3, -3, -3, 3]);
    let m = b.node("Mod", &[&a, &d], vec![]);
    let f = b.node("Mod", &[&a, &d], vec![("fmod", Attr::Int(1))]);
    let g = b.finish(&expanded);
    let inputs = HashMap::from([("x".to_string(), vec![1, 1, 96])]);
    let facts = shape::infer(&g, &inputs);
    assert_eq!(ints(&facts, &eq), vec![0, 1, 1]);
    assert_eq!(ints(&facts, &shape_), vec![2, 1, 1]);
    assert_eq!(facts.shape(&expanded), Some(&[2usize, 1, 96][..]));
    // Python's % (the divisor's sign) and C's fmod (the dividend's)
    assert_eq!(ints(&facts, &m), vec![1, 2, -2, -1, 0]);
    assert_eq!(ints(&facts, &f), vec![1, -1, 1, -1, 0]);
}

#[test]
fn split_and_resize_shapes_follow_onnx_and_onnx_runtime() {
    // a YOLO-style neck: a conv's channels split in two, one half upsampled
    // ×2 (Resize by scales) and convolved, the other resized to a size,
    // both concatenated with the input; ONNX Runtime runs it and gives the
    // shape inferred; the convs' MACs follow from the resampled shapes
    let mut b = Builder::new("x", &[-1, 4, 8, 8], 3);
    let y = b.conv("x", 4, 6, 1, 1);
    let sizes = b.ints("split", &[2, 4]);
    let mut split = sss_onnx::graph::Node::new("Split", "split", &[&y, &sizes], &["lo", "hi"]);
    split.set_attr("axis", Attr::Int(1));
    b.graph.nodes.push(split);
    let empty = b.weight("roi", &[0], 1.0);
    let scales = b.weight("scales", &[4], 1.0);
    if let Some(sss_onnx::graph::Tensor::F32(a)) = b.graph.initializers.get_mut(&scales) {
        a.assign(&ndarray::arr1(&[1.0f32, 1.0, 2.0, 2.0]).into_dyn());
    }
    let up = b.node(
        "Resize",
        &["lo", &empty, &scales],
        vec![("mode", Attr::String(b"nearest".to_vec()))],
    );
    let up = b.conv(&up, 2, 3, 3, 2); // back to 8×8
                                      // sizes fix the batch: this graph runs at batch 2
    let size = b.ints("size", &[2, 4, 8, 8]);
    let same = b.node(
        "Resize",
        &["hi", &empty, &empty, &size],
        vec![("mode", Attr::String(b"nearest".to_vec()))],
    );
    let y = b.node("Concat", &[&up, &same, "x"], vec![("axis", Attr::Int(1))]);
    let mut g = b.finish(&y);
    g.outputs[0].shape = None;
    let inputs = HashMap::from([("x".to_string(), vec![2, 4, 8, 8])]);
    let facts = shape::infer(&g, &inputs);
    assert!(facts.failures.is_empty(), "{:?}", facts.failures);
    assert_eq!(facts.shape("lo"), Some(&[2usize, 2, 8, 8][..]));
    assert_eq!(facts.shape("hi"), Some(&[2usize, 4, 8, 8][..]));
    assert_eq!(facts.shape(&y), Some(&[2usize, 11, 8, 8][..]));
    // two samples of the 1×1 conv 4→6 at 8×8 and of the 3×3/2 conv 2→3 on
    // the 16×16 upsampled half (8×8 out)
    let macs = sss_onnx::graph::counts::count(&g, &facts).macs;
    assert_eq!(macs, 2 * (6 * 4 * 64 + 3 * 2 * 9 * 64));
    let x = sss_onnx::measure::inputs::normal(&[2, 4, 8, 8], 1);
    let ort = sss_onnx::runtime::Options {
        kind: sss_onnx::runtime::Kind::Ort,
        threads: 1,
        ep: sss_onnx::runtime::Ep::Cpu,
    };
    let mut s = sss_onnx::runtime::open_graph(&g, std::path::Path::new("neck"), &ort).unwrap();
    let out = s.run(&vec![("x".into(), x)]).unwrap().remove(0).1;
    assert_eq!(out.shape(), &[2, 11, 8, 8]);
}

#[test]
fn split_into_equal_parts_and_upsample_by_scales() {
    // opset 18: `num_outputs` parts of 7 along the last axis: 3, 3, 1
    let mut b = Builder::new("x", &[-1, 2, 7], 0);
    b.graph.opsets[0].version = 18;
    let mut split = sss_onnx::graph::Node::new("Split", "s", &["x"], &["a", "b", "c"]);
    split.set_attr("axis", Attr::Int(-1));
    split.set_attr("num_outputs", Attr::Int(3));
    b.graph.nodes.push(split);
    let g = b.finish("c");
    let facts = shape::infer(&g, &HashMap::from([("x".to_string(), vec![1, 2, 7])]));
    let dims: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|o| facts.shape(o).unwrap().to_vec())
        .collect();
    assert_eq!(dims, vec![vec![1, 2, 3], vec![1, 2, 3], vec![1, 2, 1]]);
    // opset 9's Upsample: (X, scales)
    let mut b = Builder::new("x", &[-1, 3, 5, 5], 0);
    b.graph.opsets[0].version = 9;
    let scales = b.weight("scales", &[4], 1.0);
    if let Some(sss_onnx::graph::Tensor::F32(a)) = b.graph.initializers.get_mut(&scales) {
        a.assign(&ndarray::arr1(&[1.0f32, 1.0, 3.0, 2.0]).into_dyn());
    }
    let y = b.node("Upsample", &["x", &scales], vec![]);
    let g = b.finish(&y);
    let facts = shape::infer(&g, &HashMap::from([("x".to_string(), vec![1, 3, 5, 5])]));
    assert_eq!(facts.shape(&y), Some(&[1usize, 3, 15, 10][..]));
}
