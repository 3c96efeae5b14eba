//! CIFAR batches: the binary version (records of a label byte, CIFAR-10,
//! or coarse and fine label bytes, CIFAR-100, followed by 3×32×32
//! channel-major pixels) and the Python version torchvision downloads
//! (`cifar-10-batches-py/data_batch_N`, `cifar-100-python/train`: pickled
//! dicts of a uint8 array [N, 3072] in the same pixel order and labels).

use super::{bad, Dataset, Split};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

const IMG: usize = 3 * 32 * 32;

pub struct Files {
    paths: Vec<PathBuf>,
    label_bytes: usize,
    /// Python pickles instead of binary records.
    pickled: bool,
}

pub fn find(dir: &Path, split: Split) -> Option<Files> {
    // (subfolders the archives unpack into, file suffix, pickled): the
    // Python version torchvision downloads first, then the binary one
    let layouts: [(&[&str], &str, bool); 2] = [
        (&["cifar-10-batches-py", "cifar-100-python"], "", true),
        (&["cifar-10-batches-bin", "cifar-100-binary"], ".bin", false),
    ];
    for (subs, ext, pickled) in layouts {
        let dirs = std::iter::once(dir.to_path_buf()).chain(subs.iter().map(|s| dir.join(s)));
        for d in dirs {
            let ten: Vec<PathBuf> = match split {
                Split::Train => (1..=5)
                    .map(|i| d.join(format!("data_batch_{i}{ext}")))
                    .collect(),
                Split::Test => vec![d.join(format!("test_batch{ext}"))],
            };
            let ten: Vec<PathBuf> = ten.into_iter().filter(|p| p.is_file()).collect();
            if !ten.is_empty() {
                return Some(Files {
                    paths: ten,
                    label_bytes: 1,
                    pickled,
                });
            }
            let hundred = d.join(match split {
                Split::Train => format!("train{ext}"),
                Split::Test => format!("test{ext}"),
            });
            // a bare `train`/`test` file is CIFAR-100 only beside its `meta`
            if hundred.is_file() && (!pickled || d.join("meta").is_file()) {
                return Some(Files {
                    paths: vec![hundred],
                    label_bytes: 2,
                    pickled,
                });
            }
        }
    }
    None
}

/// Pixels and labels of one pickled batch.
fn unpickle(p: &Path, bytes: &[u8], hundred: bool) -> Result<(Vec<u8>, Vec<u32>)> {
    let v = super::pickle::load(bytes).map_err(|e| bad(p, format!("pickle: {e}")))?;
    let key = if hundred { "fine_labels" } else { "labels" };
    let labels = v
        .get(key)
        .and_then(|l| l.as_ints())
        .ok_or_else(|| bad(p, format!("no integer list `{key}` in the batch")))?;
    let Some(super::pickle::Value::Array { shape, dtype, data }) = v.get("data") else {
        return Err(bad(p, "no numpy array `data` in the batch"));
    };
    if dtype.trim_start_matches('|') != "u1"
        || shape.len() != 2
        || shape[1] != IMG
        || shape[0] != labels.len()
        || data.len() != shape[0] * IMG
    {
        return Err(bad(
            p,
            format!(
                "`data` is {dtype} {shape:?} ({} bytes) for {} labels; expected uint8 [N, {IMG}]",
                data.len(),
                labels.len()
            ),
        ));
    }
    let labels = labels
        .into_iter()
        .map(|l| u32::try_from(l).map_err(|_| bad(p, format!("label {l} is negative"))))
        .collect::<Result<Vec<_>>>()?;
    Ok((data.clone(), labels))
}

pub fn load(files: &Files) -> Result<Dataset> {
    let rec = IMG + files.label_bytes;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for p in &files.paths {
        let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
        if files.pickled {
            let (px, lb) = unpickle(p, &bytes, files.label_bytes == 2)?;
            pixels.extend(px);
            labels.extend(lb);
            continue;
        }
        if bytes.is_empty() || bytes.len() % rec != 0 {
            return Err(bad(
                p,
                format!(
                    "{} bytes is not a whole number of {rec}-byte CIFAR records",
                    bytes.len()
                ),
            ));
        }
        for r in bytes.chunks_exact(rec) {
            // CIFAR-100: the fine label (the second byte) is the class
            labels.push(r[files.label_bytes - 1] as u32);
            pixels.extend_from_slice(&r[files.label_bytes..]);
        }
    }
    let (name, classes, mean, std) = if files.label_bytes == 1 {
        (
            "CIFAR-10",
            10,
            vec![0.4914, 0.4822, 0.4465],
            vec![0.2470, 0.2435, 0.2616],
        )
    } else {
        (
            "CIFAR-100",
            100,
            vec![0.5071, 0.4865, 0.4409],
            vec![0.2673, 0.2564, 0.2762],
        )
    };
    if let Some(&l) = labels.iter().find(|&&l| l as usize >= classes) {
        return Err(bad(
            &files.paths[0],
            format!("label {l} is out of range for {name}"),
        ));
    }
    Ok(Dataset {
        name: name.into(),
        format: "cifar",
        channels: 3,
        height: 32,
        width: 32,
        pixels,
        labels,
        labelled: true,
        classes,
        mean,
        std,
        spec: Default::default(),
        sizes: Vec::new(),
        offsets: Vec::new(),
        files: Vec::new(),
    })
}
