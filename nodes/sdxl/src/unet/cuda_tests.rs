//! The whole UNet on the GPU in f16 against the CPU in f32, at widths every kernel takes (heads
//! of 64, groups of two and four channels): the images stay channels-last from the stem's first
//! convolution to the head, through GroupNorm, the skips' joins, the ControlNet residuals'
//! sums, up-sampling and the transformers' ends, and must give the CPU's result.

use super::{ControlResiduals, UNet, UNetConfig, UNetInput};
use crate::kernels::cuda::error_of_largest_value;
use candle_core::{DType, Device, Result, Shape, Tensor};
use std::collections::HashMap;
use swapgraph_model::{seeded_tensor, ResidentStore, TensorSource};

fn randn(name: &str, shape: &[usize]) -> Result<Tensor> {
    let count = shape.iter().product::<usize>();
    seeded_tensor("UNet on the GPU", name, &Shape::from((count, 1)), DType::F32)?.reshape(shape)
}

#[test]
fn the_unet_on_the_gpu_matches_the_cpu_f32_reference() -> Result<()> {
    let cfg = UNetConfig {
        block_out_channels: [64, 64, 128],
        head_dim: 64,
        cross_attention_dim: 64,
        ..UNetConfig::tiny()
    };
    let unet = UNet::new(cfg.clone())?;
    let weights: HashMap<String, Tensor> = unet
        .units()
        .iter()
        .flat_map(|unit| unit.tensors.iter().map(|(name, shape)| (unit.key(name), shape.clone())))
        .map(|(key, shape)| Ok((key.clone(), seeded_tensor("UNet on the GPU", &key, &shape, DType::F32)?)))
        .collect::<Result<_>>()?;
    let source = TensorSource::from_tensors("random", weights);
    let gpu = Device::new_cuda(0)?;
    let on = |dtype: DType, device: &Device| ResidentStore::load(unet.units().to_vec(), &source, dtype, device);
    let (cpu_store, gpu_store) = (
        on(DType::F32, &Device::Cpu).map_err(candle_core::Error::wrap)?,
        on(DType::F16, &gpu).map_err(candle_core::Error::wrap)?,
    );

    let latent = 32;
    let sample = randn("sample", &[2, 4, latent, latent])?;
    let timesteps = Tensor::new(&[500f32, 300.0], &Device::Cpu)?;
    let context = randn("context", &[2, 8, cfg.cross_attention_dim])?;
    let text_embeds = randn("text_embeds", &[2, cfg.pooled_text_dim])?;
    let time_ids = Tensor::new(&[[256f32, 256.0, 0.0, 0.0, 256.0, 256.0]; 2], &Device::Cpu)?;
    // ControlNet residuals of a tenth of a unit, one per skip connection and the middle.
    let widths = [64, 64, 64, 64, 64, 64, 64, 128, 128];
    let sizes = [32, 32, 32, 16, 16, 16, 8, 8, 8];
    let down = widths
        .iter()
        .zip(sizes)
        .enumerate()
        .map(|(i, (&c, s))| randn(&format!("down {i}"), &[2, c, s, s])? * 0.1)
        .collect::<Result<Vec<_>>>()?;
    let mid = (randn("mid", &[2, 128, 8, 8])? * 0.1)?;

    let run = |store: &ResidentStore, device: &Device, dtype: DType, with_control: bool| -> Result<Tensor> {
        let to = |t: &Tensor| t.to_dtype(dtype)?.to_device(device);
        let control = ControlResiduals {
            down: down.iter().map(to).collect::<Result<_>>()?,
            mid: to(&mid)?,
        };
        let (sample, timesteps, context) = (to(&sample)?, timesteps.to_device(device)?, to(&context)?);
        let (text_embeds, time_ids) = (to(&text_embeds)?, time_ids.to_device(device)?);
        let input = UNetInput {
            sample: &sample,
            timesteps: &timesteps,
            context: &context,
            projected: None,
            text_embeds: &text_embeds,
            time_ids: &time_ids,
            control: with_control.then_some(&control),
            extra_tokens: None,
        };
        unet.forward(store, &input)
    };
    for with_control in [false, true] {
        let expected = run(&cpu_store, &Device::Cpu, DType::F32, with_control)?;
        let out = run(&gpu_store, &gpu, DType::F16, with_control)?;
        assert_eq!(out.dims(), expected.dims());
        let error = error_of_largest_value(&out, &expected)?;
        assert!(error < 2e-2, "ControlNet residuals {with_control}: error {error}");
    }
    Ok(())
}
