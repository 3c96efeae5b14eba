//! Reading and writing `ModelProto` files.

use super::external::{externalize_tensors, inline_tensors};
use super::proto::{ModelProto, TensorProto};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use prost::Message;
use std::path::Path;

/// How to write a model file.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Write tensors of at least `external_threshold` bytes to `<file>.data`.
    pub external_data: bool,
    pub external_threshold: usize,
}

impl WriteOptions {
    pub fn external() -> Self {
        WriteOptions {
            external_data: true,
            external_threshold: 1024,
        }
    }
}

/// What a model file was, beside what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct FileFacts {
    /// Whether any tensor was kept in external data.
    pub external_data: bool,
    /// SHA-256 of the model file (hex).
    pub sha256: String,
}

/// Reads a model and inlines its external data, so every tensor after this
/// call holds its bytes.
pub fn read_model(path: &Path) -> Result<ModelProto> {
    Ok(read_model_with_facts(path)?.0)
}

/// `read_model`, and the file's facts from the same read.
pub fn read_model_with_facts(path: &Path) -> Result<(ModelProto, FileFacts)> {
    use super::proto::tensor_proto::DataLocation;
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let sha256 = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut model = read_model_bytes(path, &bytes)?;
    let external_data =
        all_tensors(&mut model).any(|t| t.data_location() == DataLocation::External);
    inline_tensors(path, all_tensors(&mut model))?;
    Ok((
        model,
        FileFacts {
            external_data,
            sha256,
        },
    ))
}

/// Whether the file keeps any tensor in external data.
pub fn uses_external_data(path: &Path) -> Result<bool> {
    use super::proto::tensor_proto::DataLocation;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut model = read_model_bytes(path, &bytes)?;
    let external = all_tensors(&mut model).any(|t| t.data_location() == DataLocation::External);
    Ok(external)
}

/// Decodes model bytes; `path` only names the source in errors.
pub fn read_model_bytes(path: &Path, bytes: &[u8]) -> Result<ModelProto> {
    let fail = |reason: String| Error::Decode {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(fail("the file is empty".into()));
    }
    if let Some(kind) = sniff_other_format(bytes) {
        return Err(fail(format!(
            "the file is {kind}, not a protobuf ModelProto"
        )));
    }
    let model = ModelProto::decode(bytes).map_err(|e| {
        fail(format!(
            "protobuf decoding failed ({e}); the file is truncated or not an ONNX model"
        ))
    })?;
    // Protobuf skips unknown fields, so arbitrary bytes can decode "fine" into
    // an empty message: demand what every real model has.
    let Some(graph) = &model.graph else {
        return Err(fail("it holds no graph (field 7)".into()));
    };
    if model.ir_version.is_none() {
        return Err(fail("it has no ir_version (field 1)".into()));
    }
    if graph.node.is_empty() {
        return Err(fail("its graph has no nodes".into()));
    }
    Ok(model)
}

/// Recognises common files that users hand over by mistake.
fn sniff_other_format(bytes: &[u8]) -> Option<&'static str> {
    const MAGICS: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"PK\x03\x04", "a zip archive (a PyTorch .pt checkpoint?)"),
        (b"\x1f\x8b", "gzip-compressed"),
        (b"\x80\x02", "a Python pickle"),
        (b"GIF8", "a GIF image"),
        (b"\x7fELF", "an ELF executable"),
    ];
    MAGICS
        .iter()
        .find(|(m, _)| bytes.starts_with(m))
        .map(|(_, k)| *k)
}

/// Every tensor of the main graph that can hold weights: initializers and the
/// tensors inside node attributes (`Constant` values).
fn all_tensors(model: &mut ModelProto) -> impl Iterator<Item = &mut TensorProto> {
    model.graph.iter_mut().flat_map(|g| {
        g.initializer.iter_mut().chain(
            g.node
                .iter_mut()
                .flat_map(|n| n.attribute.iter_mut())
                .flat_map(|a| a.t.iter_mut().chain(a.tensors.iter_mut())),
        )
    })
}

/// Where a model written with external data keeps its weights:
/// `<file name>.data` beside it.
pub fn external_data_path(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| format!("{}.data", n.to_string_lossy()))
        .unwrap_or_else(|| "model.onnx.data".into());
    path.with_file_name(name)
}

/// Writes `model` to `path` atomically; with external data, the weights go
/// to `<file name>.data` beside it (written first, so the model file never
/// points at missing data).
pub fn write_model(model: &ModelProto, path: &Path, opts: &WriteOptions) -> Result<()> {
    if opts.external_data {
        let mut model = model.clone();
        let name = path
            .file_name()
            .map(|n| format!("{}.data", n.to_string_lossy()))
            .ok_or_else(|| Error::Invalid(format!("{}: not a file path", path.display())))?;
        let blob = externalize_tensors(&name, opts.external_threshold, all_tensors(&mut model));
        write_atomic(&path.with_file_name(&name), &blob)?;
        write_atomic(path, &model.encode_to_vec())
    } else {
        write_atomic(path, &model.encode_to_vec())
    }
}
