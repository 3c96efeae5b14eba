//! Data loaders on small files the tests write, and the fit to model input
//! checked against hand-computed values.

mod common;
use sss_onnx::data::{self, Preprocess, Sizing, Split};
use std::io::Write;

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

#[test]
fn idx_raw_and_gzip_give_the_same_data() {
    let d = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..3 * 4 * 4).map(|i| (i * 5) as u8).collect();
    std::fs::write(
        d.path().join("t10k-images-idx3-ubyte"),
        idx_bytes(&[3, 4, 4], &pixels),
    )
    .unwrap();
    let labels = idx_bytes(&[3], &[2, 0, 9]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&labels).unwrap();
    std::fs::write(
        d.path().join("t10k-labels-idx1-ubyte.gz"),
        gz.finish().unwrap(),
    )
    .unwrap();
    let ds = data::load(d.path(), Split::Test).unwrap();
    assert_eq!((ds.len(), ds.channels, ds.height, ds.width), (3, 1, 4, 4));
    assert_eq!(ds.labels, vec![2, 0, 9]);
    assert_eq!(&*ds.image(1).unwrap(), &pixels[16..32]);
    // no train split here: a clear error
    let e = data::load(d.path(), Split::Train).unwrap_err().to_string();
    assert!(e.contains("no Train data found"), "{e}");
}

#[test]
fn idx_with_wrong_sizes_is_an_error_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("t10k-images-idx3-ubyte"),
        idx_bytes(&[3, 4, 4], &[0; 10]),
    )
    .unwrap();
    std::fs::write(
        d.path().join("t10k-labels-idx1-ubyte"),
        idx_bytes(&[3], &[0; 3]),
    )
    .unwrap();
    let e = data::load(d.path(), Split::Test).unwrap_err().to_string();
    assert!(
        e.contains("t10k-images-idx3-ubyte") && e.contains("do not match"),
        "{e}"
    );
}

#[test]
fn cifar10_and_cifar100_binary() {
    let d = tempfile::tempdir().unwrap();
    // two CIFAR-10 records: label then 3072 pixels (R plane, G plane, B plane)
    let mut rec = Vec::new();
    for (label, base) in [(7u8, 10u8), (3, 20)] {
        rec.push(label);
        for c in 0..3u8 {
            rec.extend(std::iter::repeat_n(base + c, 1024));
        }
    }
    std::fs::write(d.path().join("test_batch.bin"), &rec).unwrap();
    let ds = data::load(d.path(), Split::Test).unwrap();
    assert_eq!(ds.name, "CIFAR-10");
    assert_eq!(ds.labels, vec![7, 3]);
    assert_eq!(ds.image(1).unwrap()[0], 20);
    assert_eq!(ds.image(1).unwrap()[1024], 21);
    assert_eq!(ds.image(1).unwrap()[2048], 22);
    // CIFAR-100: coarse and fine label bytes; the fine one is the class
    let d2 = tempfile::tempdir().unwrap();
    let mut r = vec![4u8, 87];
    r.extend(vec![1u8; 3072]);
    std::fs::write(d2.path().join("test.bin"), &r).unwrap();
    let ds = data::load(d2.path(), Split::Test).unwrap();
    assert_eq!(
        (ds.name.as_str(), ds.classes, ds.labels[0]),
        ("CIFAR-100", 100, 87)
    );
    // a partial record is refused
    std::fs::write(d2.path().join("test.bin"), &r[..100]).unwrap();
    assert!(data::load(d2.path(), Split::Test).is_err());
}

#[test]
fn image_folder_of_png_and_jpeg() {
    let d = tempfile::tempdir().unwrap();
    for (class, value) in [("cat", 200u8), ("dog", 50)] {
        let dir = d.path().join("val").join(class);
        std::fs::create_dir_all(&dir).unwrap();
        let img = image::RgbImage::from_pixel(5, 3, image::Rgb([value, 0, 255 - value]));
        img.save(dir.join("a.png")).unwrap();
    }
    let ds = data::load(d.path(), Split::Test).unwrap();
    assert_eq!((ds.classes, ds.channels, ds.height, ds.width), (2, 3, 3, 5));
    assert_eq!(ds.labels, vec![0, 1]);
    assert_eq!(ds.image(0).unwrap()[0], 200); // R plane first
    assert_eq!(ds.image(0).unwrap()[15], 0); // G plane
    assert_eq!(ds.image(1).unwrap()[30], 205); // B plane of "dog"
}

