//! Built-in checkpoints with seeded random weights, so every workflow runs on a fresh machine
//! without downloads. Their images are noise; their code path is the real one.
//!
//! - `builtin:tiny-sdxl`: SDXL's architecture at toy widths, for tests and the examples.
//! - `builtin:random-sdxl`: SDXL base at its real size (2.6 B UNet parameters, both text
//!   encoders, the VAE), for measuring time and memory where the real weights cannot be had.

use super::Checkpoint;
use crate::clip::{ClipConfig, ClipTextEncoder, ClipTokenizer};
use crate::conditioning::TextEncoders;
use crate::unet::{UNet, UNetConfig};
use crate::vae::{Vae, VaeConfig};
use candle_core::{DType, Shape};
use std::sync::Arc;
use swapgraph_model::{record_params, ModelHandle, TensorSource};
use swapgraph_node_api::NodeError;

/// The name workflows use for the built-in tiny SDXL checkpoint.
pub const TINY_SDXL: &str = "builtin:tiny-sdxl";

/// The name of the built-in SDXL-size checkpoint with random weights.
pub const RANDOM_SDXL: &str = "builtin:random-sdxl";

/// The configurations of a built-in checkpoint's networks, and the dtype its weights are drawn
/// in: f32 for the tiny model (CPU runs use its exact values), f16 for the SDXL-size one (the
/// dtype it runs in on a GPU, at half the host memory).
pub struct BuiltinSizes {
    master: DType,
    unet: UNetConfig,
    clip_l: ClipConfig,
    clip_g: ClipConfig,
    vae: VaeConfig,
}

impl BuiltinSizes {
    /// The built-in checkpoint called `name`, if there is one.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            TINY_SDXL => Some(Self {
                master: DType::F32,
                unet: UNetConfig::tiny(),
                clip_l: ClipConfig::tiny_l(),
                clip_g: ClipConfig::tiny_big_g(),
                vae: VaeConfig::tiny(),
            }),
            RANDOM_SDXL => Some(Self {
                master: DType::F16,
                unet: UNetConfig::sdxl(),
                clip_l: ClipConfig::vit_l(),
                clip_g: ClipConfig::vit_big_g(),
                vae: VaeConfig::sdxl(),
            }),
            _ => None,
        }
    }
}

/// Builds the built-in checkpoint `name` of `sizes`; its weights are drawn when a model reads
/// them, the same every time.
pub fn seeded_checkpoint(name: &str, sizes: &BuiltinSizes) -> Result<Checkpoint, NodeError> {
    let failed = |e: candle_core::Error| NodeError::msg(format!("{name}: {e}"));
    let unet = UNet::new(sizes.unet.clone()).map_err(failed)?;
    let unet_params: Vec<(String, Shape)> = unet
        .units()
        .iter()
        .flat_map(|u| u.tensors.iter().map(|(n, s)| (u.key(n), s.clone())))
        .collect();
    let seeded = |part: &str, params: Vec<(String, Shape)>| {
        Arc::new(TensorSource::seeded(
            format!("{name} {part}"),
            part,
            params,
            sizes.master,
        ))
    };
    let model = ModelHandle::new(name, Arc::new(unet), seeded("unet", unet_params));
    let encoder = |part: &str, cfg: ClipConfig| -> candle_core::Result<(Arc<TensorSource>, ClipConfig)> {
        Ok((seeded(part, record_params(|vb| ClipTextEncoder::new(vb, &cfg))?), cfg))
    };
    let clip = TextEncoders::new(
        name,
        ClipTokenizer::standard().map_err(|e| NodeError::msg(e.to_string()))?,
        encoder("clip_l", sizes.clip_l).map_err(failed)?,
        encoder("clip_g", sizes.clip_g).map_err(failed)?,
    )
    .map_err(failed)?;
    let vae_cfg = sizes.vae;
    let vae_source = seeded("vae", record_params(|vb| Vae::new(vb, &vae_cfg)).map_err(failed)?);
    let vae = Vae::on_demand(name, vae_source, vae_cfg).map_err(failed)?;
    Ok(Checkpoint {
        model,
        clip: Arc::new(clip),
        vae: Arc::new(vae),
    })
}
