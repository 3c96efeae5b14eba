//! Building graphs in code: synthetic models for tests and benchmarks (full
//! size ResNets for the MAC checks) and nodes for the rewrites.

use super::tensor::dtype;
use super::{Attr, Dim, Graph, Node, Opset, Preserved, Tensor, ValueInfo};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};

/// Geometry of a built convolution.
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub groups: usize,
    pub bias: bool,
}

impl ConvSpec {
    /// A conv without bias (the ResNet kind).
    pub fn plain(cin: usize, cout: usize, k: usize, stride: usize, groups: usize) -> Self {
        ConvSpec {
            cin,
            cout,
            k,
            stride,
            groups,
            bias: false,
        }
    }
}

/// A graph under construction with a seeded source of weights.
pub struct Builder {
    pub graph: Graph,
    rng: rand::rngs::StdRng,
    counter: usize,
}

impl Builder {
    pub fn new(input: &str, shape: &[i64], seed: u64) -> Self {
        let graph = Graph {
            name: "built".into(),
            nodes: Vec::new(),
            inputs: vec![ValueInfo::tensor(
                input,
                dtype::FLOAT,
                shape
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| {
                        if i == 0 && d < 0 {
                            Dim::Param("N".into())
                        } else {
                            Dim::Fixed(d)
                        }
                    })
                    .collect(),
            )],
            outputs: Vec::new(),
            value_info: Vec::new(),
            initializers: Default::default(),
            opsets: vec![Opset {
                domain: String::new(),
                version: 17,
            }],
            ir_version: 8,
            producer_name: "sss-onnx".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            metadata: Vec::new(),
            shell: Preserved::default(),
        };
        Builder {
            graph,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            counter: 0,
        }
    }

    fn name(&mut self, base: &str) -> String {
        self.counter += 1;
        format!("{base}_{}", self.counter)
    }

    /// A random initializer with values in ±scale.
    pub fn weight(&mut self, base: &str, shape: &[usize], scale: f32) -> String {
        let name = self.name(base);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| self.rng.random_range(-scale..scale))
            .collect();
        let a = ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape matches");
        self.graph.initializers.insert(name.clone(), Tensor::F32(a));
        name
    }

    pub fn ints(&mut self, base: &str, v: &[i64]) -> String {
        let name = self.name(base);
        let a = ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).expect("1-D");
        self.graph.initializers.insert(name.clone(), Tensor::I64(a));
        name
    }

    /// Appends a node and returns its (first) output name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let out = self.name(&op.to_lowercase());
        let mut n = Node::new(op, &out, inputs, &[&out]);
        for (k, v) in attrs {
            n.set_attr(k, v);
        }
        self.graph.nodes.push(n);
        out
    }

    /// Conv k×k (stride, pad k/2, no bias), the ResNet kind.
    pub fn conv(&mut self, x: &str, cin: usize, cout: usize, k: usize, stride: usize) -> String {
        self.conv_with(
            x,
            ConvSpec {
                cin,
                cout,
                k,
                stride,
                groups: 1,
                bias: false,
            },
        )
    }

    pub fn conv_with(&mut self, x: &str, c: ConvSpec) -> String {
        let scale = (2.0 / (c.cin / c.groups * c.k * c.k) as f32).sqrt();
        let w = self.weight("w", &[c.cout, c.cin / c.groups, c.k, c.k], scale);
        let mut ins = vec![x.to_string(), w];
        if c.bias {
            ins.push(self.weight("b", &[c.cout], 0.1));
        }
        let p = (c.k / 2) as i64;
        let refs: Vec<&str> = ins.iter().map(|s| s.as_str()).collect();
        self.node(
            "Conv",
            &refs,
            vec![
                ("kernel_shape", Attr::Ints(vec![c.k as i64; 2])),
                ("strides", Attr::Ints(vec![c.stride as i64; 2])),
                ("pads", Attr::Ints(vec![p; 4])),
                ("group", Attr::Int(c.groups as i64)),
            ],
        )
    }

    /// BatchNormalization with non-trivial statistics.
    pub fn bn(&mut self, x: &str, c: usize) -> String {
        let s = self.weight("bn_scale", &[c], 0.25);
        self.shift(&s, 1.0);
        let b = self.weight("bn_bias", &[c], 0.1);
        let m = self.weight("bn_mean", &[c], 0.1);
        let v = self.weight("bn_var", &[c], 0.25);
        self.shift(&v, 1.0);
        self.node(
            "BatchNormalization",
            &[x, &s, &b, &m, &v],
            vec![("epsilon", Attr::Float(1e-5))],
        )
    }

    fn shift(&mut self, name: &str, by: f32) {
        if let Some(Tensor::F32(a)) = self.graph.initializers.get_mut(name) {
            a.mapv_inplace(|v| v + by);
        }
    }

    /// Max-pool k×k with this stride and padding on every side.
    pub fn max_pool(&mut self, x: &str, k: i64, stride: i64, pad: i64) -> String {
        self.node(
            "MaxPool",
            &[x],
            vec![
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("strides", Attr::Ints(vec![stride, stride])),
                ("pads", Attr::Ints(vec![pad, pad, pad, pad])),
            ],
        )
    }

    pub fn relu(&mut self, x: &str) -> String {
        self.node("Relu", &[x], vec![])
    }

    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", &[a, b], vec![])
    }

    /// Gemm head: global average pool, flatten, fully connected.
    pub fn head(&mut self, x: &str, c: usize, classes: usize) -> String {
        let p = self.node("GlobalAveragePool", &[x], vec![]);
        let f = self.node("Flatten", &[&p], vec![("axis", Attr::Int(1))]);
        let w = self.weight("fc_w", &[classes, c], (1.0 / c as f32).sqrt());
        let b = self.weight("fc_b", &[classes], 0.1);
        self.node("Gemm", &[&f, &w, &b], vec![("transB", Attr::Int(1))])
    }

    pub fn finish(mut self, output: &str) -> Graph {
        self.graph.outputs.push(ValueInfo::tensor(
            output,
            dtype::FLOAT,
            vec![Dim::Param("N".into()), Dim::Unknown],
        ));
        self.graph
    }
}