#[test]
fn image_folder_is_decoded_only_when_a_batch_needs_it() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("val").join("a");
    std::fs::create_dir_all(&dir).unwrap();
    // a gradient, so a wrong plane order or offset shows
    let img = image::RgbImage::from_fn(6, 4, |x, y| image::Rgb([x as u8 * 10, y as u8 * 20, 7]));
    img.save(dir.join("0.png")).unwrap();
    img.save(dir.join("1.png")).unwrap();
    let ds = data::load(d.path(), Split::Test).unwrap();
    // nothing decoded at load: the folder's size does not bound memory
    assert!(ds.pixels.is_empty());
    assert_eq!(ds.files.len(), 2);
    let px = ds.image(1).unwrap();
    assert_eq!(px.len(), 3 * 4 * 6);
    assert_eq!(px[5], 50); // R at (y 0, x 5)
    assert_eq!(px[24 + 6 * 3], 60); // G at (y 3, x 0)
    assert_eq!(px[48 + 23], 7); // B, last pixel

    // a file that became unreadable after the folder was read: the batch
    // fails naming it, nothing is made up
    std::fs::write(dir.join("1.png"), b"\x89PNG\r\n\x1a\n broken").unwrap();
    let p = Preprocess::plan(&ds, [3, 4, 6]).unwrap();
    assert!(p.batch(&ds, &[0]).is_ok());
    let e = p.batch(&ds, &[0, 1]).unwrap_err().to_string();
    assert!(e.contains("1.png"), "{e}");
    // one that changed size is refused too
    image::RgbImage::new(5, 4).save(dir.join("1.png")).unwrap();
    let e = p.batch(&ds, &[1]).unwrap_err().to_string();
    assert!(e.contains("1.png") && e.contains("5x4"), "{e}");
    // a header that does not parse fails at load, naming the file
    std::fs::write(dir.join("2.png"), b"not an image").unwrap();
    let e = data::load(d.path(), Split::Test).unwrap_err().to_string();
    assert!(e.contains("2.png"), "{e}");
}

#[test]
fn a_subset_keeps_the_picked_samples_in_every_storage() {
    let d = tempfile::tempdir().unwrap();
    // in memory, uniform (idx)
    let pixels: Vec<u8> = (0..4 * 2 * 2).map(|i| i as u8).collect();
    std::fs::write(
        d.path().join("t10k-images-idx3-ubyte"),
        idx_bytes(&[4, 2, 2], &pixels),
    )
    .unwrap();
    std::fs::write(
        d.path().join("t10k-labels-idx1-ubyte"),
        idx_bytes(&[4], &[5, 6, 7, 8]),
    )
    .unwrap();
    let ds = data::load(d.path(), Split::Test).unwrap();
    let sub = ds.subset(&[3, 1]).unwrap();
    assert_eq!(sub.labels, vec![8, 6]);
    assert_eq!(&*sub.image(0).unwrap(), &pixels[12..16]);
    assert_eq!(&*sub.image(1).unwrap(), &pixels[4..8]);

    // files of different sizes
    let f = tempfile::tempdir().unwrap();
    for (k, (w, h)) in [(3u32, 2u32), (4, 5), (2, 2)].into_iter().enumerate() {
        let dir = f.path().join("val").join(format!("c{k}"));
        std::fs::create_dir_all(&dir).unwrap();
        image::RgbImage::from_pixel(w, h, image::Rgb([k as u8, 0, 0]))
            .save(dir.join("x.png"))
            .unwrap();
    }
    let ds = data::load(f.path(), Split::Test).unwrap();
    assert!(!ds.is_uniform());
    let sub = ds.subset(&[2, 1]).unwrap();
    assert_eq!(sub.labels, vec![2, 1]);
    assert_eq!(sub.size_of(0), (2, 2));
    assert_eq!(sub.size_of(1), (5, 4));
    assert_eq!(sub.image(0).unwrap()[0], 2);
    assert_eq!(sub.image(1).unwrap().len(), 3 * 5 * 4);
}

