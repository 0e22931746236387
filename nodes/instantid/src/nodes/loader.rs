//! `InstantIDModelLoader`: InstantID's adapter file (Resampler and IP-Adapter projections).

use super::{tensor_error, INSTANTID};
use crate::weights::{tiny_resampler, InstantIdModel, InstantIdWeights};
use std::path::Path;
use std::sync::Arc;
use swapgraph_model::{candle_device, memory_manager, weight_dtype};
use swapgraph_node_api::{Args, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, Value};
use swapgraph_sdxl::ip_adapter::ResamplerConfig;
use swapgraph_sdxl::unet::UNetConfig;

/// The name workflows use for the built-in tiny adapter (matches the built-in tiny SDXL).
pub const TINY_INSTANTID: &str = "builtin:tiny-instantid";

/// The built-in adapter at InstantID's real size with random weights (matches
/// `builtin:random-sdxl`).
pub const RANDOM_INSTANTID: &str = "builtin:random-instantid";

/// Loads an InstantID adapter onto the run's device.
pub struct InstantIdModelLoader {
    descriptor: NodeDescriptor,
}

/// The adapter to load.
#[derive(Params)]
struct AdapterFile {
    /// InstantID's ip-adapter.bin or a .safetensors inside the models folder (--models-dir), or builtin:tiny-instantid.
    #[param(default = TINY_INSTANTID, reads = Models)]
    instantid_file: Arc<str>,
}

impl InstantIdModelLoader {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "InstantIDModelLoader",
            "InstantID",
            "Loads InstantID's adapter: ip-adapter.bin as published (or a .safetensors with image_proj. and \
             ip_adapter. keys), for SDXL; builtin:tiny-instantid and builtin:random-instantid have random weights for builtin:tiny-sdxl \
             and builtin:random-sdxl.",
        )
        .uses_device()
        .params::<AdapterFile>()
        .output(INSTANTID, "The adapter.");
        Self { descriptor }
    }
}

impl NodeType for InstantIdModelLoader {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let name = ctx
            .files
            .model("instantid_file", &AdapterFile::from_args(args)?.instantid_file)?;
        let device = candle_device(ctx.device)?;
        let dtype = weight_dtype(&device);
        // The adapter stays on the device while the model it patches is in use: make its room
        // first, sending idle models away.
        if let Some(manager) = memory_manager(&device, ctx.vram_budget) {
            let (resampler, unet) = match name.as_str() {
                TINY_INSTANTID => (tiny_resampler(), UNetConfig::tiny()),
                _ => (ResamplerConfig::instantid(), UNetConfig::sdxl()),
            };
            manager.make_room(
                InstantIdWeights::device_bytes(&resampler, &unet, dtype).map_err(tensor_error)?,
                &[],
            );
        }
        let weights = if name == TINY_INSTANTID {
            InstantIdWeights::seeded(tiny_resampler(), UNetConfig::tiny(), dtype, &device).map_err(tensor_error)?
        } else if name == RANDOM_INSTANTID {
            InstantIdWeights::seeded(ResamplerConfig::instantid(), UNetConfig::sdxl(), dtype, &device)
                .map_err(tensor_error)?
        } else {
            let path = Path::new(&name);
            if !path.is_file() {
                return Err(NodeError::msg(format!(
                    "InstantID file \"{name}\" not found: give the path of ip-adapter.bin, a .safetensors, or {TINY_INSTANTID}"
                )));
            }
            InstantIdWeights::load(path, &ResamplerConfig::instantid(), &UNetConfig::sdxl(), dtype, &device)
                .map_err(|e| NodeError::msg(e.to_string()))?
        };
        let model = InstantIdModel {
            name: name.to_string(),
            weights,
        };
        Ok(vec![Value::Handle(Handle::new(INSTANTID, Arc::new(model)))])
    }
}
