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