/// He et al.'s CIFAR ResNet-(6n+2) with option-A shortcuts (Slice + Pad).
pub fn cifar_resnet(n: usize, seed: u64) -> Graph {
    let mut b = Builder::new("input", &[-1, 3, 32, 32], seed);
    let mut x = b.conv("input", 3, 16, 3, 1);
    x = b.bn(&x, 16);
    x = b.relu(&x);
    let mut cin = 16;
    for (stage, w) in [16usize, 32, 64].into_iter().enumerate() {
        for j in 0..n {
            let stride = if stage > 0 && j == 0 { 2 } else { 1 };
            let mut y = b.conv(&x, cin, w, 3, stride);
            y = b.bn(&y, w);
            y = b.relu(&y);
            y = b.conv(&y, w, w, 3, 1);
            y = b.bn(&y, w);
            let sc = if stride != 1 || cin != w {
                let starts = b.ints("starts", &[0, 0]);
                let ends = b.ints("ends", &[i64::MAX, i64::MAX]);
                let axes = b.ints("axes", &[2, 3]);
                let steps = b.ints("steps", &[2, 2]);
                let s = b.node("Slice", &[&x, &starts, &ends, &axes, &steps], vec![]);
                let p = ((w - cin) / 2) as i64;
                let pads = b.ints("pads", &[0, p, 0, 0, 0, p, 0, 0]);
                b.node("Pad", &[&s, &pads], vec![])
            } else {
                x.clone()
            };
            let s = b.add(&y, &sc);
            x = b.relu(&s);
            cin = w;
        }
    }
    let out = b.head(&x, 64, 10);
    b.finish(&out)
}

/// torchvision's ResNet layout: `bottleneck` selects ResNet-50-style blocks.
pub fn torchvision_resnet(
    layers: [usize; 4],
    bottleneck: bool,
    width: usize,
    classes: usize,
    seed: u64,
) -> Graph {
    torchvision_net(layers, bottleneck, width, 1, width, classes, seed)
}

/// torchvision's `resnext50_32x4d` family: bottlenecks whose 3×3 conv has
/// `groups` groups of `width_per_group` channels per 64 planes.
pub fn torchvision_resnext(
    layers: [usize; 4],
    groups: usize,
    width_per_group: usize,
    classes: usize,
    seed: u64,
) -> Graph {
    torchvision_net(layers, true, 64, groups, width_per_group, classes, seed)
}

