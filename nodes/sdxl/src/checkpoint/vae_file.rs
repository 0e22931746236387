//! A VAE on its own, as ComfyUI's `models/vae/` folder holds them (SDXL's VAE, or a fixed one
//! such as the fp16-safe SDXL VAE): a single file in the original layout (with or without a
//! checkpoint's `first_stage_model.` prefix) or in diffusers' layout, a diffusers `vae/` folder
//! (or a pipeline folder holding one), or a built-in model's VAE.

use super::diffusers::{open, part_folder};
use super::shapes::{vae_sizes, VaeLayout, ORIGINAL_VAE_PREFIX};
use super::single_file::vae_key;
use super::ModelFile;
use crate::vae::{Vae, VaeConfig, VaeModel};
use std::path::Path;
use std::sync::Arc;
use swapgraph_model::{SourceKey, TensorSource};
use swapgraph_node_api::NodeError;

/// Loads the VAE `name`, its weights still in the file.
///
/// # Errors
/// A message naming the file: not found, not a VAE, or a shape this code cannot build.
pub fn load(name: &str) -> Result<Arc<VaeModel>, NodeError> {
    let give = "an SDXL VAE .safetensors file (original or diffusers layout) or a diffusers vae/ folder";
    match ModelFile::find(name, "VAE", give)? {
        ModelFile::Builtin(checkpoint) => Ok(checkpoint.vae),
        ModelFile::Folder(path) => load_folder(path),
        ModelFile::File(path) => load_single_file(path, None),
    }
}

/// A diffusers VAE folder (`config.json` beside `diffusion_pytorch_model.safetensors`), or a
/// pipeline folder with one under `vae/`.
fn load_folder(path: &Path) -> Result<Arc<VaeModel>, NodeError> {
    let (cfg, source) = part_folder(path, "vae", |text| {
        VaeConfig::from_diffusers_json(text).map_err(NodeError::msg)
    })?;
    model(path, cfg, source)
}

/// A single file of the VAE alone, in either layout, of sizes `cfg` (`None`: read from its
/// tensors' shapes, with SDXL's 32 GroupNorm groups).
///
/// # Errors
/// As [`load`].
pub fn load_single_file(path: &Path, cfg: Option<VaeConfig>) -> Result<Arc<VaeModel>, NodeError> {
    let source = open(path)?;
    let keys = source.keys();
    let has = |prefix: &str| keys.iter().any(|k| k.starts_with(prefix));
    let layout = if has(&format!("{ORIGINAL_VAE_PREFIX}encoder.down.")) {
        VaeLayout::Original(ORIGINAL_VAE_PREFIX)
    } else if has("encoder.down.") {
        VaeLayout::Original("")
    } else if has("encoder.down_blocks.") {
        VaeLayout::Diffusers
    } else {
        return Err(NodeError::msg(format!(
            "{} is not a VAE (it has no encoder.down nor encoder.down_blocks tensors)",
            path.display()
        )));
    };
    let cfg = match cfg {
        Some(cfg) => cfg,
        None => vae_sizes(&source, layout).map_err(|e| NodeError::msg(format!("{}: {e}", path.display())))?,
    };
    let levels = cfg.block_out_channels.len();
    let source = match layout {
        VaeLayout::Diffusers => source,
        VaeLayout::Original(prefix) => source.with_key_map(Arc::new(move |key: &str| {
            let SourceKey { key, part } = vae_key(key, levels)?;
            let bare = key.strip_prefix(ORIGINAL_VAE_PREFIX).unwrap_or(&key);
            Some(SourceKey {
                key: format!("{prefix}{bare}"),
                part,
            })
        })),
    };
    model(path, cfg, source)
}

/// The VAE of `cfg` reading `source`, brought to a device when it decodes or encodes there.
fn model(path: &Path, cfg: VaeConfig, source: TensorSource) -> Result<Arc<VaeModel>, NodeError> {
    let name = path.display().to_string();
    let vae = Vae::on_demand(&name, Arc::new(source), cfg).map_err(|e| NodeError::msg(format!("{name}: {e}")))?;
    Ok(Arc::new(vae))
}
