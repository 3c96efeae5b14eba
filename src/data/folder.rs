//! Folders of PNG/JPEG images. Labelled: ImageFolder trees,
//! `<split>/<class>/<image>`, classes the sorted folder names. Unlabelled:
//! a split folder without class folders, or images in any layout under
//! the data folder (every tenth held out for testing). Every image is
//! converted to RGB at its own size (photos differ; the preprocessing
//! resizes and crops them), and decoded only when a batch needs it (a
//! folder may hold more than memory).

use super::{bad, Dataset, Split};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Split folders: ImageFolder's, then Ultralytics' `images/<split>`.
fn split_names(split: Split) -> &'static [&'static str] {
    match split {
        Split::Train => &["train", "images/train"],
        Split::Test => &["test", "val", "images/val", "images/test"],
    }
}

pub fn find(dir: &Path, split: Split) -> Option<PathBuf> {
    split_names(split)
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_dir())
}

/// Every tenth image is held out for testing.
const HELD_OUT_EVERY: usize = 10;

/// `split` of the images anywhere under `dir` when it has no split
/// folders at all: every tenth image (at least one) for testing, the rest
/// for training (all of them when there are fewer than two). `None` when
/// there are split folders (a missing split is an error, not a reason to
/// read the other one's images) or no images.
pub fn loose_images(dir: &Path, split: Split) -> Result<Option<Vec<PathBuf>>> {
    let has_splits = [Split::Train, Split::Test]
        .iter()
        .any(|&s| find(dir, s).is_some());
    if has_splits {
        return Ok(None);
    }
    let all = images_under(dir)?;
    if all.is_empty() {
        return Ok(None);
    }
    let n = all.len();
    let held =
        |i: usize| i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 || (n < HELD_OUT_EVERY && i == n - 1);
    let picked: Vec<PathBuf> = all
        .into_iter()
        .enumerate()
        .filter(|&(i, _)| n < 2 || held(i) == (split == Split::Test))
        .map(|(_, p)| p)
        .collect();
    Ok(Some(picked))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

fn is_image(file: &Path) -> bool {
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    file.is_file() && matches!(ext.as_str(), "png" | "jpg" | "jpeg")
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// The images under `dir` at any depth, sorted by path; hidden files and
/// folders skipped.
fn images_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for p in sorted_entries(&d)? {
            if is_hidden(&p) {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if is_image(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// (height, width) of `file` from its header.
fn image_size(file: &Path) -> Result<(usize, usize)> {
    let (w, h) = image::ImageReader::open(file)
        .map_err(|e| Error::io(file, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(file, e))?
        .into_dimensions()
        .map_err(|e| bad(file, e.to_string()))?;
    if w == 0 || h == 0 {
        return Err(bad(file, "the image is empty"));
    }
    Ok((h as usize, w as usize))
}

/// The split folder `root`: an ImageFolder tree when it has class
/// folders, otherwise its images at any depth without labels; the pixels
/// are left in the files until a batch needs them.
pub fn load(root: &Path) -> Result<Dataset> {
    let classes: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir() && !is_hidden(p))
        .collect();
    let loose: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| is_image(p))
        .collect();
    if classes.is_empty() {
        return unlabelled(root, images_under(root)?);
    }
    if let Some(f) = loose.first() {
        return Err(bad(
            f,
            "images beside class folders: an ImageFolder split holds only class folders (or, without labels, no class folders)",
        ));
    }
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        for file in sorted_entries(class)?.into_iter().filter(|f| is_image(f)) {
            files.push(file);
            labels.push(label as u32);
        }
    }
    from_files(root, files, labels, classes.len())
}

/// The images `files` (found under `root`) without labels.
pub fn unlabelled(root: &Path, files: Vec<PathBuf>) -> Result<Dataset> {
    let labels = vec![0; files.len()];
    let mut ds = from_files(root, files, labels, 0)?;
    ds.name = "images (no labels)".into();
    ds.labelled = false;
    Ok(ds)
}

fn from_files(
    root: &Path,
    files: Vec<PathBuf>,
    labels: Vec<u32>,
    classes: usize,
) -> Result<Dataset> {
    let sizes = files
        .iter()
        .map(|f| image_size(f))
        .collect::<Result<Vec<_>>>()?;
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
        labelled: true,
        classes,
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
