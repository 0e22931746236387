//! `ConditioningZeroOut` and `RepeatLatentBatch`, with ComfyUI's params and semantics: a
//! conditioning whose text and pooled embedding are zeros (what SDXL workflows use as the
//! negative), and a latent batch repeated.

use super::tensor_error;
use crate::conditioning::ConditioningList;
use std::sync::Arc;
use swapgraph_model::Latent;
use swapgraph_node_api::{Args, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value};

/// Zeros a conditioning's text and pooled embedding, keeping what is attached to it.
pub struct ConditioningZeroOut {
    descriptor: NodeDescriptor,
}

impl ConditioningZeroOut {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "ConditioningZeroOut",
            "advanced/conditioning",
            "Zeros a conditioning's text and pooled embedding (size ids, ControlNets and image prompts stay), e.g. \
             for a negative prompt of nothing at all.",
        )
        .input("conditioning", SocketType::CONDITIONING, "The conditioning.")
        .output(SocketType::CONDITIONING, "The conditioning, zeroed.");
        Self { descriptor }
    }
}

impl NodeType for ConditioningZeroOut {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _: &RunContext) -> Result<Vec<Value>, NodeError> {
        let zeroed = args
            .handle::<ConditioningList>("conditioning")?
            .map(|mut conditioning| {
                conditioning.context = conditioning.context.zeros_like()?;
                conditioning.pooled = conditioning.pooled.zeros_like()?;
                Ok(conditioning)
            })
            .map_err(tensor_error)?;
        Ok(vec![Value::Handle(Handle::new(
            SocketType::CONDITIONING,
            Arc::new(zeroed),
        ))])
    }
}

/// How many times the batch is repeated.
#[derive(Params)]
struct Amount {
    /// Copies of the batch, one after another.
    #[param(default = 1, min = 1, max = 64)]
    amount: usize,
}

/// Repeats a latent batch.
pub struct RepeatLatentBatch {
    descriptor: NodeDescriptor,
}

impl RepeatLatentBatch {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "RepeatLatentBatch",
            "latent/batch",
            "Repeats a latent batch: with a seed, each copy starts from its own noise.",
        )
        .input("samples", SocketType::LATENT, "The latents.")
        .params::<Amount>()
        .output(SocketType::LATENT, "The latents, repeated.");
        Self { descriptor }
    }
}

impl NodeType for RepeatLatentBatch {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _: &RunContext) -> Result<Vec<Value>, NodeError> {
        let Amount { amount } = Amount::from_args(args)?;
        let latent = args.handle::<Latent>("samples")?;
        let samples = latent.samples.repeat((amount, 1, 1, 1)).map_err(tensor_error)?;
        // A mask per latent is repeated with them, as ComfyUI does; one for all stays one.
        let noise_mask = match &latent.noise_mask {
            Some(mask) if mask.dim(0).map_err(tensor_error)? > 1 => {
                Some(mask.repeat((amount, 1, 1, 1)).map_err(tensor_error)?)
            }
            other => other.clone(),
        };
        Ok(vec![Value::Handle(Handle::new(
            SocketType::LATENT,
            Arc::new(Latent { samples, noise_mask }),
        ))])
    }
}