#[test]
fn fit_pads_copies_channels_and_normalises_by_hand() {
    let d = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = vec![0, 51, 102, 255]; // one 2×2 image
    std::fs::write(
        d.path().join("t10k-images-idx3-ubyte"),
        idx_bytes(&[1, 2, 2], &pixels),
    )
    .unwrap();
    std::fs::write(
        d.path().join("t10k-labels-idx1-ubyte"),
        idx_bytes(&[1], &[1]),
    )
    .unwrap();
    std::fs::write(
        d.path().join("dataset.json"),
        r#"{"name":"tiny","mean":[0.2],"std":[0.5],"pad_value":"black"}"#,
    )
    .unwrap();
    let ds = data::load(d.path(), Split::Test).unwrap();
    let p = Preprocess::plan(&ds, [3, 4, 4]).unwrap();
    assert_eq!(p.sizing, Sizing::Pad);
    let x = p.batch(&ds, &[0]).unwrap();
    assert_eq!(x.shape(), &[1, 3, 4, 4]);
    // (51/255 - 0.2)/0.5 = 0 ; (255/255 - 0.2)/0.5 = 1.6 ; centred at offset 1;
    // the border black (pixel 0) before normalising: (0 - 0.2)/0.5 = -0.4
    for c in 0..3 {
        assert!((x[[0, c, 1, 1]] - (-0.4)).abs() < 1e-6);
        assert!(x[[0, c, 1, 2]].abs() < 1e-6);
        assert!((x[[0, c, 2, 2]] - 1.6).abs() < 1e-6);
        assert!((x[[0, c, 0, 0]] - (-0.4)).abs() < 1e-6);
        assert!((x[[0, c, 3, 3]] - (-0.4)).abs() < 1e-6);
    }
    // padded with the mean instead: 0 after normalising; pixel 102 → 0.4
    for (pad, want) in [("mean", 0.0f32), ("102", 0.4)] {
        let spec = data::Spec {
            pad_value: Some(pad.parse().unwrap()),
            ..Default::default()
        };
        let p = Preprocess::plan_with(&ds, [3, 4, 4], &spec).unwrap();
        let x = p.batch(&ds, &[0]).unwrap();
        assert!((x[[0, 1, 0, 0]] - want).abs() < 1e-6, "{pad}");
        assert!((x[[0, 1, 2, 2]] - 1.6).abs() < 1e-6);
    }
    // larger than the input: resized (antialiased) and cropped to 1×1, the
    // image's mean
    let p = Preprocess::plan(&ds, [1, 1, 1]).unwrap();
    assert_eq!(p.sizing, Sizing::Resize);
    let y = p.batch(&ds, &[0]).unwrap();
    let mean = pixels
        .iter()
        .map(|&v| (v as f32 / 255.0 - 0.2) / 0.5)
        .sum::<f32>()
        / 4.0;
    assert!(
        (y[[0, 0, 0, 0]] - mean).abs() < 1e-5,
        "{} vs {mean}",
        y[[0, 0, 0, 0]]
    );
}

#[test]
fn bundled_fashion_mnist_subset() {
    let ds = data::load(&common::fixture("fmnist"), Split::Train).unwrap();
    assert_eq!(
        (ds.len(), ds.height, ds.width, ds.classes),
        (4000, 28, 28, 10)
    );
    let t = data::load(&common::fixture("fmnist"), Split::Test).unwrap();
    assert_eq!(t.len(), 1000);
    assert_eq!(t.mean, vec![0.2860]);
}

#[test]
fn dataset_json_states_the_preprocessing_as_text_or_numbers() {
    let d = tempfile::tempdir().unwrap();
    for f in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        std::fs::copy(common::fixture("fmnist").join(f), d.path().join(f)).unwrap();
    }
    std::fs::write(
        d.path().join("dataset.json"),
        r#"{"resize": 40, "center_crop": "32x30", "pad_value": 0, "channel_order": "bgr"}"#,
    )
    .unwrap();
    let ds = data::load(d.path(), Split::Test).unwrap();
    assert_eq!(ds.spec.resize, Some(data::Size::Shorter(40)));
    assert_eq!(ds.spec.center_crop, Some(data::Size::Exact(32, 30)));
    assert_eq!(ds.spec.pad_value, Some(data::PadValue::Pixel(0)));
    assert_eq!(ds.spec.channel_order, Some(data::ChannelOrder::Bgr));
    // 28×28 → 40×40 → centre 32×30 → padded to 32×32 with pixel 0
    let p = Preprocess::plan(&ds, [3, 32, 32]).unwrap();
    assert_eq!(p.resize, Some(data::Size::Shorter(40)));
    assert_eq!(p.center_crop, Some((32, 30)));
    let x = p.batch(&ds, &[0]).unwrap();
    // no mean/std stated: computed from the images
    let zero = (0.0 - ds.mean[0]) / ds.std[0];
    assert!((x[[0, 0, 5, 0]] - zero).abs() < 1e-6, "{}", x[[0, 0, 5, 0]]);
    assert!((x[[0, 0, 5, 31]] - zero).abs() < 1e-6);
    // a value that is neither is refused with the key's text
    std::fs::write(d.path().join("dataset.json"), r#"{"pad_value": "grey"}"#).unwrap();
    let e = data::load(d.path(), Split::Test).unwrap_err().to_string();
    assert!(e.contains("grey"), "{e}");
}

