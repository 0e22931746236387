//! KSampler's view of what the conditionings carry: one ControlNet and one set of image tokens
//! for the batched negative and positive passes.

use super::tensor_error;
use crate::conditioning::Conditioning;
use crate::controlnet::ControlNet;
use crate::sampling::{ControlGuidance, ImageTokenGuidance};
use crate::unet::ContextCache;
use candle_core::{DType, Device};
use std::sync::Arc;
use swapgraph_model::{ModelHandle, Placement, Room};
use swapgraph_node_api::NodeError;

/// The ControlNet model the conditionings carry, placed as it will run: `companion` (from the
/// sampled model, e.g. BlockSwap with `target: controlnet`) decides where its weights live, when
/// given.
pub fn placed_controlnet(
    positive: &Conditioning,
    negative: &Conditioning,
    companion: Option<&Arc<dyn Placement>>,
) -> Option<ModelHandle> {
    let hint = positive.control.as_ref().or(negative.control.as_ref())?;
    Some(match companion {
        Some(placement) => hint.controlnet.with_placement(Arc::clone(placement)),
        None => hint.controlnet.clone(),
    })
}

/// The ControlNet the conditionings carry (the positive side's settings and region win), with each
/// side's context: its own override, else its text; its weights placed as [`placed_controlnet`]
/// says, within `room`.
///
/// # Errors
/// Different ControlNets on the two sides, a ControlNet model that is not one, or a store
/// that cannot be built.
pub fn control_guidance<'a>(
    positive: &'a Conditioning,
    negative: &'a Conditioning,
    companion: Option<&Arc<dyn Placement>>,
    (device, dtype): (&Device, DType),
    room: &Room,
) -> Result<Option<ControlGuidance<'a>>, NodeError> {
    let (Some(hint), Some(placed)) = (
        positive.control.as_ref().or(negative.control.as_ref()),
        placed_controlnet(positive, negative, companion),
    ) else {
        return Ok(None);
    };
    if let (Some(a), Some(b)) = (&positive.control, &negative.control) {
        if !Arc::ptr_eq(&a.controlnet.network, &b.controlnet.network) {
            return Err(NodeError::msg(
                "the positive and negative conditionings carry different ControlNets; one ControlNet per sampler is supported",
            ));
        }
    }
    let controlnet = hint
        .controlnet
        .network
        .as_any()
        .downcast_ref::<ControlNet>()
        .ok_or_else(|| {
            NodeError::msg(format!(
                "\"{}\" is a {}, not a ControlNet",
                hint.controlnet.name,
                hint.controlnet.network.kind()
            ))
        })?;
    let store = placed
        .store(device, dtype, room)
        .map_err(|e| NodeError::msg(e.to_string()))?;
    let context = |side: &Conditioning| -> Result<Option<candle_core::Tensor>, NodeError> {
        side.control
            .as_ref()
            .map(|c| {
                c.context
                    .clone()
                    .unwrap_or_else(|| side.context.clone())
                    .to_device(device)
                    .map_err(tensor_error)
            })
            .transpose()
    };
    Ok(Some(ControlGuidance {
        controlnet,
        store,
        hint: hint.hint.clone(),
        strength: hint.strength,
        contexts: (context(negative)?, context(positive)?),
        percent: (hint.start_percent, hint.end_percent),
        region: hint.region.clone(),
        context_cache: ContextCache::default(),
    }))
}

/// The image tokens the conditionings carry (the positive side's weight, span and region win); a side
/// without tokens gets zeros, which add nothing.
///
/// # Errors
/// Different adapters on the two sides.
pub fn image_token_guidance(
    positive: &Conditioning,
    negative: &Conditioning,
) -> Result<Option<ImageTokenGuidance>, NodeError> {
    let Some(prompt) = positive.image_prompt.as_ref().or(negative.image_prompt.as_ref()) else {
        return Ok(None);
    };
    if let (Some(a), Some(b)) = (&positive.image_prompt, &negative.image_prompt) {
        if !Arc::ptr_eq(&a.layers, &b.layers) {
            return Err(NodeError::msg(
                "the positive and negative conditionings carry different image adapters; one per sampler is supported",
            ));
        }
    }
    let tokens = |side: &Conditioning| -> Result<candle_core::Tensor, NodeError> {
        match &side.image_prompt {
            Some(p) => Ok(p.tokens.clone()),
            None => prompt.tokens.zeros_like().map_err(tensor_error),
        }
    };
    Ok(Some(ImageTokenGuidance::new(
        Arc::clone(&prompt.layers),
        (tokens(negative)?, tokens(positive)?),
        prompt.weight,
        (prompt.start_percent, prompt.end_percent),
        prompt.region.clone(),
    )))
}
