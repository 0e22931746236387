//! `builtin:tiny-sdxl`: SDXL's architecture at toy widths with seeded random weights, so every
//! workflow runs on a fresh machine without downloads. Its images are noise; its code path is
//! the real one.

use super::Checkpoint;
use crate::clip::{ClipConfig, ClipTextEncoder, ClipTokenizer};
use crate::conditioning::TextEncoders;
use crate::device::{model_dtype, vae_dtype};
use crate::unet::{UNet, UNetConfig};
use crate::vae::{Vae, VaeConfig};
use candle_core::{DType, Device, Shape, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::collections::HashMap;
use std::sync::Arc;
use swapgraph_model::{record_params, ModelHandle, TensorSource};
use swapgraph_node_api::NodeError;

/// The name workflows use for the built-in tiny SDXL checkpoint.
pub const TINY_SDXL: &str = "builtin:tiny-sdxl";

/// Builds the tiny checkpoint; the same weights every time.
pub fn tiny_sdxl(device: &Device) -> Result<Checkpoint, NodeError> {
    let failed = |e: candle_core::Error| NodeError::msg(format!("{TINY_SDXL}: {e}"));
    let unet = UNet::new(UNetConfig::tiny()).map_err(failed)?;
    let unet_params: Vec<(String, Shape)> = unet
        .units()
        .iter()
        .flat_map(|u| u.tensors.iter().map(|(n, s)| (u.key(n), s.clone())))
        .collect();
    let source = TensorSource::from_tensors(
        format!("{TINY_SDXL} unet"),
        random_tensors("unet", &unet_params).map_err(failed)?,
    );
    let model = ModelHandle::new(TINY_SDXL, Arc::new(unet), Arc::new(source));

    let encoder = |name: &str, cfg: ClipConfig| -> candle_core::Result<ClipTextEncoder> {
        let params = record_params(|vb| ClipTextEncoder::new(vb, &cfg))?;
        let tensors = random_tensors(name, &params)?;
        ClipTextEncoder::new(
            candle_nn::VarBuilder::from_tensors(tensors, model_dtype(device), device),
            &cfg,
        )
    };
    let tokenizer = ClipTokenizer::standard().map_err(|e| NodeError::msg(e.to_string()))?;
    let clip = TextEncoders {
        tokenizer,
        clip_l: encoder("clip_l", ClipConfig::tiny_l()).map_err(failed)?,
        clip_g: encoder("clip_g", ClipConfig::tiny_big_g()).map_err(failed)?,
        device: device.clone(),
    };
    let vae_cfg = VaeConfig::tiny();
    let params = record_params(|vb| Vae::new(vb, &vae_cfg)).map_err(failed)?;
    let tensors = random_tensors("vae", &params).map_err(failed)?;
    let vae = Vae::new(
        candle_nn::VarBuilder::from_tensors(tensors, vae_dtype(device), device),
        &vae_cfg,
    )
    .map_err(failed)?;
    Ok(Checkpoint {
        model,
        clip: Arc::new(clip),
        vae: Arc::new(vae),
    })
}

/// Seeded weights for each named shape: matrices and kernels ~ N(0, 1/fan_in), norm scales 1,
/// biases 0. Each tensor's seed comes from its model and name, so adding a tensor elsewhere never
/// changes the others.
pub(crate) fn random_tensors(model: &str, params: &[(String, Shape)]) -> candle_core::Result<HashMap<String, Tensor>> {
    params
        .iter()
        .map(|(name, shape)| {
            let dims = shape.dims();
            let tensor = if dims.len() > 1 {
                let fan_in: usize = dims[1..].iter().product();
                let mut rng = ChaCha8Rng::seed_from_u64(fnv1a(&format!("{model}/{name}")));
                let values: Vec<f32> = (0..shape.elem_count())
                    .map(|_| StandardNormal.sample(&mut rng))
                    .collect::<Vec<f32>>();
                let scale = 1.0 / (fan_in as f32).sqrt();
                Tensor::from_vec(
                    values.into_iter().map(|v| v * scale).collect::<Vec<f32>>(),
                    dims,
                    &Device::Cpu,
                )?
            } else if name.ends_with("weight") {
                Tensor::ones(dims, DType::F32, &Device::Cpu)?
            } else {
                Tensor::zeros(dims, DType::F32, &Device::Cpu)?
            };
            Ok((name.clone(), tensor))
        })
        .collect()
}

/// FNV-1a, a hash that is the same on every platform and release.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