/// A torchvision ResNet/ResNeXt at 224×224: the inner width of a
/// bottleneck is `planes · width_per_group / width · groups`, as there.
fn torchvision_net(
    layers: [usize; 4],
    bottleneck: bool,
    width: usize,
    groups: usize,
    width_per_group: usize,
    classes: usize,
    seed: u64,
) -> Graph {
    let mut b = Builder::new("input", &[-1, 3, 224, 224], seed);
    let mut x = b.conv("input", 3, width, 7, 2);
    x = b.bn(&x, width);
    x = b.relu(&x);
    x = b.max_pool(&x, 3, 2, 1);
    let expansion = if bottleneck { 4 } else { 1 };
    let mut cin = width;
    for (stage, &count) in layers.iter().enumerate() {
        let planes = width << stage;
        for j in 0..count {
            let stride = if stage > 0 && j == 0 { 2 } else { 1 };
            let cout = planes * expansion;
            let y = if bottleneck {
                let inner = planes * width_per_group / width * groups;
                let mut y = b.conv(&x, cin, inner, 1, 1);
                y = b.bn(&y, inner);
                y = b.relu(&y);
                y = b.conv_with(&y, ConvSpec::plain(inner, inner, 3, stride, groups));
                y = b.bn(&y, inner);
                y = b.relu(&y);
                y = b.conv(&y, inner, cout, 1, 1);
                b.bn(&y, cout)
            } else {
                let mut y = b.conv(&x, cin, planes, 3, stride);
                y = b.bn(&y, planes);
                y = b.relu(&y);
                y = b.conv(&y, planes, planes, 3, 1);
                b.bn(&y, planes)
            };
            let sc = if stride != 1 || cin != cout {
                let p = b.conv(&x, cin, cout, 1, stride);
                b.bn(&p, cout)
            } else {
                x.clone()
            };
            let s = b.add(&y, &sc);
            x = b.relu(&s);
            cin = cout;
        }
    }
    let out = b.head(&x, cin, classes);
    b.finish(&out)
}

impl Builder {
    /// ReLU6 as PyTorch exports it: Clip(x, 0, 6) with bound inputs.
    pub fn relu6(&mut self, x: &str) -> String {
        let lo = self.scalar("clip_min", 0.0);
        let hi = self.scalar("clip_max", 6.0);
        self.node("Clip", &[x, &lo, &hi], vec![])
    }

    /// A scalar float initializer.
    pub fn scalar(&mut self, base: &str, v: f32) -> String {
        let name = self.weight(base, &[], 1.0);
        if let Some(Tensor::F32(a)) = self.graph.initializers.get_mut(&name) {
            a.fill(v);
        }
        name
    }
}

/// torchvision's `mobilenet_v2` at `width` (the stem's channels; 32 in the
/// paper) and `expansion` (6): the inverted-residual table (t, c, n, s) of
/// Sandler et al. with every width scaled by `width / 32`, ReLU6 as Clip,
/// and an input of `size`×`size`.
pub fn mobilenet_v2(width: usize, expansion: usize, size: i64, classes: usize, seed: u64) -> Graph {
    let scale = |c: usize| (c * width / 32).max(1);
    let mut b = Builder::new("input", &[-1, 3, size, size], seed);
    let stem = scale(32);
    let mut x = b.conv_with("input", ConvSpec::plain(3, stem, 3, 2, 1));
    x = b.bn(&x, stem);
    x = b.relu6(&x);
    let mut cin = stem;
    let table = [
        (1, 16, 1, 1),
        (expansion, 24, 2, 2),
        (expansion, 32, 3, 2),
        (expansion, 64, 4, 2),
        (expansion, 96, 3, 1),
        (expansion, 160, 3, 2),
        (expansion, 320, 1, 1),
    ];
    for (t, c, n, s) in table {
        let cout = scale(c);
        for j in 0..n {
            let stride = if j == 0 { s } else { 1 };
            let hidden = cin * t;
            let mut y = x.clone();
            if t != 1 {
                y = b.conv(&y, cin, hidden, 1, 1);
                y = b.bn(&y, hidden);
                y = b.relu6(&y);
            }
            y = b.conv_with(&y, ConvSpec::plain(hidden, hidden, 3, stride, hidden));
            y = b.bn(&y, hidden);
            y = b.relu6(&y);
            y = b.conv(&y, hidden, cout, 1, 1);
            y = b.bn(&y, cout);
            x = if stride == 1 && cin == cout {
                b.add(&x, &y)
            } else {
                y
            };
            cin = cout;
        }
    }
    let last = scale(1280).max(1280 * width / 32);
    x = b.conv(&x, cin, last, 1, 1);
    x = b.bn(&x, last);
    x = b.relu6(&x);
    let out = b.head(&x, last, classes);
    b.finish(&out)
}
