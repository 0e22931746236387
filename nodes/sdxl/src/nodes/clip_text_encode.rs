//! `CLIPTextEncode` and `CLIPTextEncodeSDXL`: prompts to CONDITIONING.

use super::tensor_error;
use crate::conditioning::{SizeIds, TextEncoders};
use crate::device::candle_device;
use std::sync::Arc;
use swapgraph_model::{device_memory, is_out_of_memory};
use swapgraph_node_api::{
    Args, DeviceNeed, Handle, NodeDescriptor, NodeError, NodeType, Params, Rehearsal, RunContext, SocketType, Value,
};

/// An encoding failure as a node failure; running out of device memory says what to do.
fn encode_error(error: candle_core::Error) -> NodeError {
    let message = error.to_string();
    if !is_out_of_memory(&message) {
        return NodeError::msg(message);
    }
    NodeError::msg(format!(
        "out of device memory encoding the prompt: each text encoder comes to the device on its own (OpenCLIP \
         bigG takes 1.3 GiB in f16), and even with every other model sent away it did not fit beside what the \
         run holds; raise --vram-budget or free device memory held by other processes ({message})"
    ))
}

/// `CLIPTextEncode`'s one prompt.
#[derive(Params)]
struct Prompt {
    /// The prompt; longer prompts are encoded in 77-token windows.
    #[param(multiline)]
    text: Arc<str>,
}

/// `CLIPTextEncodeSDXL`'s sizes and prompts.
#[derive(Params)]
struct SdxlPrompt {
    /// Original image width.
    #[param(default = 1024, max = 16384)]
    width: u32,
    /// Original image height.
    #[param(default = 1024, max = 16384)]
    height: u32,
    /// Crop offset from the left.
    #[param(default = 0, max = 16384)]
    crop_w: u32,
    /// Crop offset from the top.
    #[param(default = 0, max = 16384)]
    crop_h: u32,
    /// Target width.
    #[param(default = 1024, max = 16384)]
    target_width: u32,
    /// Target height.
    #[param(default = 1024, max = 16384)]
    target_height: u32,
    /// Prompt for OpenCLIP bigG.
    #[param(multiline)]
    text_g: Arc<str>,
    /// Prompt for CLIP ViT-L.
    #[param(multiline)]
    text_l: Arc<str>,
}

fn conditioning(value: crate::conditioning::Conditioning) -> Vec<Value> {
    let list = crate::conditioning::ConditioningList::one(value);
    vec![Value::Handle(Handle::new(SocketType::CONDITIONING, Arc::new(list)))]
}

/// Stands in for encoding `text_l` and `text_g` with `clip` (with size ids `size`), saying what
/// encoding needs of the device.
fn rehearse_encoding(
    clip: &TextEncoders,
    ctx: &RunContext,
    (text_l, text_g): (&str, &str),
    size: Option<SizeIds>,
) -> Result<Rehearsal, NodeError> {
    let device = candle_device(ctx.device)?;
    let mut stand_in = clip.stand_in(text_l, text_g).map_err(tensor_error)?;
    stand_in.size = size;
    let bytes = clip.device_bytes(&device);
    let need = device_memory(&device).map(|_| DeviceNeed {
        least: bytes,
        unconstrained: bytes,
        detail: format!(
            "the larger text encoder ({} MiB); the two come to the device one at a time",
            bytes >> 20
        ),
    });
    Ok(Rehearsal::StoodIn {
        outputs: conditioning(stand_in),
        need,
    })
}

/// One prompt for both encoders; size conditioning follows the generated image.
pub struct ClipTextEncode {
    descriptor: NodeDescriptor,
}

impl ClipTextEncode {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "CLIPTextEncode",
            "conditioning",
            "Encodes a prompt with both SDXL text encoders.",
        )
        .uses_device()
        .input("clip", SocketType::CLIP, "The text encoders.")
        .params::<Prompt>()
        .output(SocketType::CONDITIONING, "The encoded prompt.");
        Self { descriptor }
    }
}

impl NodeType for ClipTextEncode {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let text = Prompt::from_args(args)?.text;
        let device = candle_device(ctx.device)?;
        let (encoded, times) = args
            .handle::<TextEncoders>("clip")?
            .encode(&device, ctx.vram_budget, &text, &text)
            .map_err(encode_error)?;
        tracing::info!("{}: {times}", ctx.node_id);
        Ok(conditioning(encoded))
    }

    fn rehearse(&self, args: &Args, ctx: &RunContext) -> Result<Rehearsal, NodeError> {
        let text = Prompt::from_args(args)?.text;
        rehearse_encoding(&*args.handle::<TextEncoders>("clip")?, ctx, (&text, &text), None)
    }
}

/// Separate prompts per encoder and explicit size conditioning, as SDXL was trained with.
pub struct ClipTextEncodeSdxl {
    descriptor: NodeDescriptor,
}

impl ClipTextEncodeSdxl {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "CLIPTextEncodeSDXL",
            "conditioning",
            "Encodes a prompt per SDXL text encoder, with the original size, crop and target size SDXL is conditioned on.",
        )
        .uses_device()
        .input("clip", SocketType::CLIP, "The text encoders.")
        .params::<SdxlPrompt>()
        .output(SocketType::CONDITIONING, "The encoded prompt.");
        Self { descriptor }
    }
}

impl NodeType for ClipTextEncodeSdxl {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let p = SdxlPrompt::from_args(args)?;
        let clip = args.handle::<TextEncoders>("clip")?;
        let device = candle_device(ctx.device)?;
        let (mut encoded, times) = clip
            .encode(&device, ctx.vram_budget, &p.text_l, &p.text_g)
            .map_err(encode_error)?;
        tracing::info!("{}: {times}", ctx.node_id);
        encoded.size = Some(p.size_ids());
        Ok(conditioning(encoded))
    }

    fn rehearse(&self, args: &Args, ctx: &RunContext) -> Result<Rehearsal, NodeError> {
        let p = SdxlPrompt::from_args(args)?;
        let clip = args.handle::<TextEncoders>("clip")?;
        rehearse_encoding(&clip, ctx, (&p.text_l, &p.text_g), Some(p.size_ids()))
    }
}

impl SdxlPrompt {
    /// The size ids SDXL is conditioned on.
    fn size_ids(&self) -> SizeIds {
        let pair = |w: u32, h: u32| (f64::from(w), f64::from(h));
        SizeIds {
            original: pair(self.width, self.height),
            crop: pair(self.crop_w, self.crop_h),
            target: pair(self.target_width, self.target_height),
        }
    }
}
