//! `UnetLoaderGGUF`: ComfyUI-GGUF's loader of quantized UNets, for the GGUF files its users
//! already have.

use crate::checkpoint::unet_file;
use std::path::Path;
use std::sync::Arc;
use swapgraph_node_api::{Args, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value};

/// The GGUF file to load.
#[derive(Params)]
struct GgufUNetFile {
    /// An SDXL UNet in a .gguf file inside the models folder (--models-dir; unet/ or diffusion_models/ of a ComfyUI models folder), as ComfyUI-GGUF's converter writes them: Q8_0, Q5_0, Q5_1, Q4_0, Q4_1, Q2_K to Q6_K, F16, BF16 or F32 tensors.
    #[param(reads = Models)]
    unet_name: Arc<str>,
}

/// Loads an SDXL UNet from a GGUF file.
pub struct UnetLoaderGguf {
    descriptor: NodeDescriptor,
}

impl UnetLoaderGguf {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "UnetLoaderGGUF",
            "loaders",
            "Loads an SDXL UNet from a GGUF file (ComfyUI-GGUF's format: quantized blocks such as Q8_0, Q5_K or \
             Q4_K). The blocks stay quantized in memory, on the device and through BlockSwap, which holds and \
             streams them as stored (a Q4_K UNet moves under a third of f16's bytes), and each layer's are \
             dequantized on the device just before it runs.",
        )
        .params::<GgufUNetFile>()
        .output(SocketType::MODEL, "The UNet.");
        Self { descriptor }
    }
}

impl NodeType for UnetLoaderGguf {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let GgufUNetFile { unet_name } = GgufUNetFile::from_args(args)?;
        let path = ctx.files.model("unet_name", &unet_name)?;
        let path = Path::new(&path);
        if !path.is_file() {
            return Err(NodeError::msg(format!("GGUF file \"{unet_name}\" not found")));
        }
        if !unet_file::is_gguf(path) {
            return Err(NodeError::msg(format!(
                "{} is not a GGUF file; UNETLoader reads .safetensors UNets",
                path.display()
            )));
        }
        let model = unet_file::load_gguf(path, None)?;
        Ok(vec![Value::Handle(Handle::new(SocketType::MODEL, Arc::new(model)))])
    }
}
