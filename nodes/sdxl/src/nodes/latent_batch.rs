//! Latent batches, with ComfyUI's params and semantics: `RepeatLatentBatch` repeats one, and
//! `LatentFromBatch` takes some of its latents out, numbered by their place in the batch, so
//! that the sampler gives each the noise it had there (regenerating one image of a batch).

use super::tensor_error;
use std::sync::Arc;
use swapgraph_model::Latent;
use swapgraph_node_api::{Args, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value};

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
        // Numbered images are numbered on in each copy, as in ComfyUI.
        let batch_index = latent.batch_index.as_ref().map(|indices| {
            let (low, high) = (indices.iter().min(), indices.iter().max());
            let offset = high.zip(low).map_or(0, |(high, low)| high - low + 1);
            (0..amount)
                .flat_map(|copy| indices.iter().map(move |index| index + copy * offset))
                .collect()
        });
        Ok(vec![Value::Handle(Handle::new(
            SocketType::LATENT,
            Arc::new(Latent {
                samples,
                noise_mask,
                batch_index,
            }),
        ))])
    }
}

/// Which latents to take.
#[derive(Params)]
struct Slice {
    /// The first latent taken, counted from 0 (the last one when the batch is shorter).
    #[param(default = 0, min = 0, max = 63)]
    batch_index: usize,
    /// How many latents are taken (at most what is left of the batch).
    #[param(default = 1, min = 1, max = 64)]
    length: usize,
}

/// Takes latents out of a batch, keeping their numbers.
pub struct LatentFromBatch {
    descriptor: NodeDescriptor,
}

impl LatentFromBatch {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "LatentFromBatch",
            "latent/batch",
            "Takes latents out of a batch, keeping their numbers in it: sampled with the batch's seed, each gets the              noise it had in the batch, so one image of a batch can be made again on its own.",
        )
        .input("samples", SocketType::LATENT, "The latents.")
        .params::<Slice>()
        .output(SocketType::LATENT, "The latents taken.");
        Self { descriptor }
    }
}

impl NodeType for LatentFromBatch {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _: &RunContext) -> Result<Vec<Value>, NodeError> {
        let Slice { batch_index, length } = Slice::from_args(args)?;
        let latent = args.handle::<Latent>("samples")?;
        let batch = latent.samples.dim(0).map_err(tensor_error)?;
        let start = batch_index.min(batch.saturating_sub(1));
        let length = length.min(batch - start);
        let samples = latent.samples.narrow(0, start, length).map_err(tensor_error)?;
        // One mask for all stays one; masks per latent are repeated to the batch and sliced.
        let noise_mask = match &latent.noise_mask {
            Some(mask) if mask.dim(0).map_err(tensor_error)? > 1 => {
                let masks = mask.dim(0).map_err(tensor_error)?;
                let whole = mask
                    .repeat((batch.div_ceil(masks), 1, 1, 1))
                    .and_then(|m| m.narrow(0, start, length))
                    .map_err(tensor_error)?;
                Some(whole)
            }
            other => other.clone(),
        };
        let batch_index = match &latent.batch_index {
            Some(indices) => indices[start.min(indices.len())..(start + length).min(indices.len())].to_vec(),
            None => (start..start + length).collect(),
        };
        Ok(vec![Value::Handle(Handle::new(
            SocketType::LATENT,
            Arc::new(Latent {
                samples,
                noise_mask,
                batch_index: Some(batch_index),
            }),
        ))])
    }
}
