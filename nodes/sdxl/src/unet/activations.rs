//! Activation memory of a UNet step at a latent size, measured on the device itself: the
//! real forward pass with every weight a view of one zero buffer, so only activations take
//! memory and no weights need loading. Weights kept in 8 bits are widened as the layers are
//! built, so those widened copies count too.

use super::{UNet, UNetInput};
use candle_core::{DType, Device, Result, Tensor};
use std::collections::HashMap;
use swapgraph_model::{device_memory, reset_peak_memory, UnitSpec, UnitWeights, WeightDTypes, WeightStore};

/// Hands every unit zero weights of the right shapes, all views of one buffer.
struct ZeroStore {
    units: Vec<UnitSpec>,
    zeros: Tensor,
    device: Device,
    dtype: DType,
    eight_bit_products: bool,
}

impl WeightStore for ZeroStore {
    fn units(&self) -> &[UnitSpec] {
        &self.units
    }

    fn acquire(&self, unit: usize) -> Result<UnitWeights> {
        let spec = self
            .units
            .get(unit)
            .ok_or_else(|| candle_core::Error::Msg(format!("no unit {unit}")))?;
        let tensors = spec
            .tensors
            .iter()
            .map(|(name, shape)| {
                Ok((
                    name.clone(),
                    self.zeros.narrow(0, 0, shape.elem_count())?.reshape(shape)?,
                ))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(UnitWeights::new(tensors).with_eight_bit_products(self.eight_bit_products))
    }

    fn release(&self, _unit: usize) {}

    fn device(&self) -> &Device {
        &self.device
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
}

/// Peak activation bytes of one forward pass of `unet` with classifier-free guidance (batch 2)
/// on latents of `latent_h` x `latent_w`, computing in `dtypes.compute` with weights kept in
/// `dtypes.kept` on `device`; `None` where the device does not report memory.
///
/// # Errors
/// A device error, out-of-memory included (the activations do not fit).
pub fn step_activations(
    unet: &UNet,
    device: &Device,
    dtypes: impl Into<WeightDTypes>,
    (latent_h, latent_w): (usize, usize),
) -> Result<Option<u64>> {
    let WeightDTypes {
        compute: dtype,
        kept,
        eight_bit_products,
    } = dtypes.into();
    let cfg = unet.config();
    let largest = unet
        .units()
        .iter()
        .flat_map(|u| u.tensors.iter().map(|(_, shape)| shape.elem_count()))
        .max()
        .unwrap_or(1);
    let store = ZeroStore {
        units: unet.units().to_vec(),
        zeros: Tensor::zeros(largest, kept, device)?,
        device: device.clone(),
        dtype,
        eight_bit_products,
    };
    let sample = Tensor::zeros((2, cfg.in_channels, latent_h, latent_w), dtype, device)?;
    let timesteps = Tensor::new(&[500f32, 500.0], device)?;
    let context = Tensor::zeros((2, 77, cfg.cross_attention_dim), dtype, device)?;
    let text_embeds = Tensor::zeros((2, cfg.pooled_text_dim), dtype, device)?;
    let (h, w) = ((latent_h * 8) as f32, (latent_w * 8) as f32);
    let time_ids = Tensor::new(&[[h, w, 0.0, 0.0, h, w]; 2], device)?;
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
    let Some(before) = device_memory(device) else {
        return Ok(None);
    };
    // A first pass allocates what every later one reuses (library workspaces, kernels): measured
    // in the pass, it would make the first probe look larger than the second.
    drop(unet.forward(&store, &input)?);
    let before = device_memory(device).unwrap_or(before);
    reset_peak_memory(device);
    let output = unet.forward(&store, &input)?;
    drop(output);
    let after = device_memory(device).unwrap_or(before);
    Ok(Some(after.peak_allocated.saturating_sub(before.allocated)))
}
