//! Tensors between the IR (ndarray) and candle.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};

pub(crate) fn to_candle(
    a: &ndarray::ArrayD<f32>,
    dev: &Device,
    dtype: DType,
) -> candle_core::Result<Tensor> {
    let v: Vec<f32> = a.iter().copied().collect();
    Tensor::from_vec(v, a.shape(), dev)?.to_dtype(dtype)
}

pub fn to_ndarray(t: &Tensor) -> Result<ndarray::ArrayD<f32>> {
    let shape = t.dims().to_vec();
    let v = t
        .flatten_all()
        .and_then(|f| f.to_dtype(DType::F32))
        .and_then(|f| f.to_vec1::<f32>())?;
    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), v)
        .map_err(|e| Error::Invalid(e.to_string()))
}
