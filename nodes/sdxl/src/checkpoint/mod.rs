//! Loading SDXL checkpoints: the built-in tiny model, single files in the original layout, and
//! diffusers folders.

mod builtin;
pub mod clip_file;
pub(crate) mod diffusers;
mod shapes;
pub mod single_file;
pub mod unet_file;
pub mod vae_file;

use builtin::BuiltinSizes;
pub use builtin::{RANDOM_SDXL, TINY_SDXL};

use crate::conditioning::TextEncoders;
use crate::vae::VaeModel;
use candle_core::Device;
use std::path::Path;
use std::sync::Arc;
use swapgraph_model::ModelHandle;
use swapgraph_node_api::{NodeError, VramBudget};

/// What `CheckpointLoaderSimple` outputs.
pub struct Checkpoint {
    /// The UNet, its weights still on the host.
    pub model: ModelHandle,
    /// Both text encoders, on the run's device until another model needs the room.
    pub clip: Arc<TextEncoders>,
    /// The VAE, on the run's device until another model needs the room.
    pub vae: Arc<VaeModel>,
}

impl Checkpoint {
    /// Places the text encoders and the VAE on `device` within `budget`, so that a missing or
    /// mis-shaped weight is reported when the checkpoint loads rather than when it is first
    /// used.
    ///
    /// # Errors
    /// A message naming the checkpoint and the problem.
    fn placed(self, name: &str, device: &Device, budget: VramBudget) -> Result<Self, NodeError> {
        let failed = |e: candle_core::Error| NodeError::msg(format!("{name}: {e}"));
        self.clip.clip_l.get(device, budget).map_err(failed)?;
        self.clip.clip_g.get(device, budget).map_err(failed)?;
        self.vae.get(device, budget).map_err(failed)?;
        Ok(self)
    }
}

/// Loads `name`: `builtin:tiny-sdxl`, `builtin:random-sdxl`, a single-file SDXL checkpoint (`.safetensors` in the
/// original layout, as published on model hubs), or a diffusers SDXL folder.
///
/// # Errors
/// A message naming the checkpoint and the problem: not found, not SDXL (SD 1.x and 2.x are
/// recognised and named), a missing or mis-shaped tensor.
pub fn load(name: &str, device: &Device, budget: VramBudget) -> Result<Checkpoint, NodeError> {
    let checkpoint = if let Some(sizes) = BuiltinSizes::named(name) {
        builtin::seeded_checkpoint(name, &sizes)?
    } else {
        let mut loaded = load_file(name)?;
        // A checkpoint saved in 8-bit floats keeps its UNet's weights so.
        if unet_file::stored_in_eight_bits(&loaded.model) {
            loaded.model = loaded.model.with_kept_dtype(Some(candle_core::DType::F8E4M3));
        }
        loaded
    };
    checkpoint.placed(name, device, budget)
}

/// One model of a checkpoint given on its own (UNETLoader, VAELoader): where its name leads.
pub(crate) enum ModelFile<'a> {
    /// A built-in checkpoint's model.
    Builtin(Checkpoint),
    /// A folder.
    Folder(&'a Path),
    /// A single file.
    File(&'a Path),
}

impl<'a> ModelFile<'a> {
    /// Where `name` leads, or a message that it was not found, saying what to `give`.
    ///
    /// # Errors
    /// A built-in that cannot be made, or a name that is no file, folder or built-in.
    pub(crate) fn find(name: &'a str, what: &str, give: &str) -> Result<Self, NodeError> {
        if let Some(sizes) = BuiltinSizes::named(name) {
            return Ok(Self::Builtin(builtin::seeded_checkpoint(name, &sizes)?));
        }
        let path = Path::new(name);
        if path.is_dir() {
            Ok(Self::Folder(path))
        } else if path.is_file() {
            Ok(Self::File(path))
        } else {
            Err(NodeError::msg(format!(
                "{what} \"{name}\" not found: give {give}, or a built-in model (\"{TINY_SDXL}\", \"{RANDOM_SDXL}\")"
            )))
        }
    }
}

/// A checkpoint file or folder, its weights still on the host.
fn load_file(name: &str) -> Result<Checkpoint, NodeError> {
    if let Some(other) = name.strip_prefix("builtin:") {
        return Err(NodeError::msg(format!(
            "unknown built-in checkpoint \"builtin:{other}\"; the built-in ones are \"{TINY_SDXL}\" and \"{RANDOM_SDXL}\""
        )));
    }
    let path = Path::new(name);
    if path.is_dir() {
        diffusers::load_folder(path)
    } else if path.is_file() {
        diffusers::load_single_file(path)
    } else {
        Err(NodeError::msg(format!(
            "checkpoint \"{name}\" not found: give an SDXL .safetensors file, a diffusers SDXL folder (with unet/, text_encoder/, text_encoder_2/, vae/) or \"{TINY_SDXL}\""
        )))
    }
}
