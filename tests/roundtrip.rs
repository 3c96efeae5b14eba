//! load → save → load keeps the graph, with and without external data, and
//! ONNX Runtime gives the same outputs on the re-saved file.

mod common;
use common::*;
use sss_onnx::onnx::convert;
use sss_onnx::onnx::{self, WriteOptions};

#[test]
fn every_fixture_round_trips_in_memory_and_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    for p in fixtures() {
        let g = load_file(&p);
        assert_eq!(
            convert::from_proto(convert::to_proto(&g)).unwrap(),
            g,
            "{}",
            p.display()
        );
        for (i, opts) in [WriteOptions::default(), WriteOptions::external()]
            .iter()
            .enumerate()
        {
            let out = dir
                .path()
                .join(format!("{i}_{}", p.file_name().unwrap().to_string_lossy()));
            convert::save(&g, &out, opts).unwrap();
            let back = load_file(&out);
            assert_eq!(
                back,
                g,
                "{} (external data: {})",
                p.display(),
                opts.external_data
            );
            assert_eq!(back.opsets, g.opsets);
            assert!(!back.initializers.is_empty());
            let data = out.with_file_name(format!(
                "{}.data",
                out.file_name().unwrap().to_string_lossy()
            ));
            assert_eq!(
                data.is_file(),
                opts.external_data,
                "data file for {}",
                out.display()
            );
        }
    }
}

#[test]
fn external_data_fixture_matches_its_inline_twin() {
    for arch in ["resnet20_a", "resnet14_b"] {
        let ext = load_file(&fixture(&format!("{arch}.dynamo18ext.onnx")));
        let inline = load_file(&fixture(&format!("{arch}.dynamo18.onnx")));
        assert_eq!(ext.initializers.len(), inline.initializers.len());
        let mut same = 0;
        for (k, t) in &inline.initializers {
            if ext.initializers.get(k) == Some(t) {
                same += 1;
            }
        }
        assert_eq!(
            same,
            inline.initializers.len(),
            "{arch}: initializer bytes differ"
        );
    }
}

#[test]
fn metadata_doc_strings_and_unknown_fields_survive() {
    let p = fixture("tv_basic.legacy13.onnx");
    let mut m = onnx::read_model(&p).unwrap();
    m.doc_string = Some("model doc".into());
    m.metadata_props.push(onnx::proto::StringStringEntryProto {
        key: Some("author".into()),
        value: Some("sss-onnx tests".into()),
    });
    let gp = m.graph.as_mut().unwrap();
    gp.doc_string = Some("graph doc".into());
    gp.node[0].doc_string = Some("node doc".into());
    m.functions.push(onnx::proto::FunctionProto {
        name: Some("f".into()),
        domain: Some("custom".into()),
        ..Default::default()
    });
    let g = convert::from_proto(m.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.onnx");
    convert::save(&g, &out, &WriteOptions::default()).unwrap();
    let back = onnx::read_model(&out).unwrap();
    assert_eq!(back.doc_string.as_deref(), Some("model doc"));
    assert_eq!(back.metadata_props, m.metadata_props);
    assert_eq!(back.functions, m.functions);
    let bg = back.graph.unwrap();
    assert_eq!(bg.doc_string.as_deref(), Some("graph doc"));
    assert_eq!(bg.node[0].doc_string.as_deref(), Some("node doc"));
    assert_eq!(bg.node.len(), m.graph.unwrap().node.len());
}

#[test]
fn resaved_files_run_the_same_in_onnx_runtime() {
    let opts = ort();
    let dir = tempfile::tempdir().unwrap();
    for p in fixtures() {
        let (x, _) = reference(&arch(&p));
        let g = load_file(&p);
        let out = dir.path().join(p.file_name().unwrap());
        convert::save(&g, &out, &WriteOptions::external()).unwrap();
        let a = run_model(&p, &opts, "input", &x);
        let b = run_model(&out, &opts, "input", &x);
        assert_eq!(a, b, "{}", p.display());
    }
}

#[test]
fn typed_fields_decode_like_raw_data() {
    use sss_onnx::onnx::convert::tensor_from_proto;
    use sss_onnx::onnx::proto::TensorProto;
    let typed = TensorProto {
        dims: vec![2, 2],
        data_type: Some(1),
        float_data: vec![1.0, -2.0, 3.5, 0.25],
        ..Default::default()
    };
    let raw = TensorProto {
        dims: vec![2, 2],
        data_type: Some(1),
        raw_data: Some(
            [1.0f32, -2.0, 3.5, 0.25]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        ..Default::default()
    };
    assert_eq!(
        tensor_from_proto(&typed).unwrap(),
        tensor_from_proto(&raw).unwrap()
    );
    let ints = TensorProto {
        dims: vec![3],
        data_type: Some(6), // INT32 in int32_data
        int32_data: vec![-1, 7, 1 << 20],
        ..Default::default()
    };
    let t = tensor_from_proto(&ints).unwrap();
    assert_eq!(
        t.to_i64().unwrap().into_raw_vec_and_offset().0,
        vec![-1, 7, 1 << 20]
    );
    let short = TensorProto {
        dims: vec![3],
        data_type: Some(7),
        int64_data: vec![1, 2],
        ..Default::default()
    };
    let e = tensor_from_proto(&short).unwrap_err().to_string();
    assert!(e.contains("int64_data holds 2 values"), "{e}");
}
