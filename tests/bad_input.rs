//! Malformed and unusual files: a clear error naming the file and the node or
//! field, exit code 2, never a panic; an unknown op loads and is reported.

mod common;
use common::*;
use prost::Message;
use sss_onnx::onnx::proto::{ModelProto, TensorProto};
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn model() -> ModelProto {
    sss_onnx::onnx::read_model(&fixture("resnet20_a.legacy13.onnx")).unwrap()
}

/// Runs `inspect` on `p` and checks the failure: exit 2, no panic, and
/// stderr mentioning the file and every `needles`.
fn fails(p: &Path, needles: &[&str]) {
    let o = run(&["inspect", p.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{}: {err}", p.display());
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains(&p.file_name().unwrap().to_string_lossy().to_string()),
        "file not named: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
}

#[test]
fn empty_truncated_random_and_png_files() {
    let d = tempfile::tempdir().unwrap();
    fails(&write(d.path(), "empty.onnx", b""), &["empty"]);
    let bytes = std::fs::read(fixture("resnet20_a.legacy13.onnx")).unwrap();
    fails(
        &write(d.path(), "truncated.onnx", &bytes[..bytes.len() / 2]),
        &["truncated"],
    );
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fails(
        &write(d.path(), "noise.onnx", &noise),
        &["not a valid ONNX model"],
    );
    let mut png = Vec::new();
    image::DynamicImage::new_rgb8(4, 4)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    fails(&write(d.path(), "picture.onnx", &png), &["PNG image"]);
    fails(&d.path().join("does-not-exist.onnx"), &["No such file"]);
}

#[test]
fn missing_initializer_names_the_node_and_input() {
    let d = tempfile::tempdir().unwrap();
    let mut m = model();
    let g = m.graph.as_mut().unwrap();
    let conv = g
        .node
        .iter()
        .find(|n| n.op_type() == "Conv")
        .unwrap()
        .clone();
    g.initializer.retain(|t| t.name() != conv.input[1]);
    let p = write(d.path(), "missing_init.onnx", &m.encode_to_vec());
    fails(&p, &[conv.name(), &conv.input[1], "produced by no node"]);
}

#[test]
fn missing_external_data_file_names_the_tensor_and_file() {
    let d = tempfile::tempdir().unwrap();
    let src = fixture("resnet14_b.dynamo18ext.onnx");
    let p = d.path().join("lonely.onnx");
    std::fs::copy(&src, &p).unwrap();
    fails(
        &p,
        &[
            "external data",
            "resnet14_b.dynamo18ext.onnx.data",
            "cannot open",
        ],
    );
    // a location outside the model's folder is refused
    let mut m = ModelProto::decode(std::fs::read(&src).unwrap().as_slice()).unwrap();
    for t in &mut m.graph.as_mut().unwrap().initializer {
        for e in &mut t.external_data {
            if e.key() == "location" {
                e.value = Some("../../etc/passwd".into());
            }
        }
    }
    let p = write(d.path(), "escape.onnx", &m.encode_to_vec());
    fails(&p, &["leaves the model's folder"]);
}

#[test]
fn a_node_cycle_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let mut m = model();
    let g = m.graph.as_mut().unwrap();
    let last = g.node.last().unwrap().output[0].clone();
    let first_conv = g.node.iter_mut().find(|n| n.op_type() == "Conv").unwrap();
    let name = first_conv.name().to_string();
    first_conv.input[0] = last;
    let p = write(d.path(), "cycle.onnx", &m.encode_to_vec());
    fails(&p, &["cycle", &name]);
}

#[test]
fn huge_or_overflowing_dims_are_refused_before_allocating() {
    let d = tempfile::tempdir().unwrap();
    for (file, dims, needle) in [
        ("overflow.onnx", vec![1i64 << 40, 1 << 40], "overflow"),
        (
            "huge.onnx",
            vec![1i64 << 20, 1 << 20],
            "refusing to allocate",
        ),
        ("negative.onnx", vec![-3, 4], "negative dimension"),
    ] {
        let mut m = model();
        m.graph.as_mut().unwrap().initializer.push(TensorProto {
            name: Some("giant".into()),
            dims,
            data_type: Some(1),
            raw_data: Some(vec![0; 16]),
            ..Default::default()
        });
        let p = write(d.path(), file, &m.encode_to_vec());
        fails(&p, &["giant", needle]);
    }
}

#[test]
fn bad_attribute_type_names_node_and_attribute() {
    let d = tempfile::tempdir().unwrap();
    let mut m = model();
    let g = m.graph.as_mut().unwrap();
    let conv = g.node.iter_mut().find(|n| n.op_type() == "Conv").unwrap();
    let name = conv.name().to_string();
    for a in &mut conv.attribute {
        if a.name() == "strides" {
            // strides as a float: a type error the shape rule must report
            *a = sss_onnx::onnx::proto::AttributeProto {
                name: Some("strides".into()),
                f: Some(2.0),
                r#type: Some(1),
                ..Default::default()
            };
        }
    }
    let p = write(d.path(), "badattr.onnx", &m.encode_to_vec());
    let o = run(&["inspect", p.to_str().unwrap()]);
    // the graph loads; inspection reports the node and attribute it could not use
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains(&name) && s.contains("`strides`"), "{s}");
}

