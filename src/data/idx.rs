//! The idx format of MNIST and Fashion-MNIST: a big-endian header (0, 0,
//! type 0x08 = u8, rank) then the dimensions, then the bytes. Gzipped or raw.

use super::{bad, statistics, Dataset, Split};
use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

fn pick(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

pub fn find(dir: &Path, split: Split) -> Option<(PathBuf, PathBuf)> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    // the folder itself, or torchvision's download layout under it
    // (`root/FashionMNIST/raw/`, `root/MNIST/raw/`, or `raw/`)
    let places = [
        dir.to_path_buf(),
        dir.join("raw"),
        dir.join("FashionMNIST").join("raw"),
        dir.join("MNIST").join("raw"),
        dir.join("KMNIST").join("raw"),
    ];
    places.iter().find_map(|d| {
        Some((
            pick(d, &format!("{prefix}-images-idx3-ubyte"))?,
            pick(d, &format!("{prefix}-labels-idx1-ubyte"))?,
        ))
    })
}

/// Reads one idx file: dimensions and data.
pub fn read(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| bad(path, format!("gzip: {e}")))?;
        out
    } else {
        raw
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(path, "not an idx file (bad magic)"));
    }
    if bytes[2] != 0x08 {
        return Err(bad(
            path,
            format!("idx element type {:#x} is not u8", bytes[2]),
        ));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(bad(path, "truncated idx header"));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    match n {
        Some(n) if bytes.len() - header == n => Ok((dims, bytes[header..].to_vec())),
        _ => Err(bad(
            path,
            format!(
                "dims {dims:?} do not match {} data bytes",
                bytes.len() - header
            ),
        )),
    }
}

pub fn load(images: &Path, labels: &Path) -> Result<Dataset> {
    let (idims, pixels) = read(images)?;
    let (ldims, lab) = read(labels)?;
    if idims.len() != 3 || ldims.len() != 1 || idims[0] != ldims[0] {
        return Err(bad(
            images,
            format!("image dims {idims:?} and label dims {ldims:?} do not pair up"),
        ));
    }
    let labels: Vec<u32> = lab.iter().map(|&l| l as u32).collect();
    let classes = labels
        .iter()
        .max()
        .map(|&m| m as usize + 1)
        .unwrap_or(0)
        .max(10);
    let (mean, std) = statistics(1, idims[1] * idims[2], &pixels);
    Ok(Dataset {
        name: "idx".into(),
        format: "idx",
        channels: 1,
        height: idims[1],
        width: idims[2],
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
