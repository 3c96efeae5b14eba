//! Tensors of the IR: f32 and i64 as `ndarray` arrays (the types the program
//! computes with), every other element type kept as its little-endian bytes.

use crate::error::{Error, Result};
use ndarray::{ArrayD, IxDyn};

/// ONNX `TensorProto.DataType` codes the program names.
pub mod dtype {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const UINT16: i32 = 4;
    pub const INT16: i32 = 5;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const STRING: i32 = 8;
    pub const BOOL: i32 = 9;
    pub const FLOAT16: i32 = 10;
    pub const DOUBLE: i32 = 11;
    pub const UINT32: i32 = 12;
    pub const UINT64: i32 = 13;
    pub const BFLOAT16: i32 = 16;

    /// Bits per element, `None` for strings and unknown codes.
    pub fn bits(code: i32) -> Option<u64> {
        Some(match code {
            1 | 6 | 12 => 32,
            2 | 3 | 9 | 17..=20 | 24 => 8,
            4 | 5 | 10 | 16 => 16,
            7 | 11 | 13 | 14 => 64,
            15 => 128,
            21..=23 => 4,
            25 | 26 => 2,
            27 | 28 => 6,
            _ => return None,
        })
    }
}

/// Largest tensor the program will materialise: beyond this a file is taken
/// to be malformed rather than a model to prune.
pub const MAX_TENSOR_BYTES: u64 = 16 << 30;

#[derive(Debug, Clone, PartialEq)]
pub enum Tensor {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
    /// Any other fixed-size type: packed little-endian bytes as in `raw_data`.
    Raw {
        dtype: i32,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    },
    Strings {
        shape: Vec<usize>,
        data: Vec<Vec<u8>>,
    },
}

impl Tensor {
    pub fn dtype(&self) -> i32 {
        match self {
            Tensor::F32(_) => dtype::FLOAT,
            Tensor::I64(_) => dtype::INT64,
            Tensor::Raw { dtype, .. } => *dtype,
            Tensor::Strings { .. } => dtype::STRING,
        }
    }

    pub fn shape(&self) -> Vec<usize> {
        match self {
            Tensor::F32(a) => a.shape().to_vec(),
            Tensor::I64(a) => a.shape().to_vec(),
            Tensor::Raw { shape, .. } | Tensor::Strings { shape, .. } => shape.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_f32(&self) -> Option<&ArrayD<f32>> {
        match self {
            Tensor::F32(a) => Some(a),
            _ => None,
        }
    }

    /// Integer view of an integer tensor (the shape-arithmetic ops produce
    /// int64, int32 and occasionally bool/uint8 tensors).
    pub fn to_i64(&self) -> Option<ArrayD<i64>> {
        match self {
            Tensor::I64(a) => Some(a.clone()),
            Tensor::Raw {
                dtype,
                shape,
                bytes,
            } => {
                let v: Vec<i64> = match *dtype {
                    dtype::INT32 => bytes
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                        .collect(),
                    dtype::INT16 => bytes
                        .chunks_exact(2)
                        .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                        .collect(),
                    dtype::INT8 => bytes.iter().map(|&b| b as i8 as i64).collect(),
                    dtype::UINT8 | dtype::BOOL => bytes.iter().map(|&b| b as i64).collect(),
                    _ => return None,
                };
                ArrayD::from_shape_vec(IxDyn(shape), v).ok()
            }
            _ => None,
        }
    }

    /// Float view: f32 as is, integers converted (used where ONNX allows
    /// either, e.g. a Pad's constant value).
    pub fn to_f32(&self) -> Option<ArrayD<f32>> {
        match self {
            Tensor::F32(a) => Some(a.clone()),
            Tensor::Raw {
                dtype: dtype::DOUBLE,
                shape,
                bytes,
            } => {
                let v = bytes
                    .chunks_exact(8)
                    .map(|c| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(c);
                        f64::from_le_bytes(b) as f32
                    })
                    .collect();
                ArrayD::from_shape_vec(IxDyn(shape), v).ok()
            }
            other => other.to_i64().map(|a| a.mapv(|v| v as f32)),
        }
    }

    /// The tensor as int64 values converted to `dtype` (for Cast between
    /// integer types in shape arithmetic).
    pub fn from_i64_as(values: ArrayD<i64>, dtype: i32) -> Option<Tensor> {
        let shape = values.shape().to_vec();
        let bytes: Vec<u8> = match dtype {
            dtype::INT64 => return Some(Tensor::I64(values)),
            dtype::FLOAT => return Some(Tensor::F32(values.mapv(|v| v as f32))),
            dtype::INT32 => values
                .iter()
                .flat_map(|&v| (v as i32).to_le_bytes())
                .collect(),
            dtype::INT8 | dtype::UINT8 => values.iter().map(|&v| v as u8).collect(),
            dtype::BOOL => values.iter().map(|&v| (v != 0) as u8).collect(),
            _ => return None,
        };
        Some(Tensor::Raw {
            dtype,
            shape,
            bytes,
        })
    }

    /// Byte size of the element data.
    pub fn nbytes(&self) -> u64 {
        match self {
            Tensor::Strings { data, .. } => data.iter().map(|s| s.len() as u64).sum(),
            Tensor::Raw { bytes, .. } => bytes.len() as u64,
            t => dtype::bits(t.dtype()).unwrap_or(0) * t.len() as u64 / 8,
        }
    }
}

/// Checks that `dims` describe a tensor the program can hold: non-negative,
/// no overflow, at most `MAX_TENSOR_BYTES`. Returns the element count.
pub fn checked_numel(name: &str, dims: &[i64], dtype: i32) -> Result<usize> {
    let mut n: u64 = 1;
    for &d in dims {
        if d < 0 {
            return Err(Error::tensor(
                name,
                format!("negative dimension {d} in {dims:?}"),
            ));
        }
        n = n.checked_mul(d as u64).ok_or_else(|| {
            Error::tensor(
                name,
                format!("dimensions {dims:?} overflow a 64-bit element count"),
            )
        })?;
    }
    let bits = dtype::bits(dtype).unwrap_or(8);
    let bytes = n.checked_mul(bits).map(|b| b.div_ceil(8));
    match bytes {
        Some(b) if b <= MAX_TENSOR_BYTES => Ok(n as usize),
        _ => Err(Error::tensor(
            name,
            format!(
                "dimensions {dims:?} need more than {} GiB; refusing to allocate",
                MAX_TENSOR_BYTES >> 30
            ),
        )),
    }
}
