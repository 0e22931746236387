//! A whole ControlNet on the GPU in f16 against the CPU in f32, at widths every kernel takes:
//! the hint's embedding and the zero convolutions run cuDNN's convolutions with the images
//! channels-last between them, and every residual must match the CPU's.

use super::{ControlNet, ControlNetConfig};
use crate::kernels::cuda::error_of_largest_value;
use crate::unet::{UNetConfig, UNetInput};
use candle_core::{DType, Device, Result, Shape, Tensor};
use std::collections::HashMap;
use swapgraph_model::{seeded_tensor, ResidentStore, TensorSource};

fn randn(name: &str, shape: &[usize]) -> Result<Tensor> {
    let count = shape.iter().product::<usize>();
    seeded_tensor("ControlNet on the GPU", name, &Shape::from((count, 1)), DType::F32)?.reshape(shape)
}

#[test]
fn the_controlnet_on_the_gpu_matches_the_cpu_f32_reference() -> Result<()> {
    let cfg = ControlNetConfig {
        unet: UNetConfig {
            block_out_channels: [64, 64, 128],
            head_dim: 64,
            cross_attention_dim: 64,
            ..UNetConfig::tiny()
        },
        conditioning_channels: 3,
        embedding_channels: vec![16, 16, 32, 32],
    };
    let controlnet = ControlNet::new(cfg.clone())?;
    let weights: HashMap<String, Tensor> = controlnet
        .units
        .iter()
        .flat_map(|unit| unit.tensors.iter().map(|(name, shape)| (unit.key(name), shape.clone())))
        .map(|(key, shape)| {
            Ok((
                key.clone(),
                seeded_tensor("ControlNet on the GPU", &key, &shape, DType::F32)?,
            ))
        })
        .collect::<Result<_>>()?;
    let source = TensorSource::from_tensors("random", weights);
    let gpu = Device::new_cuda(0)?;
    let on = |dtype: DType, device: &Device| ResidentStore::load(controlnet.units.clone(), &source, dtype, device);
    let (cpu_store, gpu_store) = (
        on(DType::F32, &Device::Cpu).map_err(candle_core::Error::wrap)?,
        on(DType::F16, &gpu).map_err(candle_core::Error::wrap)?,
    );

    let latent = 32;
    let sample = randn("sample", &[2, 4, latent, latent])?;
    let hint = (randn("hint", &[2, 3, 8 * latent, 8 * latent])?.abs()? * 0.5)?;
    let timesteps = Tensor::new(&[500f32, 300.0], &Device::Cpu)?;
    let context = randn("context", &[2, 16, cfg.unet.cross_attention_dim])?;
    let text_embeds = randn("text_embeds", &[2, cfg.unet.pooled_text_dim])?;
    let time_ids = Tensor::new(&[[256f32, 256.0, 0.0, 0.0, 256.0, 256.0]; 2], &Device::Cpu)?;

    let run = |store: &ResidentStore, device: &Device, dtype: DType| {
        let to = |t: &Tensor| t.to_dtype(dtype)?.to_device(device);
        let (sample, timesteps, context) = (to(&sample)?, timesteps.to_device(device)?, to(&context)?);
        let (text_embeds, time_ids) = (to(&text_embeds)?, time_ids.to_device(device)?);
        let input = UNetInput {
            sample: &sample,
            timesteps: &timesteps,
            context: &context,
            projected: None,
            text_embeds: &text_embeds,
            time_ids: &time_ids,
            control: None,
            extra_tokens: None,
        };
        controlnet.forward(store, &input, &to(&hint)?, 0.8)
    };
    let expected = run(&cpu_store, &Device::Cpu, DType::F32)?;
    let out = run(&gpu_store, &gpu, DType::F16)?;
    assert_eq!(out.down.len(), expected.down.len());
    for (i, (out, expected)) in out.down.iter().zip(&expected.down).enumerate() {
        assert_eq!(out.dims(), expected.dims());
        let error = error_of_largest_value(out, expected)?;
        assert!(error < 2e-2, "down residual {i}: error {error}");
    }
    let error = error_of_largest_value(&out.mid, &expected.mid)?;
    assert!(error < 2e-2, "middle residual: error {error}");
    Ok(())
}
