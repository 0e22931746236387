//! `LoadImage`: an image file as an IMAGE.

use crate::open::ImageFile;
use crate::pixels::rgb_to_tensor;
use std::sync::Arc;
use swapgraph_model::{candle_device, Image};
use swapgraph_node_api::{Args, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value};

/// Reads a PNG, JPEG or WebP file; alpha is dropped.
pub struct LoadImage {
    descriptor: NodeDescriptor,
}

impl LoadImage {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new("LoadImage", "image", "Loads a PNG, JPEG or WebP image.")
            .params::<ImageFile>()
            .output(SocketType::IMAGE, "The image, RGB.");
        Self { descriptor }
    }
}

impl NodeType for LoadImage {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let (_, decoded) = ImageFile::from_args(args)?.open(ctx)?;
        let device = candle_device(ctx.device)?;
        let pixels = rgb_to_tensor(decoded.to_rgb8(), &device).map_err(|e| NodeError::msg(e.to_string()))?;
        Ok(vec![Value::Handle(Handle::new(
            SocketType::IMAGE,
            Arc::new(Image { pixels }),
        ))])
    }
}
