//! Finding the bundled Fashion-MNIST subset at run time. No path is baked
//! in at compile time, so a copied or installed binary looks where a user
//! would put it and says where it looked.

use std::path::PathBuf;

/// The variable that names the data folder explicitly.
pub const DATA_VAR: &str = "SSS_ONNX_DATA";

fn candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|p| p.to_path_buf()))
    {
        c.push(dir.join("fmnist"));
        c.push(dir.join("..").join("share").join("sss-onnx").join("fmnist"));
        // target/{debug,release}[/deps] inside a checkout → its fixtures
        for up in dir.ancestors().skip(1).take(3) {
            c.push(up.join("fixtures").join("fmnist"));
        }
    }
    if let Ok(cwd) = std::env::current_dir() {
        c.push(cwd.join("fixtures").join("fmnist"));
    }
    c
}

/// The bundled subset's folder, or a message saying where it was looked
/// for and how to point at it. A set `SSS_ONNX_DATA` is authoritative.
pub fn find() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(DATA_VAR).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_dir() {
            Ok(p)
        } else {
            Err(format!("{DATA_VAR}={} is not a folder", p.display()))
        };
    }
    let c = candidates();
    c.iter().find(|p| p.is_dir()).cloned().ok_or_else(|| {
        format!(
            "the bundled Fashion-MNIST subset was not found (looked in {}); pass --data DIR, or set {DATA_VAR} to the project's fixtures/fmnist",
            c.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}
