//! `CLIPTextEncode` and `CLIPTextEncodeSDXL`: prompts to CONDITIONING.

use super::out_of_memory::is_out_of_memory;
use crate::conditioning::{SizeIds, TextEncoders};
use crate::device::candle_device;
use std::sync::Arc;
use swapgraph_node_api::{
    Args, Handle, NodeDescriptor, NodeError, NodeType, ParamKind, ParamSpec, RunContext, SocketType, Value,
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

fn prompt(name: &'static str, description: &'static str) -> ParamSpec {
    ParamSpec::new(
        name,
        ParamKind::String {
            default: None,
            multiline: true,
        },
        description,
    )
}

fn size(name: &'static str, default: i64, description: &'static str) -> ParamSpec {
    ParamSpec::new(
        name,
        ParamKind::Int {
            default: Some(default),
            min: 0,
            max: 16384,
        },
        description,
    )
}

fn conditioning(value: crate::conditioning::Conditioning) -> Vec<Value> {
    vec![Value::Handle(Handle::new(SocketType::Conditioning, Arc::new(value)))]
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
        .input("clip", SocketType::Clip, "The text encoders.")
        .param(prompt(
            "text",
            "The prompt; longer prompts are encoded in 77-token windows.",
        ))
        .output(SocketType::Conditioning, "The encoded prompt.");
        Self { descriptor }
    }
}

impl NodeType for ClipTextEncode {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let text = args.string("text")?;
        let device = candle_device(ctx.device)?;
        let encoded = args
            .handle::<TextEncoders>("clip")?
            .encode(&device, ctx.vram_budget, &text, &text)
            .map_err(encode_error)?;
        Ok(conditioning(encoded))
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
        .input("clip", SocketType::Clip, "The text encoders.")
        .param(size("width", 1024, "Original image width."))
        .param(size("height", 1024, "Original image height."))
        .param(size("crop_w", 0, "Crop offset from the left."))
        .param(size("crop_h", 0, "Crop offset from the top."))
        .param(size("target_width", 1024, "Target width."))
        .param(size("target_height", 1024, "Target height."))
        .param(prompt("text_g", "Prompt for OpenCLIP bigG."))
        .param(prompt("text_l", "Prompt for CLIP ViT-L."))
        .output(SocketType::Conditioning, "The encoded prompt.");
        Self { descriptor }
    }
}

impl NodeType for ClipTextEncodeSdxl {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let clip = args.handle::<TextEncoders>("clip")?;
        let device = candle_device(ctx.device)?;
        let mut encoded = clip
            .encode(
                &device,
                ctx.vram_budget,
                &args.string("text_l")?,
                &args.string("text_g")?,
            )
            .map_err(encode_error)?;
        let pair =
            |w: &str, h: &str| -> Result<(f64, f64), NodeError> { Ok((args.int(w)? as f64, args.int(h)? as f64)) };
        encoded.size = Some(SizeIds {
            original: pair("width", "height")?,
            crop: pair("crop_w", "crop_h")?,
            target: pair("target_width", "target_height")?,
        });
        Ok(conditioning(encoded))
    }
}
