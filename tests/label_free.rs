//! `compress` without labels: a folder of unlabelled images at mixed
//! sizes in nested folders trains by distillation from the original, and
//! the report's held-out figure is the pruned file's top-1 agreement with
//! the original file, recomputed here from both files' outputs in ONNX
//! Runtime.

mod common;
use common::*;
use sss_onnx::data::{self, Spec, Split};

/// The bundled test images as PNG/JPEG files in nested folders, a fifth
/// of them enlarged to 34×34, with the Fashion-MNIST normalisation.
fn unlabelled_folder(dir: &std::path::Path) {
    let src = data::load(&fixture("fmnist"), Split::Test).unwrap();
    for i in 0..300 {
        let px = src.image(i).unwrap();
        let mut img = image::GrayImage::from_raw(28, 28, px.to_vec()).unwrap();
        if i % 5 == 0 {
            img = image::imageops::resize(&img, 34, 34, image::imageops::FilterType::Triangle);
        }
        let sub = dir.join(["x", "y/z"][i % 2]);
        std::fs::create_dir_all(&sub).unwrap();
        let ext = if i % 7 == 0 { "jpg" } else { "png" };
        img.save(sub.join(format!("{i:03}.{ext}"))).unwrap();
    }
    std::fs::write(
        dir.join("dataset.json"),
        r#"{"mean": [0.286, 0.286, 0.286], "std": [0.353, 0.353, 0.353], "pad_value": "black"}"#,
    )
    .unwrap();
}

