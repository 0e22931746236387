//! From the run's device to candle's, and the dtypes each model runs in there.

use candle_core::{DType, Device};

pub use swapgraph_model::candle_device;

/// The dtype the UNet and text encoders run in: f32 on the CPU, f16 on a GPU.
pub fn model_dtype(device: &Device) -> DType {
    swapgraph_model::weight_dtype(device)
}

/// The dtype the VAE runs in: f32 everywhere, since SDXL's VAE overflows in f16.
pub fn vae_dtype(_device: &Device) -> DType {
    DType::F32
}
