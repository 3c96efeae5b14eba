//! External tensor data (`data_location = EXTERNAL`): entries `location`,
//! `offset`, `length` point into a file beside the model. Reading inlines the
//! bytes into `raw_data`; writing moves large tensors out to one data file.

use super::proto::{tensor_proto::DataLocation, StringStringEntryProto, TensorProto};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

struct ExternalRef {
    location: String,
    offset: u64,
    length: Option<u64>,
}

fn parse_ref(model: &Path, t: &TensorProto) -> Result<ExternalRef> {
    let err = |reason: String| Error::ExternalData {
        path: model.to_path_buf(),
        tensor: t.name().to_string(),
        reason,
    };
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for e in &t.external_data {
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| err(format!("`{}` is not a byte count: {v:?}", e.key())))
        };
        match e.key() {
            "location" => location = Some(e.value().to_string()),
            "offset" => offset = num(e.value())?,
            "length" => length = Some(num(e.value())?),
            _ => {} // "checksum" and future keys are advisory
        }
    }
    let location = location.ok_or_else(|| err("no `location` entry".into()))?;
    let rel = Path::new(&location);
    // A model must not make us read files outside its own folder.
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        return Err(err(format!(
            "location {location:?} leaves the model's folder"
        )));
    }
    Ok(ExternalRef {
        location,
        offset,
        length,
    })
}

/// Replaces every external reference in `tensors` by inline `raw_data`.
pub fn inline_tensors<'a>(
    model_path: &Path,
    tensors: impl Iterator<Item = &'a mut TensorProto>,
) -> Result<()> {
    let dir = model_path.parent().unwrap_or_else(|| Path::new("."));
    let mut files: HashMap<String, std::fs::File> = HashMap::new();
    for t in tensors {
        if t.data_location() != DataLocation::External {
            continue;
        }
        let r = parse_ref(model_path, t)?;
        let err = |reason: String| Error::ExternalData {
            path: model_path.to_path_buf(),
            tensor: t.name().to_string(),
            reason,
        };
        let file_path = dir.join(&r.location);
        if !files.contains_key(&r.location) {
            let f = std::fs::File::open(&file_path)
                .map_err(|e| err(format!("cannot open {}: {e}", file_path.display())))?;
            files.insert(r.location.clone(), f);
        }
        let f = files
            .get_mut(&r.location)
            .ok_or_else(|| err("data file vanished".into()))?;
        let size = f
            .metadata()
            .map_err(|e| err(format!("{}: {e}", file_path.display())))?
            .len();
        let length = r.length.unwrap_or(size.saturating_sub(r.offset));
        let end = r.offset.saturating_add(length);
        if end > size {
            return Err(err(format!(
                "bytes {}..{end} lie past the end of {} ({size} bytes)",
                r.offset,
                file_path.display()
            )));
        }
        let mut buf = vec![0u8; length as usize];
        f.seek(SeekFrom::Start(r.offset))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| err(format!("{}: {e}", file_path.display())))?;
        t.raw_data = Some(buf);
        t.external_data.clear();
        t.data_location = None;
    }
    Ok(())
}

/// Moves the `raw_data` of every tensor of at least `threshold` bytes into
/// one data blob (each tensor 64-byte aligned, so it can be memory-mapped)
/// and rewrites the tensors as references to `location`.
pub fn externalize_tensors<'a>(
    location: &str,
    threshold: usize,
    tensors: impl Iterator<Item = &'a mut TensorProto>,
) -> Vec<u8> {
    let mut blob = Vec::new();
    for t in tensors {
        let Some(raw) = t.raw_data.take_if(|r| r.len() >= threshold) else {
            continue;
        };
        while blob.len() % 64 != 0 {
            blob.push(0);
        }
        let entry = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        t.external_data = vec![
            entry("location", location.to_string()),
            entry("offset", blob.len().to_string()),
            entry("length", raw.len().to_string()),
        ];
        t.set_data_location(DataLocation::External);
        blob.extend_from_slice(&raw);
    }
    blob
}
