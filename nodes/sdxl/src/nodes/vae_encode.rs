//! `VAEEncode`: images to latents, for img2img; `VAEEncodeForInpaint`: the same with the pixels
//! under a mask greyed out first and the (grown) mask handed to the sampler.

use super::inpaint_pixels::masked_for_inpainting;
use super::tensor_error;
use super::vae_decode::coder_cost;
use crate::device::{candle_device, vae_dtype};
use crate::vae::{CoderCost, Vae, VaeModel};
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;
use swapgraph_model::{memory_manager, Image, Latent, Mask};
use swapgraph_node_api::{
    Args, DeviceNeed, Handle, NodeDescriptor, NodeError, NodeType, Params, Rehearsal, RunContext, SocketType, Value,
};

/// Encodes images (cropped to multiples of 8) to the latent mean.
pub struct VaeEncode {
    descriptor: NodeDescriptor,
    /// VAEEncodeForInpaint: grey out under the mask, and hand it on as a noise mask.
    for_inpaint: bool,
}

/// VAEEncodeForInpaint's param.
#[derive(Params)]
struct Grow {
    /// Pixels the mask grows by for the sampler, so that the seam falls where latents are kept.
    #[param(default = 6, max = 64)]
    grow_mask_by: usize,
}

impl VaeEncode {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = encoder(NodeDescriptor::new(
            "VAEEncode",
            "latent",
            "Turns images into latents, e.g. to start img2img. Other models leave the device first when the \
             encoder needs their room.",
        ))
        .output(SocketType::LATENT, "The latents.");
        Self {
            descriptor,
            for_inpaint: false,
        }
    }

    /// `VAEEncodeForInpaint`: the pixels under the mask set to mid-grey before encoding, and the
    /// mask, grown by `grow_mask_by`, on the latents for the sampler.
    pub fn for_inpaint() -> Self {
        let descriptor = encoder(NodeDescriptor::new(
            "VAEEncodeForInpaint",
            "latent",
            "Turns images into latents for inpainting: the pixels under the mask become mid-grey first (the model \
             paints them anew, use denoise 1.0), and the sampler changes the latents only within the mask, grown \
             by grow_mask_by pixels.",
        ))
        .input("mask", SocketType::MASK, "1 where the image is painted anew.")
        .params::<Grow>()
        .output(SocketType::LATENT, "The latents, with the mask for the sampler.");
        Self {
            descriptor,
            for_inpaint: true,
        }
    }
}

/// `descriptor` with what both encoders take: the device, the images and the VAE.
fn encoder(descriptor: NodeDescriptor) -> NodeDescriptor {
    descriptor
        .uses_device()
        .input(
            "pixels",
            SocketType::IMAGE,
            "The images; cropped to multiples of 8 pixels.",
        )
        .input("vae", SocketType::VAE, "The VAE.")
}

/// The images' batch, latent height and latent width (images cropped to multiples of 8).
fn latent_size(image: &Image) -> Result<(usize, usize, usize), NodeError> {
    let (batch, h, w, _) = image.pixels.dims4().map_err(tensor_error)?;
    if h < 8 || w < 8 {
        return Err(NodeError::msg(format!(
            "the image is {w}x{h} pixels; VAEEncode needs at least 8x8"
        )));
    }
    Ok((batch, h / 8, w / 8))
}

/// The encoder's working memory for `latent` on `device`, measured; `None` on the CPU.
fn encode_cost(
    vae: &Vae,
    device: &Device,
    ctx: &RunContext,
    (_, h, w): (usize, usize, usize),
) -> Result<Option<CoderCost>, NodeError> {
    let coder = format!("encoder of {:?} in {:?}", vae.config(), vae_dtype(device));
    coder_cost(device, ctx, coder, || {
        CoderCost::measure_encoder(vae, device, vae_dtype(device))
    })
    .map_err(|e| {
        NodeError::msg(format!(
            "cannot measure the VAE's encoder for {}x{} on {device:?}: {e}",
            w * 8,
            h * 8
        ))
    })
}

