//! Loading ControlNets: diffusers folders (`config.json` beside
//! `diffusion_pytorch_model.safetensors`), single safetensors files, and the built-in ones.

use super::{ControlNet, ControlNetConfig};
use crate::checkpoint::diffusers::{open, weights_file};
use candle_core::DType;
use std::path::Path;
use std::sync::Arc;
use swapgraph_model::{ModelHandle, Network, TensorSource};
use swapgraph_node_api::NodeError;

/// The name workflows use for the built-in tiny ControlNet (matches the built-in tiny SDXL).
pub const TINY_CONTROLNET: &str = "builtin:tiny-controlnet";

/// The built-in ControlNet at SDXL's size with random weights (matches `builtin:random-sdxl`).
pub const RANDOM_CONTROLNET: &str = "builtin:random-controlnet";

/// Loads `name`: `builtin:tiny-controlnet`, `builtin:random-controlnet`, a diffusers ControlNet folder, or a `.safetensors`
/// file (its configuration from a `config.json` beside it, else SDXL's). Weights stay on the
/// host until a sampler asks for them.
///
/// # Errors
/// A message naming the path and the problem: not found, a bad `config.json`, or (when sampling
/// starts) a missing or mis-shaped tensor.
pub fn load(name: &str) -> Result<ModelHandle, NodeError> {
    let failed = |e: candle_core::Error| NodeError::msg(format!("{name}: {e}"));
    // The tiny model's weights are drawn in f32, so CPU runs use their exact values; the
    // SDXL-size one's in f16, the dtype it runs in on a GPU, at half the host memory.
    let builtin = match name {
        TINY_CONTROLNET => Some((ControlNetConfig::tiny(), DType::F32)),
        RANDOM_CONTROLNET => Some((ControlNetConfig::sdxl(), DType::F16)),
        _ => None,
    };
    if let Some((cfg, master)) = builtin {
        let controlnet = ControlNet::new(cfg).map_err(failed)?;
        let params: Vec<_> = controlnet
            .units()
            .iter()
            .flat_map(|u| u.tensors.iter().map(|(n, s)| (u.key(n), s.clone())))
            .collect();
        let source = TensorSource::seeded(name, "controlnet", params, master);
        return Ok(ModelHandle::new(name, Arc::new(controlnet), Arc::new(source)));
    }
    let path = Path::new(name);
    let (config, weights) = if path.is_dir() {
        (
            Some(path.join("config.json")),
            weights_file(path, "", "diffusion_pytorch_model")?,
        )
    } else if path.is_file() {
        let beside = path.with_file_name("config.json");
        (beside.is_file().then_some(beside), path.to_path_buf())
    } else {
        return Err(NodeError::msg(format!(
            "ControlNet \"{name}\" not found: give a diffusers ControlNet folder, a .safetensors file or {TINY_CONTROLNET}"
        )));
    };
    let cfg = match config {
        Some(config) => {
            let text =
                std::fs::read_to_string(&config).map_err(|e| NodeError::msg(format!("{}: {e}", config.display())))?;
            ControlNetConfig::from_diffusers_json(&text)
                .map_err(|e| NodeError::msg(format!("{}: {e}", config.display())))?
        }
        None => ControlNetConfig::sdxl(),
    };
    let controlnet = ControlNet::new(cfg).map_err(failed)?;
    Ok(ModelHandle::new(name, Arc::new(controlnet), Arc::new(open(&weights)?)))
}