#[test]
fn an_unknown_op_loads_round_trips_and_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let mut m = model();
    let g = m.graph.as_mut().unwrap();
    // the Relu inside the first residual branch becomes a custom op
    let relu = g
        .node
        .iter_mut()
        .filter(|n| n.op_type() == "Relu")
        .nth(1)
        .unwrap();
    relu.op_type = Some("FancyRelu".into());
    relu.domain = Some("com.example".into());
    let name = relu.name().to_string();
    let p = write(d.path(), "custom.onnx", &m.encode_to_vec());
    let o = run(&["inspect", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains(&format!("node `{name}`: op not known")), "{s}");
    // its block is no longer proven residual: 8 of 9 found, the Add listed as left out
    assert!(s.contains("blocks     8 in 3 stages"), "{s}");
    assert!(s.contains("left out   Add"), "{s}");
    let g = load(&p);
    let out = d.path().join("custom2.onnx");
    sss_onnx::onnx::convert::save(&g, &out, &Default::default()).unwrap();
    assert_eq!(load(&out), g);
}

/// Asking for a GPU where there is none is an error (exit 2) that says what
/// is missing, never a silent CPU run: ORT's CUDA provider with the CPU
/// library, and CUDA training in a build without the `cuda` feature.
#[test]
fn gpu_requests_without_a_gpu_build_fail_clearly() {
    require_ort();
    let m = fixture("resnet20_a.legacy13.onnx");
    let m = m.to_str().unwrap();
    let o = run(&["validate", m, m, "--runtime", "ort", "--ep", "cuda"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("CUDA execution provider"),
        "{}",
        stderr(&o)
    );
    let o = run(&["validate", m, m, "--runtime", "tract", "--ep", "cuda"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("tract runs on the CPU only"),
        "{}",
        stderr(&o)
    );
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("t.onnx");
    let data = fixture("fmnist");
    let args = |dev: &'static str| {
        run(&[
            "train",
            fixture("resnet20_fmnist.legacy13.onnx").to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--steps",
            "1",
            "--device",
            dev,
            "-o",
            out.to_str().unwrap(),
        ])
    };
    if !cfg!(feature = "cuda") {
        let o = args("cuda");
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("built without CUDA"), "{}", stderr(&o));
    }
    let o = args("tpu:0");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("expected auto, cpu, cuda or cuda:N"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    // checked before any work: the (missing) model is never opened
    for dev in ["tpu:0", "cuda"] {
        if dev == "cuda" && cfg!(feature = "cuda") {
            continue;
        }
        let o = run(&["compress", "/nonexistent/m.onnx", "--device", dev]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(!stderr(&o).contains("nonexistent"), "{}", stderr(&o));
    }
}

#[test]
fn version_names_the_runtime_library_and_the_build() {
    let lib = sss_onnx::runtime::find_onnxruntime().expect("ONNX Runtime fetched");
    let o = bin()
        .arg("--version")
        .env("ORT_DYLIB_PATH", &lib.path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let t = stdout(&o);
    assert!(
        t.starts_with(&format!("sss-onnx {}", env!("CARGO_PKG_VERSION"))),
        "{t}"
    );
    assert!(t.contains(&lib.path.display().to_string()), "{t}");
    let cuda = if cfg!(feature = "cuda") {
        "cuda built in"
    } else {
        "cuda not built"
    };
    assert!(t.contains(cuda), "{t}");
    let o = bin()
        .arg("--version")
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains("onnx runtime: not found"),
        "{}",
        stdout(&o)
    );
    // no command: the help and a usage exit code
    let o = bin().output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn shell_completions_know_the_commands_and_flags() {
    let o = bin().args(["completions", "bash"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let t = stdout(&o);
    for w in [
        "sss-onnx",
        "compress",
        "--target-macs",
        "--restore-bn",
        "--pad-value",
    ] {
        assert!(t.contains(w), "{w} missing");
    }
    let o = bin().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn compress_help_is_grouped_with_examples() {
    let o = run(&["compress", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let t = stdout(&o);
    for h in [
        "Training:",
        "Preprocessing",
        "Runtime:",
        "Output:",
        "Examples:",
    ] {
        assert!(t.lines().any(|l| l.starts_with(h)), "{h} missing:\n{t}");
    }
    assert!(t.contains("sss-onnx compress fixtures/resnet20_fmnist.legacy13.onnx"));
}