/// Makes room for encoding `latent` on `device` (other models leave, least recently used first):
/// refused, before anything is encoded, when the run's budget cannot hold it.
fn make_room(vae: &Vae, device: &Device, ctx: &RunContext, latent: (usize, usize, usize)) -> Result<(), NodeError> {
    let (Some(cost), Some(manager)) = (
        encode_cost(vae, device, ctx, latent)?,
        memory_manager(device, ctx.vram_budget),
    ) else {
        return Ok(());
    };
    let needed = cost.bytes(latent);
    let room = manager.make_room(needed, &[]);
    if needed <= room {
        return Ok(());
    }
    let gib = |bytes: u64| format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30));
    let (batch, h, w) = latent;
    Err(NodeError::msg(format!(
        "cannot encode {batch} image(s) of {}x{}: the VAE's encoder needs {} beside its weights and the run's \
         device budget leaves {}; encode a smaller image, raise --vram-budget, or free device memory held by other \
         processes",
        w * 8,
        h * 8,
        gib(needed),
        gib(room)
    )))
}

impl NodeType for VaeEncode {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let device = candle_device(ctx.device)?;
        let image = args.handle::<Image>("pixels")?;
        let latent_size = latent_size(&image)?;
        let vae = args
            .handle::<VaeModel>("vae")?
            .get(&device, ctx.vram_budget)
            .map_err(tensor_error)?;
        make_room(&vae, &device, ctx, latent_size)?;
        let (_, h, w) = latent_size;
        let (pixels, noise_mask) = match self.for_inpaint {
            false => (image.pixels.clone(), None),
            true => {
                let mask = &args.handle::<Mask>("mask")?.values;
                let grow = Grow::from_args(args)?.grow_mask_by;
                let (greyed, grown) = masked_for_inpainting(&image.pixels, mask, grow)
                    .map_err(|e| NodeError::msg(format!("mask: {e}")))?;
                let grown = grown.narrow(2, 0, h * 8).and_then(|m| m.narrow(3, 0, w * 8));
                (greyed, Some(grown.map_err(tensor_error)?))
            }
        };
        let encode = || -> candle_core::Result<Latent> {
            let pixels = pixels.narrow(1, 0, h * 8)?.narrow(2, 0, w * 8)?;
            let images =
                ((pixels.to_device(&device)?.permute((0, 3, 1, 2))? * 2.0)? - 1.0)?.to_dtype(vae_dtype(&device))?;
            Ok(Latent {
                samples: vae.encode(&images.contiguous()?)?.to_dtype(DType::F32)?,
                noise_mask,
                batch_index: None,
            })
        };
        let latent = encode().map_err(tensor_error)?;
        Ok(vec![Value::Handle(Handle::new(SocketType::LATENT, Arc::new(latent)))])
    }

    /// Stands in with zero latents of the encoded size and says what the encode needs: the VAE's
    /// weights and the encoder's working memory, measured with the VAE on the device.
    fn rehearse(&self, args: &Args, ctx: &RunContext) -> Result<Rehearsal, NodeError> {
        let device = candle_device(ctx.device)?;
        let image = args.handle::<Image>("pixels")?;
        let latent_size @ (batch, h, w) = latent_size(&image)?;
        let vae_model = args.handle::<VaeModel>("vae")?;
        // The VAE is light and the run uses it next: placed now, on the device it runs on.
        let vae = vae_model.get(&device, ctx.vram_budget).map_err(tensor_error)?;
        let samples =
            Tensor::zeros((batch, vae.latent_channels(), h, w), DType::F32, &Device::Cpu).map_err(tensor_error)?;
        let outputs = vec![Value::Handle(Handle::new(
            SocketType::LATENT,
            Arc::new(Latent::new(samples)),
        ))];
        let need = encode_cost(&vae, &device, ctx, latent_size)?.map(|cost| {
            let weights = vae_model.bytes(&device);
            let bytes = weights + cost.bytes(latent_size);
            DeviceNeed {
                least: bytes,
                unconstrained: bytes,
                detail: format!("the VAE ({} MiB) encoding {}x{}", weights >> 20, w * 8, h * 8),
            }
        });
        Ok(Rehearsal::StoodIn { outputs, need })
    }
}