#[test]
fn images_without_labels_in_any_layout_at_mixed_sizes() {
    let d = tempfile::tempdir().unwrap();
    // 23 images in nested folders, PNG and JPEG, three sizes; a label
    // file and a hidden folder beside them are not images
    for i in 0..23u32 {
        let sub = d.path().join(["a", "b/c", "d/e/f"][i as usize % 3]);
        std::fs::create_dir_all(&sub).unwrap();
        let (w, h) = [(5, 3), (8, 8), (4, 6)][i as usize % 3];
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([i as u8, 0, 0]));
        let ext = if i % 4 == 0 { "jpg" } else { "png" };
        img.save(sub.join(format!("{i:02}.{ext}"))).unwrap();
    }
    std::fs::write(d.path().join("a/00.txt"), "0 0.5 0.5 0.1 0.1").unwrap();
    std::fs::create_dir_all(d.path().join(".cache")).unwrap();
    image::RgbImage::new(2, 2)
        .save(d.path().join(".cache/x.png"))
        .unwrap();
    let train = data::load(d.path(), Split::Train).unwrap();
    let test = data::load(d.path(), Split::Test).unwrap();
    // every tenth image (in path order) held out: 2 of 23
    assert_eq!((train.len(), test.len()), (21, 2));
    for ds in [&train, &test] {
        assert!(!ds.labelled);
        assert_eq!(ds.classes, 0);
        assert!(!ds.is_uniform(), "the sizes differ");
    }
    let names = |ds: &data::Dataset| -> Vec<String> {
        ds.files
            .iter()
            .map(|f| f.strip_prefix(d.path()).unwrap().display().to_string())
            .collect()
    };
    // sorted paths: a/00,a/03,...; the 10th and 20th are held out
    let mut all: Vec<String> = names(&train).into_iter().chain(names(&test)).collect();
    all.sort();
    assert_eq!(all.len(), 23);
    assert_eq!(names(&test), vec![all[9].clone(), all[19].clone()]);
    assert!(!all.iter().any(|n| n.contains(".cache")));
    // the pixels are each file's own, at its own size
    let k = train
        .files
        .iter()
        .position(|f| f.ends_with("b/c/07.png"))
        .unwrap();
    assert_eq!(train.size_of(k), (8, 8));
    assert_eq!(train.image(k).unwrap()[0], 7);

    // split folders without class folders are unlabelled splits
    let s = tempfile::tempdir().unwrap();
    for split in ["train", "val"] {
        std::fs::create_dir_all(s.path().join(split)).unwrap();
        for i in 0..3 {
            image::RgbImage::new(4, 4)
                .save(s.path().join(split).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let t = data::load(s.path(), Split::Test).unwrap();
    assert_eq!((t.len(), t.labelled), (3, false));
    // with split folders, a missing split is an error, not the other's images
    std::fs::remove_dir_all(s.path().join("val")).unwrap();
    assert!(data::load(s.path(), Split::Test).is_err());

    // images beside class folders are ambiguous: an error naming one
    let m = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(m.path().join("test/cat")).unwrap();
    image::RgbImage::new(4, 4)
        .save(m.path().join("test/cat/0.png"))
        .unwrap();
    image::RgbImage::new(4, 4)
        .save(m.path().join("test/stray.png"))
        .unwrap();
    let e = data::load(m.path(), Split::Test).unwrap_err().to_string();
    assert!(
        e.contains("stray.png") && e.contains("class folders"),
        "{e}"
    );
}

#[test]
fn labels_are_dropped_on_request_and_set_from_predictions() {
    let d = tempfile::tempdir().unwrap();
    for (class, n) in [("a", 2), ("b", 3)] {
        let dir = d.path().join("test").join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            image::RgbImage::new(3, 3)
                .save(dir.join(format!("{i}.png")))
                .unwrap();
        }
    }
    let mut ds = data::load(d.path(), Split::Test).unwrap();
    assert_eq!(
        (ds.labels.clone(), ds.classes, ds.labelled),
        (vec![0, 0, 1, 1, 1], 2, true)
    );
    ds.drop_labels();
    assert_eq!(
        (ds.labels.clone(), ds.classes, ds.labelled),
        (vec![0; 5], 0, false)
    );
    ds.set_labels(vec![4, 1, 0, 2, 4], 5);
    assert_eq!(ds.classes, 5);
    assert_eq!(ds.subset(&[4, 1]).unwrap().labels, vec![4, 1]);
}
