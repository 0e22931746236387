//! `EmptyLatentImage`: a zero latent batch of a given image size.

use super::tensor_error;
use crate::device::candle_device;
use candle_core::{DType, Tensor};
use std::sync::Arc;
use swapgraph_model::Latent;
use swapgraph_node_api::{
    Args, Handle, NodeDescriptor, NodeError, NodeType, ParamKind, ParamSpec, RunContext, SocketType, Value,
};

/// Zero latents for `batch_size` images of `width` x `height` pixels (multiples of 8).
pub struct EmptyLatentImage {
    descriptor: NodeDescriptor,
}

impl EmptyLatentImage {
    /// The node type.
    pub fn new() -> Self {
        let pixels = |name, description| {
            ParamSpec::new(
                name,
                ParamKind::Int {
                    default: Some(1024),
                    min: 16,
                    max: 16384,
                },
                description,
            )
        };
        let descriptor = NodeDescriptor::new(
            "EmptyLatentImage",
            "latent",
            "Starts text-to-image generation from empty latents.",
        )
        .param(pixels(
            "width",
            "Image width in pixels; rounded down to a multiple of 8.",
        ))
        .param(pixels(
            "height",
            "Image height in pixels; rounded down to a multiple of 8.",
        ))
        .param(ParamSpec::new(
            "batch_size",
            ParamKind::Int {
                default: Some(1),
                min: 1,
                max: 4096,
            },
            "Images generated at once.",
        ))
        .output(SocketType::Latent, "The empty latents.");
        Self { descriptor }
    }
}

impl NodeType for EmptyLatentImage {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let device = candle_device(ctx.device)?;
        let shape = (
            args.int("batch_size")? as usize,
            4,
            args.int("height")? as usize / 8,
            args.int("width")? as usize / 8,
        );
        let samples = Tensor::zeros(shape, DType::F32, &device).map_err(tensor_error)?;
        Ok(vec![Value::Handle(Handle::new(
            SocketType::Latent,
            Arc::new(Latent { samples }),
        ))])
    }
}
