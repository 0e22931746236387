//! `VAELoader`: an SDXL VAE from a file of its own, in place of a checkpoint's (a fixed VAE).

use crate::checkpoint::{vae_file, TINY_SDXL};
use std::sync::Arc;
use swapgraph_node_api::{Args, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value};

/// The VAE to load.
#[derive(Params)]
struct VaeFile {
    /// An SDXL VAE inside the models folder (--models-dir; vae/ of a ComfyUI models folder): a .safetensors file in the original or diffusers layout, or a diffusers vae/ folder; or builtin:tiny-sdxl / builtin:random-sdxl.
    #[param(default = TINY_SDXL, reads = Models)]
    vae_name: Arc<str>,
}

/// Loads an SDXL VAE from a file of its own.
pub struct VaeLoader {
    descriptor: NodeDescriptor,
}

impl VaeLoader {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "VAELoader",
            "loaders",
            "Loads an SDXL VAE from a file of its own (original or diffusers layout) or a diffusers vae/ folder, in \
             place of a checkpoint's; it comes to the device only to decode or encode.",
        )
        .params::<VaeFile>()
        .output(SocketType::VAE, "The VAE.");
        Self { descriptor }
    }
}

impl NodeType for VaeLoader {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let name = VaeFile::from_args(args)?.vae_name;
        let vae = vae_file::load(&ctx.files.model("vae_name", &name)?)?;
        Ok(vec![Value::Handle(Handle::new(SocketType::VAE, vae))])
    }
}
