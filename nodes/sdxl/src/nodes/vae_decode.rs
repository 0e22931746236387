//! `VAEDecode`: latents to images.

use super::out_of_memory::explain_vae_decode;
use super::tensor_error;
use crate::device::vae_dtype;
use crate::vae::{decode_tiled, Vae};
use candle_core::DType;
use std::sync::Arc;
use swapgraph_model::{Image, Latent};
use swapgraph_node_api::{
    Args, Handle, NodeDescriptor, NodeError, NodeType, ParamKind, ParamSpec, RunContext, SocketType, Value,
};

/// Decodes latents with the VAE (in f32: SDXL's VAE overflows in f16), whole or in tiles.
pub struct VaeDecode {
    descriptor: NodeDescriptor,
    tiled: bool,
}

impl VaeDecode {
    /// `VAEDecode`.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new("VAEDecode", "latent", "Turns latents into images.")
            .input("samples", SocketType::Latent, "The latents.")
            .input("vae", SocketType::Vae, "The VAE.")
            .output(SocketType::Image, "The images.");
        Self {
            descriptor,
            tiled: false,
        }
    }

    /// `VAEDecodeTiled`.
    pub fn tiled() -> Self {
        let pixels = |name, default, min, description| {
            ParamSpec::new(
                name,
                ParamKind::Int {
                    default: Some(default),
                    min,
                    max: 4096,
                },
                description,
            )
        };
        let descriptor = NodeDescriptor::new(
            "VAEDecodeTiled",
            "latent",
            "Turns latents into images tile by tile, for images too large to decode at once.",
        )
        .input("samples", SocketType::Latent, "The latents.")
        .input("vae", SocketType::Vae, "The VAE.")
        .param(pixels(
            "tile_size",
            512,
            64,
            "Tile width and height in pixels (a multiple of 8).",
        ))
        .param(pixels(
            "overlap",
            64,
            0,
            "Overlap between tiles in pixels, blended smoothly.",
        ))
        .output(SocketType::Image, "The images.");
        Self {
            descriptor,
            tiled: true,
        }
    }
}

impl NodeType for VaeDecode {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let vae = args.handle::<Vae>("vae")?;
        let latent = args.handle::<Latent>("samples")?;
        let tiles = match self.tiled {
            true => {
                let (tile, overlap) = (args.int("tile_size")? as usize / 8, args.int("overlap")? as usize / 8);
                if overlap >= tile {
                    return Err(NodeError::msg(format!(
                        "overlap {} must be smaller than tile_size {}",
                        args.int("overlap")?,
                        args.int("tile_size")?
                    )));
                }
                Some((tile, overlap))
            }
            false => None,
        };
        let decode = || -> candle_core::Result<Image> {
            let latents = latent.samples.to_dtype(vae_dtype(latent.samples.device()))?;
            let images = match tiles {
                Some((tile, overlap)) => decode_tiled(&vae, &latents, tile, overlap)?,
                None => vae.decode(&latents)?,
            }
            .to_dtype(DType::F32)?;
            let pixels = ((images + 1.0)? / 2.0)?
                .clamp(0.0, 1.0)?
                .permute((0, 2, 3, 1))?
                .contiguous()?;
            Ok(Image { pixels })
        };
        let (_, _, h, w) = latent.samples.dims4().map_err(tensor_error)?;
        let tile_size = tiles.map(|(tile, _)| tile * 8);
        let image = decode()
            .map_err(|e| explain_vae_decode(e.to_string(), (w * 8, h * 8), tile_size, latent.samples.device()))?;
        Ok(vec![Value::Handle(Handle::new(SocketType::Image, Arc::new(image)))])
    }
}
