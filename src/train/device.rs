//! The training device a user names: auto, cpu, cuda or cuda:N.

use crate::error::{Error, Result};
use candle_core::Device;

/// Whether `spec` is a device name this tool understands (its syntax only).
pub fn check_syntax(spec: &str) -> std::result::Result<(), String> {
    let ok = matches!(spec, "auto" | "cpu" | "cuda")
        || spec
            .strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok());
    if ok {
        Ok(())
    } else {
        Err("expected auto, cpu, cuda or cuda:N".into())
    }
}

fn bad(spec: &str, reason: impl Into<String>) -> Error {
    Error::Device {
        spec: spec.to_string(),
        reason: reason.into(),
    }
}

/// Opens the device `spec` names; the string says which device and why.
pub fn pick(spec: &str) -> Result<(Device, String)> {
    check_syntax(spec).map_err(|e| bad(spec, e))?;
    let cuda = |n: usize| -> Result<(Device, String)> {
        if !candle_core::utils::cuda_is_available() {
            return Err(bad(
                spec,
                "this binary was built without CUDA; rebuild with `cargo build --release --features cuda` (README: GPU build)",
            ));
        }
        let d =
            Device::new_cuda(n).map_err(|e| bad(spec, format!("opening CUDA device {n}: {e}")))?;
        Ok((d, format!("cuda:{n}")))
    };
    match spec {
        "cpu" => Ok((Device::Cpu, "cpu".into())),
        "cuda" => cuda(0),
        "auto" if candle_core::utils::cuda_is_available() => match Device::new_cuda(0) {
            Ok(d) => Ok((d, "cuda:0 (auto: built with CUDA, GPU visible)".into())),
            Err(e) => Ok((Device::Cpu, format!("cpu (auto: no usable GPU: {e})"))),
        },
        "auto" => Ok((Device::Cpu, "cpu (auto: built without CUDA)".into())),
        s => {
            // check_syntax let only cuda:N through
            let n = s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| bad(spec, "expected auto, cpu, cuda or cuda:N"))?;
            cuda(n)
        }
    }
}
