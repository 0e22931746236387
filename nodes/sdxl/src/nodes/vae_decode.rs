//! `VAEDecode`: latents to images.

use super::tensor_error;
use crate::device::vae_dtype;
use crate::vae::Vae;
use candle_core::DType;
use std::sync::Arc;
use swapgraph_model::{Image, Latent};
use swapgraph_node_api::{Args, Handle, NodeDescriptor, NodeError, NodeType, RunContext, SocketType, Value};

/// Decodes latents with the VAE (in f32: SDXL's VAE overflows in f16).
pub struct VaeDecode {
    descriptor: NodeDescriptor,
}

impl VaeDecode {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new("VAEDecode", "latent", "Turns latents into images.")
            .input("samples", SocketType::Latent, "The latents.")
            .input("vae", SocketType::Vae, "The VAE.")
            .output(SocketType::Image, "The images.");
        Self { descriptor }
    }
}

impl NodeType for VaeDecode {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let vae = args.handle::<Vae>("vae")?;
        let latent = args.handle::<Latent>("samples")?;
        let decode = || -> candle_core::Result<Image> {
            let latents = latent.samples.to_dtype(vae_dtype(latent.samples.device()))?;
            let images = vae.decode(&latents)?.to_dtype(DType::F32)?;
            let pixels = ((images + 1.0)? / 2.0)?
                .clamp(0.0, 1.0)?
                .permute((0, 2, 3, 1))?
                .contiguous()?;
            Ok(Image { pixels })
        };
        let image = decode().map_err(tensor_error)?;
        Ok(vec![Value::Handle(Handle::new(SocketType::Image, Arc::new(image)))])
    }
}
