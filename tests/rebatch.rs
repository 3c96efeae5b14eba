//! Fixed-batch transformer exports made to run at any batch: the batch
//! found inside reshape targets (sequence-first attention, batch merged
//! with heads or tokens) and a class token given the batch. The rebatched
//! graph's outputs at batch 3 equal the file's own, sample by sample, in
//! ONNX Runtime; and the run-time check catches a batch put in the wrong
//! place (a reshape that is consistent in shape but mixes samples).

mod common;
use common::*;
use sss_onnx::graph::Tensor;
use sss_onnx::measure::{inputs::normal, rebatch};
use sss_onnx::onnx::import;

#[test]
fn fixed_batch_vision_transformers_run_at_any_batch_sample_by_sample() {
    require_ort();
    for v in ["legacy17fixed", "default"] {
        let p = fixture(&format!("vit_tiny.{v}.onnx"));
        let imp = import::import(&p).unwrap();
        let fb = imp.fixed_batch.as_ref().expect("fixed at 1");
        assert_eq!(fb.batch, 1);
        if v == "legacy17fixed" {
            // sequence-first attention: the batch sits second or merged
            assert!(!fb.inferred.is_empty(), "{v}");
        }
        rebatch::check(&imp, &p).unwrap();
        // independently: the rebatched graph at batch 3 against the file
        // at batch 1, three times
        let x = normal(&[3, 3, 32, 32], 4);
        let mut s = sss_onnx::runtime::open_graph(&imp.graph, &p, &ort()).unwrap();
        let name = imp.graph.data_inputs().next().unwrap().name.clone();
        let together = s.run(&vec![(name, x.clone())]).unwrap().remove(0).1;
        for i in 0..3 {
            let xi = x.slice_axis(ndarray::Axis(0), (i..i + 1).into()).to_owned();
            let alone = run_model(&p, &ort(), "input", &xi);
            let row = together
                .slice_axis(ndarray::Axis(0), (i..i + 1).into())
                .to_owned();
            assert!(max_abs(&row, &alone) <= 1e-4, "{v} sample {i}");
        }
    }
}

#[test]
fn a_batch_put_in_the_wrong_dimension_is_caught() {
    require_ort();
    let p = fixture("vit_tiny.legacy17fixed.onnx");
    let mut imp = import::import(&p).unwrap();
    let inferred = imp.fixed_batch.as_ref().unwrap().inferred.clone();
    let facts = sss_onnx::graph::shape::infer_strict(&imp.graph, 1).unwrap();
    // a merge of batch and heads, [T, -1, Dh], made [-1, H, Dh]: the same
    // shape at every batch, the samples mixed with the tokens
    let g = &mut imp.graph;
    let (target, heads) = g
        .nodes
        .iter()
        .filter(|n| inferred.contains(&n.name))
        .find_map(|n| {
            let t = g.constant(n.input(1)?)?.to_i64()?;
            let t: Vec<i64> = t.iter().copied().collect();
            let out = facts.shape(&n.outputs[0])?;
            (t.len() == 3 && t[1] == -1 && t[0] > 1)
                .then(|| (n.input(1).unwrap().to_string(), out[1]))
        })
        .expect("a [T, -1, Dh] target");
    let Some(Tensor::I64(a)) = g.initializers.get_mut(&target) else {
        panic!("{target} is not an int64 initializer")
    };
    a[0] = -1;
    a[1] = heads as i64;
    let e = format!("{:?}", rebatch::check(&imp, &p).unwrap_err());
    assert!(
        e.contains("two samples at once") && e.contains("dynamic batch"),
        "{e}"
    );
}
