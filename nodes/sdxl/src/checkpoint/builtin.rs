//! `builtin:tiny-sdxl`: SDXL's architecture at toy widths with seeded random weights, so every
//! workflow runs on a fresh machine without downloads. Its images are noise; its code path is
//! the real one.

use super::Checkpoint;
use crate::clip::{ClipConfig, ClipTextEncoder, ClipTokenizer};
use crate::conditioning::TextEncoders;
use crate::device::{model_dtype, vae_dtype};
use crate::unet::{UNet, UNetConfig};
use crate::vae::{Vae, VaeConfig};
use candle_core::{Device, Shape};
use std::sync::Arc;
use swapgraph_model::{record_params, seeded_tensors, ModelHandle, TensorSource};
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
        seeded_tensors("unet", &unet_params).map_err(failed)?,
    );
    let model = ModelHandle::new(TINY_SDXL, Arc::new(unet), Arc::new(source));

    let encoder = |name: &str, cfg: ClipConfig| -> candle_core::Result<ClipTextEncoder> {
        let params = record_params(|vb| ClipTextEncoder::new(vb, &cfg))?;
        let tensors = seeded_tensors(name, &params)?;
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
    let tensors = seeded_tensors("vae", &params).map_err(failed)?;
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
