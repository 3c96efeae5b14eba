//! ImageFolder trees: `<split>/<class>/<image>.{png,jpg,jpeg}`; classes are
//! the sorted folder names, every image is converted to RGB at its own size
//! (photos differ; the preprocessing resizes and crops them), and decoded
//! only when a batch needs it (a folder may hold more than memory).

use super::{bad, Dataset, Split};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

pub fn find(dir: &Path, split: Split) -> Option<PathBuf> {
    let names: &[&str] = match split {
        Split::Train => &["train"],
        Split::Test => &["test", "val"],
    };
    names.iter().map(|n| dir.join(n)).find(|p| p.is_dir())
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

/// The tree under `root`: every image's size read from its header, the
/// pixels left in the files until a batch needs them.
pub fn load(root: &Path) -> Result<Dataset> {
    let classes: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if classes.is_empty() {
        return Err(bad(root, "no class folders"));
    }
    let mut files = Vec::new();
    let mut labels = Vec::new();
    let mut sizes = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        for file in sorted_entries(class)? {
            let ext = file
                .extension()
                .map(|e| e.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            if !matches!(ext.as_str(), "png" | "jpg" | "jpeg") {
                continue;
            }
            let (w, h) = image::ImageReader::open(&file)
                .map_err(|e| Error::io(&file, e))?
                .with_guessed_format()
                .map_err(|e| Error::io(&file, e))?
                .into_dimensions()
                .map_err(|e| bad(&file, e.to_string()))?;
            if w == 0 || h == 0 {
                return Err(bad(&file, "the image is empty"));
            }
            sizes.push((h as usize, w as usize));
            files.push(file);
            labels.push(label as u32);
        }
    }
    let &(h, w) = sizes
        .first()
        .ok_or_else(|| bad(root, "no PNG/JPEG images"))?;
    let mixed = sizes.iter().any(|&s| s != (h, w));
    Ok(Dataset {
        name: "ImageFolder".into(),
        format: "imagefolder",
        channels: 3,
        height: h,
        width: w,
        pixels: Vec::new(),
        labels,
        classes: classes.len(),
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
        spec: Default::default(),
        sizes: if mixed { sizes } else { Vec::new() },
        offsets: Vec::new(),
        files,
    })
}

/// The image in `file` as RGB, C×H×W; its size must still be the
/// `(height, width)` its header gave when the folder was read.
pub fn decode(file: &Path, (h, w): (usize, usize)) -> Result<Vec<u8>> {
    let img = image::open(file)
        .map_err(|e| bad(file, e.to_string()))?
        .to_rgb8();
    if img.dimensions() != (w as u32, h as u32) {
        return Err(bad(
            file,
            format!(
                "the image is now {}x{}; it was {w}x{h} when the folder was read",
                img.width(),
                img.height()
            ),
        ));
    }
    let raw = img.into_raw();
    // HWC → CHW
    let mut out = Vec::with_capacity(raw.len());
    for c in 0..3 {
        out.extend((0..h * w).map(|i| raw[i * 3 + c]));
    }
    Ok(out)
}
