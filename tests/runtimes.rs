//! ORT and tract agree with each other and with PyTorch's stored outputs on
//! every fixture; validate's exit codes; bench's JSON; ORT-absent fallback.

mod common;
use common::*;

#[test]
fn ort_and_tract_match_pytorch_on_every_fixture() {
    let (o, t) = (ort(), tract());
    for p in fixtures() {
        let (x, y) = reference(&arch(&p));
        let a = run_model(&p, &o, "input", &x);
        let b = run_model(&p, &t, "input", &x);
        // logits here are O(1..10): 1e-4 absolute is also ~1e-5 relative
        assert!(
            max_abs(&a, &y) <= 1e-4,
            "{} ORT vs PyTorch {}",
            p.display(),
            max_abs(&a, &y)
        );
        assert!(
            max_abs(&b, &y) <= 1e-4,
            "{} tract vs PyTorch {}",
            p.display(),
            max_abs(&b, &y)
        );
        assert!(max_abs(&a, &b) <= 1e-4, "{} ORT vs tract", p.display());
    }
}

#[test]
fn validate_passes_a_resaved_copy_and_fails_a_different_model() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let a = fixture("resnet20_a.legacy13.onnx");
    let copy = dir.path().join("copy.onnx");
    let g = load(&a);
    sss_onnx::onnx::convert::save(&g, &copy, &Default::default()).unwrap();
    for rt in ["ort", "tract"] {
        let ok = run(&[
            "validate",
            a.to_str().unwrap(),
            copy.to_str().unwrap(),
            "--runtime",
            rt,
        ]);
        assert_eq!(ok.status.code(), Some(0), "{rt}: {}", stderr(&ok));
        let other = fixture("resnet20_fmnist.legacy13.onnx");
        let bad = run(&[
            "validate",
            a.to_str().unwrap(),
            other.to_str().unwrap(),
            "--runtime",
            rt,
        ]);
        assert_eq!(bad.status.code(), Some(1), "{rt}: {}", stderr(&bad));
        assert!(stderr(&bad).contains("validation failed"));
    }
}

#[test]
fn validate_with_real_data_reports_samples() {
    let a = fixture("resnet20_fmnist.legacy13.onnx");
    let b = fixture("resnet20_fmnist.legacy13.onnx");
    let data = fixture("fmnist");
    let o = run(&[
        "validate",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--samples",
        "64",
        "--json",
        "--runtime",
        "tract",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["real_samples"], 64);
    assert_eq!(v["outputs"][0]["max_abs"], 0.0);
}

#[test]
fn bench_json_has_the_documented_schema() {
    require_ort();
    let a = fixture("resnet20_a.legacy13.onnx");
    let b = fixture("resnet14_b.legacy13.onnx");
    let o = run(&[
        "bench",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--batch",
        "1,4",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--json",
        "--runtime",
        "ort",
        "--threads",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["runtime"].as_str().unwrap().contains("onnxruntime"));
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 4);
    for l in r {
        for k in [
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "mean_ms",
            "throughput_per_s",
            "speedup_vs_first",
        ] {
            assert!(l[k].as_f64().unwrap() > 0.0, "{k} in {l}");
        }
        assert!(l["p50_ms"].as_f64() <= l["p99_ms"].as_f64());
    }
    // MACs beside each figure come from the graph: 40.55 M vs 6.78 M at batch 1
    assert_eq!(r[0]["macs"], 40_551_040u64);
    assert_eq!(r[1]["macs"], 6_775_104u64);
    assert_eq!(r[2]["macs"], 4 * 40_551_040u64);
    let red = r[1]["mac_reduction_vs_first"].as_f64().unwrap();
    assert!((red - 40_551_040.0 / 6_775_104.0).abs() < 1e-9);
}

#[test]
fn without_the_ort_library_commands_fall_back_to_tract_and_say_so() {
    let a = fixture("resnet14_b.legacy13.onnx");
    let o = bin()
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .args([
            "bench",
            a.to_str().unwrap(),
            "--iters",
            "2",
            "--warmup",
            "0",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("using tract instead"), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["runtime"].as_str().unwrap().contains("tract"));
    // asking for ORT explicitly is a clear error, not a panic
    let o = bin()
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .args(["bench", a.to_str().unwrap(), "--runtime", "ort"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("fetch-onnxruntime"), "{}", stderr(&o));
}

#[test]
fn with_the_library_auto_picks_onnx_runtime() {
    require_ort();
    let a = fixture("resnet14_b.legacy13.onnx");
    let o = run(&[
        "bench",
        a.to_str().unwrap(),
        "--iters",
        "2",
        "--warmup",
        "0",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["runtime"].as_str().unwrap().contains("onnxruntime"));
}

#[test]
fn eval_reports_the_recorded_accuracy_in_both_runtimes() {
    // the export script measured 92.70 % on this 1000-image subset in PyTorch
    let m = fixture("resnet20_fmnist.legacy13.onnx");
    let d = fixture("fmnist");
    for rt in ["ort", "tract"] {
        if rt == "ort" {
            require_ort();
        }
        let o = run(&[
            "eval",
            m.to_str().unwrap(),
            "--data",
            d.to_str().unwrap(),
            "--json",
            "--runtime",
            rt,
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["samples"], 1000);
        assert!((v["top1"].as_f64().unwrap() - 0.927).abs() < 1e-9, "{v}");
    }
}
