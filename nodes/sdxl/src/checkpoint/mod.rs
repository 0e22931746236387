//! Loading SDXL checkpoints: the built-in tiny model, single files in the original layout, and
//! diffusers folders.

mod builtin;
pub(crate) mod diffusers;
pub mod single_file;

use builtin::BuiltinSizes;
pub use builtin::{RANDOM_SDXL, TINY_SDXL};

use crate::conditioning::TextEncoders;
use crate::vae::Vae;
use candle_core::Device;
use std::path::Path;
use std::sync::Arc;
use swapgraph_model::ModelHandle;
use swapgraph_node_api::NodeError;

/// What `CheckpointLoaderSimple` outputs.
pub struct Checkpoint {
    /// The UNet, its weights still on the host.
    pub model: ModelHandle,
    /// Both text encoders, on the run's device.
    pub clip: Arc<TextEncoders>,
    /// The VAE, on the run's device.
    pub vae: Arc<Vae>,
}

/// Loads `name`: `builtin:tiny-sdxl`, `builtin:random-sdxl`, a single-file SDXL checkpoint (`.safetensors` in the
/// original layout, as published on model hubs), or a diffusers SDXL folder.
///
/// # Errors
/// A message naming the checkpoint and the problem: not found, not SDXL (SD 1.x and 2.x are
/// recognised and named), a missing or mis-shaped tensor.
pub fn load(name: &str, device: &Device) -> Result<Checkpoint, NodeError> {
    if let Some(sizes) = BuiltinSizes::named(name) {
        return builtin::seeded_checkpoint(name, &sizes, device);
    }
    if let Some(other) = name.strip_prefix("builtin:") {
        return Err(NodeError::msg(format!(
            "unknown built-in checkpoint \"builtin:{other}\"; the built-in ones are \"{TINY_SDXL}\" and \"{RANDOM_SDXL}\""
        )));
    }
    let path = Path::new(name);
    if path.is_dir() {
        diffusers::load_folder(path, device)
    } else if path.is_file() {
        diffusers::load_single_file(path, device)
    } else {
        Err(NodeError::msg(format!(
            "checkpoint \"{name}\" not found: give an SDXL .safetensors file, a diffusers SDXL folder (with unet/, text_encoder/, text_encoder_2/, vae/) or \"{TINY_SDXL}\""
        )))
    }
}
