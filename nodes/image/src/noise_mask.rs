//! `SetLatentNoiseMask`: where the sampler may change latents (inpainting); elsewhere it keeps
//! them, blending its work into what it keeps.

use std::sync::Arc;
use swapgraph_model::{Latent, Mask};
use swapgraph_node_api::{Args, Handle, NodeDescriptor, NodeError, NodeType, RunContext, SocketType, Value};

/// Attaches a mask to latents.
pub struct SetLatentNoiseMask {
    descriptor: NodeDescriptor,
}

impl SetLatentNoiseMask {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "SetLatentNoiseMask",
            "latent",
            "Lets the sampler change the latents only where the mask is 1 (inpainting); where it is 0 they are \
             kept. The mask may have any size: the sampler resamples it to the latents'.",
        )
        .input("samples", SocketType::LATENT, "The latents, e.g. an encoded image.")
        .input("mask", SocketType::MASK, "1 where the sampler may change them.")
        .output(SocketType::LATENT, "The latents with the mask.");
        Self { descriptor }
    }
}

impl NodeType for SetLatentNoiseMask {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _: &RunContext) -> Result<Vec<Value>, NodeError> {
        let latent = args.handle::<Latent>("samples")?;
        let mask = &args.handle::<Mask>("mask")?.values;
        let (batch, height, width) = mask.dims3().map_err(|e| NodeError::msg(format!("mask: {e}")))?;
        let noise_mask = mask
            .reshape((batch, 1, height, width))
            .map_err(|e| NodeError::msg(e.to_string()))?;
        let masked = Latent {
            noise_mask: Some(noise_mask),
            ..(*latent).clone()
        };
        Ok(vec![Value::Handle(Handle::new(SocketType::LATENT, Arc::new(masked)))])
    }
}
