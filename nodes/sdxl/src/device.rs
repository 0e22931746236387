//! From the run's device to candle's, and the dtypes each model runs in there.

use candle_core::{DType, Device};

pub use swapgraph_model::candle_device;

/// The dtype the UNet and text encoders run in: f32 on the CPU, f16 on a GPU.
pub fn model_dtype(device: &Device) -> DType {
    swapgraph_model::weight_dtype(device)
}

/// The dtype the VAE runs in: bf16 on GPUs that compute in it (compute capability 8.0 and
/// later), half the memory and time of f32 with f32's range; f32 elsewhere. Never f16: SDXL's
/// VAE overflows its range.
pub fn vae_dtype(device: &Device) -> DType {
    if computes_in_bf16(device) {
        DType::BF16
    } else {
        DType::F32
    }
}

/// Whether `device` has bf16 arithmetic units.
fn computes_in_bf16(device: &Device) -> bool {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(cuda) => crate::kernels::compute_capability(cuda).is_ok_and(|(major, _)| major >= 8),
        _ => false,
    }
}