/// `compress` of `model` into `out` for 12 steps at 0.8 of the MACs,
/// timed briefly, in ONNX Runtime, the report on stdout; `extra` added.
fn short_compress(
    model: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "compress",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--steps",
        "12",
        "--batch-size",
        "32",
        "--target-macs",
        "0.8",
        "--bench-iters",
        "2",
        "--bench-batch",
        "1",
        "--runtime",
        "ort",
        "--json",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

fn argmax_rows(y: &ndarray::ArrayD<f32>) -> Vec<usize> {
    y.outer_iter()
        .map(|r| {
            let mut best = 0;
            for (k, &v) in r.iter().enumerate() {
                if v > r[best] {
                    best = k;
                }
            }
            best
        })
        .collect()
}

#[test]
fn compress_learns_from_the_original_on_images_without_labels() {
    require_ort();
    let d = tempfile::tempdir().unwrap();
    let images = d.path().join("images");
    unlabelled_folder(&images);
    let input = fixture("resnet20_fmnist.legacy13.onnx");
    let out = d.path().join("r20.sss.onnx");
    let o = short_compress(&input, &out, &["--data", images.to_str().unwrap()]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(e.contains("the data has no labels"), "{e}");
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["data"]["labelled"], false);
    assert_eq!(r["data"]["metric"], "top-1 agreement with the original");
    let objective = r["training"]["objective"].as_str().unwrap();
    assert!(objective.contains("no labels read"), "{objective}");
    assert_eq!(r["original"]["top1"], 1.0);
    // every tenth of the 300 images is held out
    assert_eq!(r["data"]["test_samples"], 30);
    assert!(r["macs_reduction"].as_f64().unwrap() > 0.1);

    // the agreement recomputed from the two files in ORT
    let g = load(&input);
    let (test, prep, name) = data::load_for(&images, Split::Test, &g, &Spec::default()).unwrap();
    assert!(!test.labelled);
    let idx: Vec<usize> = (0..test.len()).collect();
    let x = prep.batch(&test, &idx).unwrap();
    let before = argmax_rows(&run_model(&input, &ort(), &name, &x));
    let after = argmax_rows(&run_model(&out, &ort(), &name, &x));
    let agree = before.iter().zip(&after).filter(|(a, b)| a == b).count();
    let want = agree as f64 / test.len() as f64;
    let got = r["pruned"]["top1"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-9, "report {got}, recomputed {want}");
    // a classifier that still answers like the original most of the time
    assert!(got >= 0.5, "{got}");
}

#[test]
fn no_labels_ignores_the_labels_the_data_has() {
    // --no-labels on the bundled (labelled) set: the same mode, so the
    // original scores 1 (agreement with itself), not its accuracy
    require_ort();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("r20.sss.onnx");
    let o = run(&[
        "compress",
        fixture("resnet20_fmnist.legacy13.onnx").to_str().unwrap(),
        "--no-labels",
        "-o",
        out.to_str().unwrap(),
        "--steps",
        "6",
        "--batch-size",
        "32",
        "--bench-iters",
        "2",
        "--bench-batch",
        "1",
        "--json",
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(
        e.contains("--no-labels: the data's labels are not read"),
        "{e}"
    );
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["data"]["labelled"], false);
    assert_eq!(r["original"]["top1"], 1.0);
}

#[test]
fn data_with_more_classes_than_the_model_is_an_error_naming_both() {
    // an ImageFolder of 12 classes for a 10-class model
    let d = tempfile::tempdir().unwrap();
    for c in 0..12 {
        let dir = d.path().join("test").join(format!("class{c:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        image::RgbImage::new(28, 28)
            .save(dir.join("0.png"))
            .unwrap();
    }
    let out = d.path().join("r20.sss.onnx");
    let o = run(&[
        "compress",
        fixture("resnet20_fmnist.legacy13.onnx").to_str().unwrap(),
        "--data",
        d.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("12 classes, but the model's output") && e.contains("only 10"),
        "{e}"
    );
    assert!(!out.exists());
}

#[test]
fn train_without_labels_scores_agreement_with_the_model_as_given() {
    let d = tempfile::tempdir().unwrap();
    let images = d.path().join("images");
    unlabelled_folder(&images);
    let out = d.path().join("r20.trained.onnx");
    let o = run(&[
        "train",
        fixture("resnet20_fmnist.legacy13.onnx").to_str().unwrap(),
        "--data",
        images.to_str().unwrap(),
        "--gate",
        "--steps",
        "3",
        "--batch-size",
        "16",
        "-o",
        out.to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(e.contains("top-1 agreement with the model as given"), "{e}");
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.with_extension("train.json")).unwrap()).unwrap();
    assert_eq!(j["labelled"], false);
    let acc = j["test_accuracy"].as_f64().unwrap();
    // three small steps from the model itself: it still answers as it did
    assert!(acc > 0.5, "{acc}");
}

/// A small fully convolutional net whose output is a map of 5 channels at
/// 8×8 (a segmenter's form, not a classifier's scores): a stem, two basic
/// residual blocks, a strided stage and a 1×1 head.
fn segmenter(path: &std::path::Path) {
    use sss_onnx::graph::build::Builder;
    let mut b = Builder::new("input", &[-1, 3, 32, 32], 17);
    let x = b.conv("input", 3, 16, 3, 1);
    let x = b.bn(&x, 16);
    let mut x = b.relu(&x);
    for _ in 0..2 {
        let y = b.conv(&x, 16, 16, 3, 1);
        let y = b.bn(&y, 16);
        let y = b.relu(&y);
        let y = b.conv(&y, 16, 16, 3, 1);
        let y = b.bn(&y, 16);
        let s = b.add(&y, &x);
        x = b.relu(&s);
    }
    let x = b.conv(&x, 16, 32, 3, 2);
    let x = b.bn(&x, 32);
    let x = b.relu(&x);
    let x = b.conv(&x, 32, 32, 3, 2);
    let x = b.relu(&x);
    let y = b.conv(&x, 32, 5, 1, 1);
    let mut g = b.finish(&y);
    g.outputs[0].shape = None;
    sss_onnx::onnx::convert::save(&g, path, &Default::default()).unwrap();
}

#[test]
fn a_model_without_class_scores_learns_its_own_outputs() {
    require_ort();
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("seg.onnx");
    segmenter(&model);
    let out = d.path().join("seg.sss.onnx");
    // the bundled data has labels; a map output cannot use them
    let o = short_compress(&model, &out, &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(e.contains("not a classifier's scores"), "{e}");
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["data"]["labelled"], false);
    let metric = r["data"]["metric"].as_str().unwrap();
    assert!(metric.contains("largest output channel"), "{metric}");
    assert!(r["training"]["objective"]
        .as_str()
        .unwrap()
        .contains("matching the original's outputs"));
    assert_eq!(r["original"]["top1"], 1.0);
    assert!(r["macs_reduction"].as_f64().unwrap() > 0.1);

    // the agreement recomputed by hand from both files' maps in ORT
    let g = load(&model);
    let (test, prep, name) =
        data::load_for(&fixture("fmnist"), Split::Test, &g, &Spec::default()).unwrap();
    assert_eq!(r["data"]["test_samples"].as_u64(), Some(test.len() as u64));
    let idx: Vec<usize> = (0..test.len()).collect();
    let x = prep.batch(&test, &idx).unwrap();
    let (a, b) = (
        run_model(&model, &ort(), &name, &x),
        run_model(&out, &ort(), &name, &x),
    );
    assert_eq!(a.shape(), &[test.len(), 5, 8, 8]);
    let mut total = 0.0;
    for n in 0..test.len() {
        let mut same = 0;
        for p in 0..64 {
            let (i, j) = (p / 8, p % 8);
            let best = |y: &ndarray::ArrayD<f32>| {
                (0..5)
                    .max_by(|&u, &v| {
                        y[[n, u, i, j]]
                            .partial_cmp(&y[[n, v, i, j]])
                            .unwrap()
                            .then(v.cmp(&u))
                    })
                    .unwrap()
            };
            same += (best(&a) == best(&b)) as usize;
        }
        total += same as f64 / 64.0;
    }
    let want = total / test.len() as f64;
    let got = r["pruned"]["top1"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-9, "report {got}, recomputed {want}");
    assert!(got > 0.3, "{got}");
}

#[test]
fn train_scores_a_map_output_by_its_agreement_with_the_model_as_given() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("seg.onnx");
    segmenter(&model);
    let out = d.path().join("seg.trained.onnx");
    let o = run(&[
        "train",
        model.to_str().unwrap(),
        "--data",
        fixture("fmnist").to_str().unwrap(),
        "--gate",
        "--steps",
        "3",
        "--batch-size",
        "16",
        "-o",
        out.to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(e.contains("not a classifier's scores"), "{e}");
    assert!(e.contains("largest output channel per position"), "{e}");
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.with_extension("train.json")).unwrap()).unwrap();
    assert_eq!(j["labelled"], false);
    // a fraction of positions (the synthetic net's BatchNorm statistics
    // are made up, so three steps in train mode move it a lot)
    let a = j["test_accuracy"].as_f64().unwrap();
    assert!(a > 0.0 && a <= 1.0, "{j}");
}
