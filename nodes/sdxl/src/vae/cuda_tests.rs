//! The VAE's decoder on the GPU in bf16 (its dtype on cards that take it) against the CPU in
//! f32, at widths every kernel takes: bf16 convolutions and GroupNorm on channels-last images,
//! up-sampling and the attention's ends in that order, must give the CPU's image.

use super::{Vae, VaeConfig};
use crate::kernels::cuda::error_of_largest_value;
use candle_core::{DType, Device, Result, Shape};
use std::sync::Arc;
use swapgraph_model::{record_params, seeded_tensor, seeded_tensors, TensorSource};

#[test]
fn the_decoder_on_the_gpu_matches_the_cpu_f32_reference() -> Result<()> {
    let cfg = VaeConfig {
        block_out_channels: [32, 64, 64, 64],
        norm_groups: 8,
        ..VaeConfig::tiny()
    };
    let params = record_params(|vb| Vae::new(vb, &cfg))?;
    let source = Arc::new(TensorSource::from_tensors(
        "random",
        seeded_tensors("VAE on the GPU", &params, DType::F32)?,
    ));
    let gpu = Device::new_cuda(0)?;
    let on_cpu = Vae::new(source.var_builder(DType::F32, &Device::Cpu), &cfg)?;
    let on_gpu = Vae::new(source.var_builder(DType::BF16, &gpu), &cfg)?;
    // Seeded N(0, 1) latents: a matrix of one column, whose fan-in of 1 leaves them unscaled.
    let latents = seeded_tensor("VAE on the GPU", "latents", &Shape::from((4 * 16 * 16, 1)), DType::F32)?
        .reshape((1, 4, 16, 16))?;
    let expected = on_cpu.decode(&latents)?;
    let image = on_gpu.decode(&latents.to_dtype(DType::BF16)?.to_device(&gpu)?)?;
    assert_eq!(image.dims(), expected.dims());
    // bf16 holds 8 bits: each of the decoder's thirty-odd layers rounds to about 0.4%, and the
    // errors add up as a random walk; a layout mistake would be of the image's own size.
    let error = error_of_largest_value(&image, &expected)?;
    assert!(error < 5e-2, "error {error} of the largest value");
    Ok(())
}
