//! From the run's device to candle's, and the dtypes each model runs in there.

use candle_core::{DType, Device};
use swapgraph_node_api::{DeviceSpec, NodeError};

/// The candle device for `spec`.
///
/// # Errors
/// A message when the device cannot be opened (no CUDA in this build, no such GPU).
pub fn candle_device(spec: DeviceSpec) -> Result<Device, NodeError> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(ordinal) => {
            Device::new_cuda(ordinal).map_err(|e| NodeError::msg(format!("cannot open device {spec}: {e}")))
        }
    }
}

/// The dtype the UNet and text encoders run in: f32 on the CPU, f16 on a GPU.
pub fn model_dtype(device: &Device) -> DType {
    swapgraph_model::weight_dtype(device)
}

/// The dtype the VAE runs in: f32 everywhere, since SDXL's VAE overflows in f16.
pub fn vae_dtype(_device: &Device) -> DType {
    DType::F32
}
