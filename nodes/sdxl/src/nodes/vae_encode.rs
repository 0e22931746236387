//! `VAEEncode`: images to latents, for img2img.

use super::tensor_error;
use crate::device::{candle_device, vae_dtype};
use crate::vae::VaeModel;
use candle_core::DType;
use std::sync::Arc;
use swapgraph_model::{Image, Latent};
use swapgraph_node_api::{Args, Handle, NodeDescriptor, NodeError, NodeType, RunContext, SocketType, Value};

/// Encodes images (cropped to multiples of 8) to the latent mean.
pub struct VaeEncode {
    descriptor: NodeDescriptor,
}

impl VaeEncode {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "VAEEncode",
            "latent",
            "Turns images into latents, e.g. to start img2img.",
        )
        .uses_device()
        .input(
            "pixels",
            SocketType::IMAGE,
            "The images; cropped to multiples of 8 pixels.",
        )
        .input("vae", SocketType::VAE, "The VAE.")
        .output(SocketType::LATENT, "The latents.");
        Self { descriptor }
    }
}

impl NodeType for VaeEncode {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let device = candle_device(ctx.device)?;
        let vae = args
            .handle::<VaeModel>("vae")?
            .get(&device, ctx.vram_budget)
            .map_err(tensor_error)?;
        let image = args.handle::<Image>("pixels")?;
        let (_, h, w, _) = image.pixels.dims4().map_err(tensor_error)?;
        if h < 8 || w < 8 {
            return Err(NodeError::msg(format!(
                "the image is {w}x{h} pixels; VAEEncode needs at least 8x8"
            )));
        }
        let encode = || -> candle_core::Result<Latent> {
            let pixels = image.pixels.narrow(1, 0, h / 8 * 8)?.narrow(2, 0, w / 8 * 8)?;
            let images =
                ((pixels.to_device(&device)?.permute((0, 3, 1, 2))? * 2.0)? - 1.0)?.to_dtype(vae_dtype(&device))?;
            Ok(Latent {
                samples: vae.encode(&images.contiguous()?)?.to_dtype(DType::F32)?,
            })
        };
        let latent = encode().map_err(tensor_error)?;
        Ok(vec![Value::Handle(Handle::new(SocketType::LATENT, Arc::new(latent)))])
    }
}
