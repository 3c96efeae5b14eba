//! The training step's own backward (`forward_taped` + `Tape::backward`)
//! against candle's autograd on the same graph, on every fixture model with
//! gates in (f64, train mode): the same gradient for every learned tensor
//! and for the input, with a loss that also reads a gate directly (as a
//! penalty term would).

mod common;
use candle_core::{DType, Device, Tensor, Var};
use common::*;
use sss_onnx::gate;
use sss_onnx::structure::GateKind;
use sss_onnx::train::model::Model;

#[test]
fn taped_backward_matches_autograd_on_every_fixture() {
    let mut compared = 0;
    for path in fixtures() {
        let g = load(&path);
        let (g, _) =
            gate::insert(&g, &[GateKind::Channel, GateKind::Group, GateKind::Block]).unwrap();
        let m = Model::with_dtype(&g, &Device::Cpu, DType::F64).unwrap();
        let (_, shape) = sss_onnx::graph::io::image_input(&g).unwrap();
        let shape: Vec<usize> = [2].into_iter().chain(shape.iter().copied()).collect();
        let x = Var::from_tensor(&f64_input(&shape)).unwrap();
        let gate = m
            .vars
            .iter()
            .find(|(k, _)| k.starts_with(sss_onnx::gate::GATE_PREFIX))
            .map(|(_, v)| v.as_tensor().clone())
            .expect("a gate");
        let loss = |y: &Tensor, r: &Tensor| {
            let penalty = (gate.sqr().unwrap().sum_all().unwrap() * 0.3).unwrap();
            ((y * r).unwrap().sum_all().unwrap() + penalty).unwrap()
        };
        let (y, _) = m.forward(x.as_tensor(), true).unwrap();
        let r = (y.ones_like().unwrap() * 0.5 + y.sin().unwrap())
            .unwrap()
            .detach();
        let reference = loss(&y, &r).backward().unwrap();
        let (tape, _) = m.forward_taped(x.as_tensor()).unwrap();
        let dy = max_diff(&y, tape.output());
        assert!(dy < 1e-12, "{}: outputs differ by {dy}", path.display());
        let l = loss(tape.output(), &r);
        let taped = tape.backward(&l).unwrap();
        let mut targets: Vec<(&str, &Var)> = m.vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
        targets.push(("input", &x));
        for (name, v) in targets {
            match (reference.get(v.as_tensor()), taped.get(v.as_tensor())) {
                (Some(a), Some(b)) => {
                    let d = max_diff(a, b);
                    let scale = 1.0 + max_diff(a, &a.zeros_like().unwrap());
                    assert!(
                        d <= 1e-10 * scale,
                        "{}: ∂/∂{name} differs by {d}",
                        path.display()
                    );
                    compared += 1;
                }
                (None, None) => {}
                (a, b) => panic!(
                    "{}: ∂/∂{name} from autograd {} but from the tape {}",
                    path.display(),
                    a.is_some(),
                    b.is_some()
                ),
            }
        }
    }
    assert!(compared > 500, "{compared}");
}
