//! `EmptyLatentImage`: a zero latent batch of a given image size.

use super::tensor_error;
use crate::device::candle_device;
use candle_core::{DType, Tensor};
use std::sync::Arc;
use swapgraph_model::Latent;
use swapgraph_node_api::{Args, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value};

/// Zero latents for `batch_size` images of `width` x `height` pixels (multiples of 8).
pub struct EmptyLatentImage {
    descriptor: NodeDescriptor,
}

impl EmptyLatentImage {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "EmptyLatentImage",
            "latent",
            "Starts text-to-image generation from empty latents.",
        )
        .params::<LatentSize>()
        .output(SocketType::LATENT, "The empty latents.");
        Self { descriptor }
    }
}

/// The latents' image size and batch.
#[derive(Params)]
struct LatentSize {
    /// Image width in pixels; rounded down to a multiple of 8.
    #[param(default = 1024, min = 16, max = 16384)]
    width: usize,
    /// Image height in pixels; rounded down to a multiple of 8.
    #[param(default = 1024, min = 16, max = 16384)]
    height: usize,
    /// Images generated at once.
    #[param(default = 1, min = 1, max = 4096)]
    batch_size: usize,
}

impl NodeType for EmptyLatentImage {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let device = candle_device(ctx.device)?;
        let size = LatentSize::from_args(args)?;
        let shape = (size.batch_size, 4, size.height / 8, size.width / 8);
        let samples = Tensor::zeros(shape, DType::F32, &device).map_err(tensor_error)?;
        Ok(vec![Value::Handle(Handle::new(
            SocketType::LATENT,
            Arc::new(Latent::new(samples)),
        ))])
    }
}
