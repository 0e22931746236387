//! SDXL as BlockSwap's setup check sees it: the base UNet's units, its text encoders and VAE
//! beside it, its activations per resolution, and the built-in tiny UNet with fixed inputs for a
//! streamed round trip.

use crate::checkpoint::{load, TINY_SDXL};
use crate::clip::{ClipConfig, ClipTextEncoder};
use crate::device::vae_dtype;
use crate::unet::{step_activations, UNet, UNetConfig, UNetInput};
use crate::vae::{Vae, VaeConfig};
use candle_core::{DType, Device, Shape, Tensor};
use swapgraph_model::{record_params, weight_dtype, ModelHandle, StreamedFamily, TinyModel, UnitSpec, WeightStore};
use swapgraph_node_api::VramBudget;

/// SDXL base.
pub struct SdxlFamily;

impl StreamedFamily for SdxlFamily {
    fn name(&self) -> &'static str {
        "SDXL UNet"
    }

    fn units(&self) -> candle_core::Result<Vec<UnitSpec>> {
        Ok(UNet::new(UNetConfig::sdxl())?.units().to_vec())
    }

    fn companion_bytes(&self, device: &Device) -> candle_core::Result<u64> {
        let count = |params: Vec<(String, Shape)>| params.iter().map(|(_, s)| s.elem_count() as u64).sum::<u64>();
        let clip_l = count(record_params(|vb| ClipTextEncoder::new(vb, &ClipConfig::vit_l()))?);
        let clip_g = count(record_params(|vb| ClipTextEncoder::new(vb, &ClipConfig::vit_big_g()))?);
        let vae = count(record_params(|vb| Vae::new(vb, &VaeConfig::sdxl()))?);
        let text = weight_dtype(device).size_in_bytes() as u64;
        Ok((clip_l + clip_g) * text + vae * vae_dtype(device).size_in_bytes() as u64)
    }

    fn step_activations(&self, device: &Device, dtype: DType, resolution: usize) -> candle_core::Result<Option<u64>> {
        let unet = UNet::new(UNetConfig::sdxl())?;
        step_activations(&unet, device, dtype, (resolution / 8, resolution / 8))
    }

    fn tiny(&self, device: &Device, dtype: DType) -> Result<Box<dyn TinyModel>, String> {
        let model = load(TINY_SDXL, device, VramBudget::Auto)
            .map_err(|e| e.to_string())?
            .model;
        let inputs = Inputs::new(device, dtype).map_err(|e| format!("inputs: {e}"))?;
        Ok(Box::new(TinyUNet { model, inputs }))
    }
}

/// The built-in tiny UNet with its fixed inputs.
struct TinyUNet {
    model: ModelHandle,
    inputs: Inputs,
}

impl TinyModel for TinyUNet {
    fn model(&self) -> &ModelHandle {
        &self.model
    }

    fn run(&self, store: &dyn WeightStore) -> candle_core::Result<Tensor> {
        let unet = self
            .model
            .network
            .as_any()
            .downcast_ref::<UNet>()
            .ok_or_else(|| candle_core::Error::Msg("the built-in model is not a UNet".into()))?;
        let input = UNetInput {
            sample: &self.inputs.sample,
            timesteps: &self.inputs.timesteps,
            context: &self.inputs.context,
            projected: None,
            text_embeds: &self.inputs.text_embeds,
            time_ids: &self.inputs.time_ids,
            control: None,
            extra_tokens: None,
        };
        unet.forward(store, &input)
    }
}

/// Seeded inputs for the tiny UNet at 32x32 latents.
struct Inputs {
    sample: Tensor,
    timesteps: Tensor,
    context: Tensor,
    text_embeds: Tensor,
    time_ids: Tensor,
}

impl Inputs {
    fn new(device: &Device, dtype: DType) -> candle_core::Result<Self> {
        let cfg = UNetConfig::tiny();
        let ramp = |n: usize, shape: &[usize]| -> candle_core::Result<Tensor> {
            Tensor::arange(0u32, n as u32, &Device::Cpu)?
                .to_dtype(DType::F32)?
                .affine(0.37, 0.0)?
                .sin()?
                .reshape(shape)?
                .to_dtype(dtype)?
                .to_device(device)
        };
        Ok(Self {
            sample: ramp(2 * cfg.in_channels * 32 * 32, &[2, cfg.in_channels, 32, 32])?,
            timesteps: Tensor::new(&[500f32, 500.0], device)?,
            context: ramp(2 * 8 * cfg.cross_attention_dim, &[2, 8, cfg.cross_attention_dim])?,
            text_embeds: ramp(2 * cfg.pooled_text_dim, &[2, cfg.pooled_text_dim])?,
            time_ids: Tensor::new(&[[256f32, 256.0, 0.0, 0.0, 256.0, 256.0]; 2], device)?,
        })
    }
}
