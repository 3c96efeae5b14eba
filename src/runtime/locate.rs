//! Finding the ONNX Runtime shared library. ort would panic inside dlopen
//! when it is missing; we look first and explain how to get it instead.

use std::path::PathBuf;

pub const ORT_VERSION: &str = "1.32.0";

#[derive(Debug, Clone)]
pub struct OrtLibrary {
    pub path: PathBuf,
    pub how: &'static str,
}

fn candidates() -> Vec<(PathBuf, &'static str)> {
    let file = format!("libonnxruntime.so.{ORT_VERSION}");
    let mut c = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|p| p.to_path_buf()))
    {
        c.push((dir.join(&file), "beside the executable"));
        c.push((dir.join("libonnxruntime.so"), "beside the executable"));
        // target/{debug,release}[/deps] → project root
        for up in dir.ancestors().skip(1).take(3) {
            c.push((up.join(".ort").join(&file), "the project's .ort folder"));
        }
    }
    if let Ok(cwd) = std::env::current_dir() {
        c.push((cwd.join(".ort").join(&file), "the working folder's .ort"));
    }
    c
}

/// The library to load, or a message saying how to get one. A set
/// `ORT_DYLIB_PATH` is authoritative: when it names no file, ONNX Runtime
/// counts as absent rather than silently coming from elsewhere.
pub fn find_onnxruntime() -> Result<OrtLibrary, String> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(p);
        return if path.is_file() {
            Ok(OrtLibrary {
                path,
                how: "ORT_DYLIB_PATH",
            })
        } else {
            Err(format!(
                "ORT_DYLIB_PATH={} names no file; run scripts/fetch-onnxruntime.sh or fix the variable",
                path.display()
            ))
        };
    }
    for (path, how) in candidates() {
        if path.is_file() {
            return Ok(OrtLibrary { path, how });
        }
    }
    Err(format!(
        "the ONNX Runtime library (libonnxruntime.so.{ORT_VERSION}) was not found \
         (looked at ORT_DYLIB_PATH, beside the executable, in the project's and the working folder's .ort/); \
         run scripts/fetch-onnxruntime.sh or set ORT_DYLIB_PATH"
    ))
}
