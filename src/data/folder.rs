//! ImageFolder trees: `<split>/<class>/<image>.{png,jpg,jpeg}`; classes are
//! the sorted folder names, every image is converted to RGB and kept at its
//! own size (photos differ; the preprocessing resizes and crops them).

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

pub fn load(root: &Path) -> Result<Dataset> {
    let classes: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if classes.is_empty() {
        return Err(bad(root, "no class folders"));
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut size: Option<(u32, u32)> = None;
    let mut sizes = Vec::new();
    let mut offsets = Vec::new();
    let mut mixed = false;
    for (label, class) in classes.iter().enumerate() {
        for file in sorted_entries(class)? {
            let ext = file
                .extension()
                .map(|e| e.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            if !matches!(ext.as_str(), "png" | "jpg" | "jpeg") {
                continue;
            }
            let img = image::open(&file)
                .map_err(|e| bad(&file, e.to_string()))?
                .to_rgb8();
            let dims = img.dimensions();
            match size {
                None => size = Some(dims),
                Some(s) if s != dims => mixed = true,
                _ => {}
            }
            let (w, h) = (dims.0 as usize, dims.1 as usize);
            if w == 0 || h == 0 {
                return Err(bad(&file, "the image is empty"));
            }
            sizes.push((h, w));
            offsets.push(pixels.len());
            let raw = img.into_raw();
            // HWC → CHW
            for c in 0..3 {
                pixels.extend((0..h * w).map(|i| raw[i * 3 + c]));
            }
            labels.push(label as u32);
        }
    }
    let (w, h) = size.ok_or_else(|| bad(root, "no PNG/JPEG images"))?;
    Ok(Dataset {
        name: "ImageFolder".into(),
        format: "imagefolder",
        channels: 3,
        height: h as usize,
        width: w as usize,
        pixels,
        labels,
        classes: classes.len(),
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
        spec: Default::default(),
        sizes: if mixed { sizes } else { Vec::new() },
        offsets: if mixed { offsets } else { Vec::new() },
    })
}
