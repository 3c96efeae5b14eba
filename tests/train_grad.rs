//! Gradients of the lowered model against central finite differences, in
//! f64: conv (stride, padding, groups, depthwise), max-pool 3×3/2 pad 1 (where
//! candle's own backward is wrong), BN in train mode, gates, the option-A
//! Slice + Pad shortcut, the activations of MobileNet and EfficientNet
//! (Sigmoid, HardSigmoid, HardSwish, SiLU as x·Sigmoid(x), ReLU6 as
//! Clip's own kernel), and an
//! ImageNet-style stem with a ResNeXt bottleneck (7×7/2 stem, pointwise and strided 1×1 convs, 32-group-style
//! grouped 3×3, global average pool).

use candle_core::{DType, Device, Tensor, Var};
use sss_onnx::graph::build::{Builder, ConvSpec};
use sss_onnx::graph::Attr;
use sss_onnx::graph::Graph;
use sss_onnx::train::model::Model;

fn seeded(shape: &[usize], seed: u64) -> Tensor {
    let a = sss_onnx::measure::inputs::normal(shape, seed);
    Tensor::from_vec(
        a.iter().map(|&v| v as f64).collect::<Vec<f64>>(),
        shape,
        &Device::Cpu,
    )
    .unwrap()
}

/// Checks d(sum(model(x)·r))/d(x and every learned tensor) at `samples`
/// coordinates each.
fn check(g: &Graph, shape: &[usize], train: bool) {
    let m = Model::with_dtype(g, &Device::Cpu, DType::F64).unwrap();
    let x = Var::from_tensor(&seeded(shape, 1)).unwrap();
    let (y, _) = m.forward(x.as_tensor(), train).unwrap();
    let r = seeded(y.dims(), 2);
    let loss = |m: &Model, x: &Tensor| -> f64 {
        let (y, _) = m.forward(x, train).unwrap();
        (y * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let l = (y * &r).unwrap().sum_all().unwrap();
    // candle's autograd, and in train mode also the training step's own
    // backward (the tape)
    let mut sources = vec![("autograd", l.backward().unwrap())];
    if train {
        let (tape, _) = m.forward_taped(x.as_tensor()).unwrap();
        let l = (tape.output() * &r).unwrap().sum_all().unwrap();
        sources.push(("tape", tape.backward(&l).unwrap()));
    }
    let mut targets: Vec<(String, Var)> =
        m.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    targets.push(("input".into(), x.clone()));
    let eps = 1e-6;
    let mut checked = 0;
    for (source, grads) in &sources {
        for (name, var) in &targets {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"))
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let dims = var.as_tensor().dims().to_vec();
            let n = base.len();
            for k in 0..n.min(12) {
                let i = (k * 7919) % n;
                let mut p = base.clone();
                p[i] += eps;
                var.set(&Tensor::from_vec(p.clone(), dims.as_slice(), &Device::Cpu).unwrap())
                    .unwrap();
                let up = loss(&m, x.as_tensor());
                p[i] -= 2.0 * eps;
                var.set(&Tensor::from_vec(p, dims.as_slice(), &Device::Cpu).unwrap())
                    .unwrap();
                let down = loss(&m, x.as_tensor());
                var.set(&Tensor::from_vec(base.clone(), dims.as_slice(), &Device::Cpu).unwrap())
                    .unwrap();
                let fd = (up - down) / (2.0 * eps);
                let tol = 1e-5 * (1.0 + fd.abs());
                assert!(
                    (fd - g[i]).abs() <= tol,
                    "{name}[{i}]: {source} {} vs finite difference {fd}",
                    g[i]
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 20 * sources.len());
}

#[test]
fn conv_with_stride_padding_groups_and_depthwise() {
    let mut b = Builder::new("input", &[2, 4, 9, 9], 1);
    let y = b.conv_with(
        "input",
        ConvSpec {
            cin: 4,
            cout: 6,
            k: 3,
            stride: 2,
            groups: 2,
            bias: true,
        },
    );
    let y = b.conv_with(
        &y,
        ConvSpec {
            cin: 6,
            cout: 6,
            k: 3,
            stride: 1,
            groups: 6,
            bias: false,
        },
    );
    let y = b.conv_with(
        &y,
        ConvSpec {
            cin: 6,
            cout: 3,
            k: 1,
            stride: 1,
            groups: 1,
            bias: true,
        },
    );
    check(&b.finish(&y), &[2, 4, 9, 9], false);
}

/// torchvision's stem and a downsampling bottleneck at toy width: conv
/// 7×7/2 → BN → ReLU → max-pool 3×3/2 → [1×1 → BN → ReLU → 3×3/2 in 4
/// groups → BN → ReLU → 1×1 → BN] + [1×1/2 → BN] → ReLU → GAP → Gemm, on
/// odd sizes (21×21) so every tile has a partial edge.
fn stem_and_bottleneck() -> Graph {
    let mut b = Builder::new("input", &[2, 3, 21, 21], 5);
    let spec = ConvSpec::plain;
    let x = b.conv_with("input", spec(3, 8, 7, 2, 1));
    let x = b.bn(&x, 8);
    let x = b.relu(&x);
    let x = b.max_pool(&x, 3, 2, 1);
    let y = b.conv_with(&x, spec(8, 8, 1, 1, 1));
    let y = b.bn(&y, 8);
    let y = b.relu(&y);
    let y = b.conv_with(&y, spec(8, 8, 3, 2, 4));
    let y = b.bn(&y, 8);
    let y = b.relu(&y);
    let y = b.conv_with(&y, spec(8, 12, 1, 1, 1));
    let y = b.bn(&y, 12);
    let s = b.conv_with(&x, spec(8, 12, 1, 2, 1));
    let s = b.bn(&s, 12);
    let z = b.add(&y, &s);
    let z = b.relu(&z);
    let out = b.head(&z, 12, 5);
    b.finish(&out)
}

#[test]
fn imagenet_stem_and_resnext_bottleneck() {
    let g = stem_and_bottleneck();
    check(&g, &[2, 3, 21, 21], true);
    check(&g, &[2, 3, 21, 21], false);
}

#[test]
fn convs_on_small_planes_of_eight_images() {
    // 5×5 planes, 8 images, 3×3, pointwise, grouped and strided: the
    // im2col path's shapes in the deep stages of ImageNet-size nets
    let mut b = Builder::new("input", &[8, 4, 5, 5], 6);
    let spec = ConvSpec::plain;
    let y = b.conv_with("input", spec(4, 6, 3, 1, 1));
    let y = b.relu(&y);
    let y = b.conv_with(&y, spec(6, 6, 1, 1, 1));
    let y = b.conv_with(&y, spec(6, 6, 3, 2, 3));
    let y = b.relu(&y);
    let out = b.head(&y, 6, 3);
    check(&b.finish(&out), &[8, 4, 5, 5], false);
}

#[test]
fn max_pool_3x3_stride_2_pad_1() {
    let mut b = Builder::new("input", &[2, 3, 8, 8], 2);
    let y = b.conv("input", 3, 4, 3, 1);
    let y = b.max_pool(&y, 3, 2, 1);
    check(&b.finish(&y), &[2, 3, 8, 8], false);
}

#[test]
fn batch_norm_in_train_mode_gates_and_relu() {
    let mut b = Builder::new("input", &[4, 3, 6, 6], 3);
    let y = b.conv("input", 3, 5, 3, 1);
    let y = b.bn(&y, 5);
    let gate = "sss_gate/channel/b0c0";
    let t = sss_onnx::measure::inputs::normal(&[1, 5, 1, 1], 9);
    b.graph
        .initializers
        .insert(gate.into(), sss_onnx::graph::Tensor::F32(t));
    let y = b.node("Mul", &[&y, gate], vec![]);
    let y = b.relu(&y);
    let y = b.head(&y, 5, 3);
    let g = b.finish(&y);
    check(&g, &[4, 3, 6, 6], true);
    check(&g, &[4, 3, 6, 6], false);
}

/// The other chains train-mode BN fuses with: a block gate (one scalar)
/// without a ReLU, and a ReLU without a gate; and a BN whose output has a
/// second consumer, which must not fuse.
#[test]
fn batch_norm_with_a_block_gate_a_bare_relu_and_a_shared_output() {
    let mut b = Builder::new("input", &[4, 3, 6, 6], 3);
    let y = b.conv("input", 3, 5, 3, 1);
    let y = b.bn(&y, 5);
    let y = b.relu(&y);
    let z = b.conv(&y, 5, 5, 3, 1);
    let z = b.bn(&z, 5);
    let gate = "sss_gate/block/b0";
    let t = sss_onnx::measure::inputs::normal(&[1], 4);
    b.graph
        .initializers
        .insert(gate.into(), sss_onnx::graph::Tensor::F32(t));
    let z = b.node("Mul", &[&z, gate], vec![]);
    let z = b.node("Add", &[&z, &y], vec![]);
    let w = b.bn(&z, 5);
    let shared = b.relu(&w);
    let y = b.node("Add", &[&shared, &w], vec![]);
    let y = b.head(&y, 5, 3);
    let g = b.finish(&y);
    check(&g, &[4, 3, 6, 6], true);
}

/// BN-folded exports: a conv's bias fused with a channel gate and ReLU, with
/// a block gate alone, and with a bare ReLU.
#[test]
fn conv_bias_with_gates_and_relu() {
    let mut b = Builder::new("input", &[4, 3, 6, 6], 5);
    let spec = |cin, cout| ConvSpec {
        cin,
        cout,
        k: 3,
        stride: 1,
        groups: 1,
        bias: true,
    };
    let y = b.conv_with("input", spec(3, 5));
    let y = b.relu(&y);
    let z = b.conv_with(&y, spec(5, 5));
    let gate = "sss_gate/channel/b0c0";
    let t = sss_onnx::measure::inputs::normal(&[1, 5, 1, 1], 6);
    b.graph
        .initializers
        .insert(gate.into(), sss_onnx::graph::Tensor::F32(t));
    let z = b.node("Mul", &[&z, gate], vec![]);
    let z = b.relu(&z);
    let z = b.conv_with(&z, spec(5, 5));
    let block = "sss_gate/block/b0";
    let t = sss_onnx::measure::inputs::normal(&[1], 7);
    b.graph
        .initializers
        .insert(block.into(), sss_onnx::graph::Tensor::F32(t));
    let z = b.node("Mul", &[&z, block], vec![]);
    let y = b.node("Add", &[&z, &y], vec![]);
    let y = b.head(&y, 5, 3);
    let g = b.finish(&y);
    check(&g, &[4, 3, 6, 6], true);
}

#[test]
fn option_a_shortcut_slice_and_pad() {
    // a whole CIFAR ResNet-8 (n = 1): stage changes use Slice + Pad shortcuts
    let g = sss_onnx::graph::build::cifar_resnet(1, 4);
    check(&g, &[2, 3, 32, 32], true);
}

#[test]
fn running_statistics_follow_the_momentum() {
    let mut b = Builder::new("input", &[8, 2, 4, 4], 5);
    let y = b.bn("input", 2);
    let g = b.finish(&y);
    let mut m = Model::new(&g, &Device::Cpu).unwrap();
    let x = Tensor::from_vec(
        sss_onnx::measure::inputs::normal(&[8, 2, 4, 4], 6)
            .iter()
            .copied()
            .collect::<Vec<f32>>(),
        (8, 2, 4, 4),
        &Device::Cpu,
    )
    .unwrap();
    let bn = g.nodes[0].clone();
    let old_mean: Vec<f32> = m.stats[&bn.inputs[3]].to_vec1().unwrap();
    let (_, up) = m.forward(&x, true).unwrap();
    m.apply_stats(up);
    let new_mean: Vec<f32> = m.stats[&bn.inputs[3]].to_vec1().unwrap();
    // by hand: 0.9 · old + 0.1 · batch mean of channel c
    let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    for c in 0..2 {
        let vals: Vec<f32> = (0..8)
            .flat_map(|n| (0..16).map(move |i| (n, i)))
            .map(|(n, i)| xs[n * 32 + c * 16 + i])
            .collect();
        let mean = vals.iter().sum::<f32>() / vals.len() as f32;
        assert!((new_mean[c] - (0.9 * old_mean[c] + 0.1 * mean)).abs() < 1e-5);
    }
}

/// Nodes with no CPU kernel (LeakyRelu, a broadcasting Mul by a learned
/// tensor, a plain Add) between kernels, a value read by a kernel and by
/// such a node, and a weight shared by two convs: the training step's
/// backward runs those nodes on candle's autograd and must still add every
/// path's gradient.
#[test]
fn nodes_without_a_kernel_shared_values_and_a_shared_weight() {
    let mut b = Builder::new("input", &[2, 3, 6, 6], 5);
    let a = b.conv("input", 3, 4, 3, 1);
    let a = b.bn(&a, 4);
    let l = b.node("LeakyRelu", &[&a], vec![("alpha", Attr::Float(0.1))]);
    let s = b.weight("scale", &[1, 4, 6, 1], 0.5);
    let m = b.node("Mul", &[&l, &s], vec![]);
    let c = b.conv(&m, 4, 4, 3, 1);
    let w = b.graph.nodes.last().unwrap().inputs[1].clone();
    let d = b.node(
        "Conv",
        &[&l, &w],
        vec![
            ("kernel_shape", Attr::Ints(vec![3, 3])),
            ("pads", Attr::Ints(vec![1; 4])),
        ],
    );
    let sum = b.add(&c, &d);
    let sum = b.add(&sum, &a);
    let r = b.relu(&sum);
    let y = b.head(&r, 4, 3);
    check(&b.finish(&y), &[2, 3, 6, 6], true);
}

/// conv → BN → `act` → conv, in train and eval mode: the activation's
/// gradient against finite differences.
fn activation_graph(act: &str) -> Graph {
    let mut b = Builder::new("x", &[-1, 3, 6, 6], 21);
    let y = b.conv("x", 3, 4, 3, 1);
    let y = b.bn(&y, 4);
    let y = match act {
        "SiLU" => {
            let s = b.node("Sigmoid", &[&y], vec![]);
            b.node("Mul", &[&y, &s], vec![])
        }
        "ReLU6" => b.relu6(&y),
        "HardSigmoid" => b.node(
            "HardSigmoid",
            &[&y],
            vec![
                ("alpha", Attr::Float(1.0 / 6.0)),
                ("beta", Attr::Float(0.5)),
            ],
        ),
        op => b.node(op, &[&y], vec![]),
    };
    let y = b.conv(&y, 4, 2, 1, 1);
    b.finish(&y)
}

#[test]
fn sigmoid_hard_sigmoid_hard_swish_silu_and_relu6() {
    for act in ["Sigmoid", "HardSigmoid", "HardSwish", "SiLU", "ReLU6"] {
        let g = activation_graph(act);
        check(&g, &[2, 3, 6, 6], true);
        check(&g, &[2, 3, 6, 6], false);
    }
}

/// A ConvNeXt block: depthwise conv → channels last → LayerNorm → Linear
/// → GELU → Linear → channels first → layer scale, + x. `ln` is "op" or
/// "decomposed" (ReduceMean/Sub/Pow/Add/Sqrt/Div, γ, β as below opset 17);
/// `gelu` "op", "tanh" or "erf" (x · (erf(x/√2) + 1) · 0.5).
fn convnext_block(ln: &str, gelu: &str) -> Graph {
    let (c, h) = (4, 8);
    let mut b = Builder::new("x", &[-1, c as i64, 5, 5], 31);
    let y = b.conv_with(
        "x",
        ConvSpec {
            cin: c,
            cout: c,
            k: 3,
            stride: 1,
            groups: c,
            bias: true,
        },
    );
    let y = b.node(
        "Transpose",
        &[&y],
        vec![("perm", Attr::Ints(vec![0, 2, 3, 1]))],
    );
    let gamma = b.weight("gamma", &[c], 0.5);
    let beta = b.weight("beta", &[c], 0.5);
    let y = match ln {
        "op" => b.node(
            "LayerNormalization",
            &[&y, &gamma, &beta],
            vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(1e-6))],
        ),
        _ => {
            let axes = vec![("axes", Attr::Ints(vec![-1]))];
            let m = b.node("ReduceMean", &[&y], axes.clone());
            let d = b.node("Sub", &[&y, &m], vec![]);
            let two = b.weight("two", &[], 1.0);
            set_scalar(&mut b, &two, 2.0);
            let sq = b.node("Pow", &[&d, &two], vec![]);
            let v = b.node("ReduceMean", &[&sq], axes);
            let eps = b.weight("eps", &[], 1.0);
            set_scalar(&mut b, &eps, 1e-6);
            let v = b.node("Add", &[&v, &eps], vec![]);
            let s = b.node("Sqrt", &[&v], vec![]);
            let n = b.node("Div", &[&d, &s], vec![]);
            let n = b.node("Mul", &[&n, &gamma], vec![]);
            b.node("Add", &[&n, &beta], vec![])
        }
    };
    let w1 = b.weight("w1", &[c, h], 0.5);
    let b1 = b.weight("b1", &[h], 0.5);
    let y = b.node("MatMul", &[&y, &w1], vec![]);
    let y = b.node("Add", &[&y, &b1], vec![]);
    let y = match gelu {
        "op" => b.node("Gelu", &[&y], vec![]),
        "tanh" => b.node(
            "Gelu",
            &[&y],
            vec![("approximate", Attr::String(b"tanh".to_vec()))],
        ),
        _ => {
            let r2 = b.weight("sqrt2", &[], 1.0);
            set_scalar(&mut b, &r2, std::f32::consts::SQRT_2);
            let one = b.weight("one", &[], 1.0);
            set_scalar(&mut b, &one, 1.0);
            let half = b.weight("half", &[], 1.0);
            set_scalar(&mut b, &half, 0.5);
            let d = b.node("Div", &[&y, &r2], vec![]);
            let e = b.node("Erf", &[&d], vec![]);
            let e = b.node("Add", &[&e, &one], vec![]);
            let m = b.node("Mul", &[&y, &e], vec![]);
            b.node("Mul", &[&m, &half], vec![])
        }
    };
    let w2 = b.weight("w2", &[h, c], 0.5);
    let b2 = b.weight("b2", &[c], 0.5);
    let y = b.node("MatMul", &[&y, &w2], vec![]);
    let y = b.node("Add", &[&y, &b2], vec![]);
    let y = b.node(
        "Transpose",
        &[&y],
        vec![("perm", Attr::Ints(vec![0, 3, 1, 2]))],
    );
    let scale = b.weight("layer_scale", &[c, 1, 1], 1.0);
    let y = b.node("Mul", &[&y, &scale], vec![]);
    let y = b.node("Add", &[&y, "x"], vec![]);
    b.finish(&y)
}

fn set_scalar(b: &mut Builder, name: &str, v: f32) {
    if let Some(sss_onnx::graph::Tensor::F32(a)) = b.graph.initializers.get_mut(name) {
        a.fill(v);
    }
}

#[test]
fn convnext_block_layer_norm_gelu_and_channels_last_linears() {
    for (ln, gelu) in [("op", "op"), ("op", "tanh"), ("decomposed", "erf")] {
        let g = convnext_block(ln, gelu);
        // LayerNorm's γ and β, the Linears' weights and biases are learned
        let m = Model::new(&g, &Device::Cpu).unwrap();
        let learned = m.vars.len();
        assert_eq!(learned, if ln == "op" { 8 } else { 6 }, "{ln} {gelu}");
        check(&g, &[2, 4, 5, 5], true);
        check(&g, &[2, 4, 5, 5], false);
    }
}

/// A ViT encoder's attention sub-block as PyTorch writes it batch-first:
/// a class token expanded to the batch and concatenated, packed QKV,
/// heads split by Reshape/Transpose and picked by Gather, scaled scores,
/// Softmax, the heads merged back, the out-projection and the residual.
fn attention_block() -> Graph {
    let (t, d, h) = (3usize, 6usize, 2usize);
    let dh = d / h;
    let mut b = Builder::new("x", &[-1, t as i64, d as i64], 41);
    let cls = b.weight("cls", &[1, 1, d], 1.0);
    // [N, 1, D] with N read from the input's shape
    let sx = b.node("Shape", &["x"], vec![]);
    let zero = b.ints("zero", &[0]);
    let batch = b.node("Gather", &[&sx, &zero], vec![("axis", Attr::Int(0))]);
    let rest = b.ints("rest", &[1, d as i64]);
    let shape = b.node("Concat", &[&batch, &rest], vec![("axis", Attr::Int(0))]);
    let cls = b.node("Expand", &[&cls, &shape], vec![]);
    let y = b.node("Concat", &[&cls, "x"], vec![("axis", Attr::Int(1))]);
    let n = t + 1;
    let w = b.weight("w_qkv", &[d, 3 * d], 0.5);
    let bias = b.weight("b_qkv", &[3 * d], 0.5);
    let qkv = b.node("MatMul", &[&y, &w], vec![]);
    let qkv = b.node("Add", &[&qkv, &bias], vec![]);
    let s = b.ints("heads", &[0, n as i64, 3, h as i64, dh as i64]);
    let qkv = b.node("Reshape", &[&qkv, &s], vec![]);
    let qkv = b.node(
        "Transpose",
        &[&qkv],
        vec![("perm", Attr::Ints(vec![2, 0, 3, 1, 4]))],
    );
    let pick = |b: &mut Builder, k: i64| {
        let name = format!("pick{k}");
        b.graph.initializers.insert(
            name.clone(),
            sss_onnx::graph::Tensor::I64(
                ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[]), vec![k]).unwrap(),
            ),
        );
        b.node("Gather", &[&qkv, &name], vec![("axis", Attr::Int(0))])
    };
    let (q, k, v) = (pick(&mut b, 0), pick(&mut b, 1), pick(&mut b, 2));
    let kt = b.node(
        "Transpose",
        &[&k],
        vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))],
    );
    let scores = b.node("MatMul", &[&q, &kt], vec![]);
    let scale = b.weight("scale", &[], 1.0);
    set_scalar(&mut b, &scale, 1.0 / (dh as f32).sqrt());
    let scores = b.node("Mul", &[&scores, &scale], vec![]);
    let p = b.node("Softmax", &[&scores], vec![("axis", Attr::Int(-1))]);
    let o = b.node("MatMul", &[&p, &v], vec![]);
    let o = b.node(
        "Transpose",
        &[&o],
        vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))],
    );
    let s = b.ints("merge", &[0, n as i64, d as i64]);
    let o = b.node("Reshape", &[&o, &s], vec![]);
    let wo = b.weight("w_out", &[d, d], 0.5);
    let bo = b.weight("b_out", &[d], 0.5);
    let o = b.node("MatMul", &[&o, &wo], vec![]);
    let o = b.node("Add", &[&o, &bo], vec![]);
    let y = b.node("Add", &[&o, &y], vec![]);
    b.finish(&y)
}

#[test]
fn attention_softmax_heads_and_an_expanded_class_token() {
    let g = attention_block();
    let m = Model::new(&g, &Device::Cpu).unwrap();
    // the class token, QKV and out-projection weights and biases (the
    // scale is a constant of the export)
    assert_eq!(m.vars.len(), 5, "{:?}", m.vars.keys().collect::<Vec<_>>());
    check(&g, &[2, 3, 6], true);
    check(&g, &[2, 3, 6], false);
}
