//! `CheckpointLoaderSimple`: an SDXL checkpoint as MODEL, CLIP and VAE.

use crate::checkpoint::{self, TINY_SDXL};
use crate::device::candle_device;
use std::sync::Arc;
use swapgraph_node_api::{Args, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value};

/// Loads a checkpoint; the UNet's weights stay on the host until a sampler runs.
pub struct CheckpointLoaderSimple {
    descriptor: NodeDescriptor,
}

/// The checkpoint to load.
#[derive(Params)]
struct CheckpointFile {
    /// An SDXL .safetensors file or diffusers folder inside the models folder (--models-dir); builtin:tiny-sdxl (toy size) or builtin:random-sdxl (SDXL size, random weights, for timing).
    #[param(default = TINY_SDXL, reads = Models)]
    ckpt_name: Arc<str>,
}

impl CheckpointLoaderSimple {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "CheckpointLoaderSimple",
            "loaders",
            "Loads an SDXL checkpoint: a single .safetensors file (original layout), a diffusers folder, or builtin:tiny-sdxl (random weights, for trying workflows).",
        )
        .uses_device()
        .params::<CheckpointFile>()
        .output(SocketType::MODEL, "The UNet.")
        .output(SocketType::CLIP, "Both text encoders.")
        .output(SocketType::VAE, "The VAE.");
        Self { descriptor }
    }
}

impl NodeType for CheckpointLoaderSimple {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let device = candle_device(ctx.device)?;
        let loaded = checkpoint::load(
            &ctx.files
                .model("ckpt_name", &CheckpointFile::from_args(args)?.ckpt_name)?,
            &device,
            ctx.vram_budget,
        )?;
        Ok(vec![
            Value::Handle(Handle::new(SocketType::MODEL, Arc::new(loaded.model))),
            Value::Handle(Handle::new(SocketType::CLIP, loaded.clip)),
            Value::Handle(Handle::new(SocketType::VAE, loaded.vae)),
        ])
    }
}
