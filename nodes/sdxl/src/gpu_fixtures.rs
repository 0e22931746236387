//! What the GPU tests of whole networks share: seeded random weights for a network's units,
//! held on the CPU in f32 (the reference) and on the GPU in f16, and one CFG batch of seeded UNet
//! inputs that each side takes in its own device and dtype.

use crate::unet::{UNetConfig, UNetInput};
use candle_core::{DType, Device, Result, Shape, Tensor};
use swapgraph_model::{seeded_tensor, seeded_tensors, ResidentStore, TensorSource, UnitSpec};

/// The tiny UNet at widths every CUDA kernel takes: heads of 64, groups of two and four
/// channels, 64-wide context tokens.
pub fn kernel_sized_unet() -> UNetConfig {
    UNetConfig {
        block_out_channels: [64, 64, 128],
        head_dim: 64,
        cross_attention_dim: 64,
        ..UNetConfig::tiny()
    }
}

/// Seeded N(0, 1) values of `shape`: a matrix of one column, whose fan-in of 1 leaves them
/// unscaled.
pub fn randn(model: &str, name: &str, shape: &[usize]) -> Result<Tensor> {
    let count = shape.iter().product::<usize>();
    seeded_tensor(model, name, &Shape::from((count, 1)), DType::F32)?.reshape(shape)
}

/// `units`' seeded weights as stores: f32 on the CPU, f16 on `gpu`.
pub fn stores(model: &str, units: &[UnitSpec], gpu: &Device) -> Result<(ResidentStore, ResidentStore)> {
    let params: Vec<(String, Shape)> = units
        .iter()
        .flat_map(|unit| unit.tensors.iter().map(|(name, shape)| (unit.key(name), shape.clone())))
        .collect();
    let source = TensorSource::from_tensors("random", seeded_tensors(model, &params, DType::F32)?);
    let on = |dtype: DType, device: &Device| {
        ResidentStore::load(units.to_vec(), &source, dtype, device).map_err(candle_core::Error::wrap)
    };
    Ok((on(DType::F32, &Device::Cpu)?, on(DType::F16, gpu)?))
}

/// A CFG batch of two: latents, timesteps, `tokens` context tokens, the pooled embedding and
/// the size ids, with the latents and embeddings in one dtype on one device.
pub struct SeededInputs {
    sample: Tensor,
    timesteps: Tensor,
    context: Tensor,
    text_embeds: Tensor,
    time_ids: Tensor,
}

impl SeededInputs {
    /// Inputs for `cfg` at `latent` x `latent`, in f32 on the CPU.
    pub fn new(model: &str, cfg: &UNetConfig, latent: usize, tokens: usize) -> Result<Self> {
        let size = (latent * 8) as f32;
        Ok(Self {
            sample: randn(model, "sample", &[2, cfg.in_channels, latent, latent])?,
            timesteps: Tensor::new(&[500f32, 300.0], &Device::Cpu)?,
            context: randn(model, "context", &[2, tokens, cfg.cross_attention_dim])?,
            text_embeds: randn(model, "text_embeds", &[2, cfg.pooled_text_dim])?,
            time_ids: Tensor::new(&[[size, size, 0.0, 0.0, size, size]; 2], &Device::Cpu)?,
        })
    }

    /// The same inputs on `device`, latents and embeddings in `dtype` (timesteps and ids stay f32).
    pub fn on(&self, device: &Device, dtype: DType) -> Result<Self> {
        let to = |t: &Tensor| t.to_dtype(dtype)?.to_device(device);
        Ok(Self {
            sample: to(&self.sample)?,
            timesteps: self.timesteps.to_device(device)?,
            context: to(&self.context)?,
            text_embeds: to(&self.text_embeds)?,
            time_ids: self.time_ids.to_device(device)?,
        })
    }

    /// The inputs of one pass, without ControlNet residuals or image tokens.
    pub fn input(&self) -> UNetInput<'_> {
        UNetInput {
            sample: &self.sample,
            timesteps: &self.timesteps,
            context: &self.context,
            projected: None,
            text_embeds: &self.text_embeds,
            time_ids: &self.time_ids,
            control: None,
            extra_tokens: None,
        }
    }
}
