//! KSampler's view of what the conditionings carry: a chain of ControlNets and one set of
//! image tokens for the batched negative and positive passes, or for lists of conditionings,
//! each conditioning's own for its region.

use super::tensor_error;
use crate::conditioning::{Conditioning, ConditioningList, ControlHint};
use crate::controlnet::{ControlNet, EmbeddedHint};
use crate::sampling::{ControlGuidance, ImageTokenGuidance, RegionAdapters, TextConditioning};
use crate::unet::ContextCache;
use candle_core::{DType, Device};
use std::sync::Arc;
use swapgraph_model::{ModelHandle, Placement, Room, WeightStore};
use swapgraph_node_api::NodeError;

/// One link of the chain of ControlNets the conditionings carry.
pub struct Link<'a> {
    /// The hint whose settings apply: the positive side's, else the negative's.
    pub hint: &'a Arc<ControlHint>,
    /// The negative side's hint; `None` where that side carries no chain.
    pub negative: Option<&'a Arc<ControlHint>>,
    /// The positive side's, likewise.
    pub positive: Option<&'a Arc<ControlHint>>,
}

/// The chain of ControlNets the conditionings carry, link by link. A side that carries none gets zero residuals; two sides that both carry chains must carry the
/// same ControlNets in the same order.
///
/// # Errors
/// Chains of different lengths or ControlNets on the two sides, naming the first difference.
pub fn control_chain<'a>(positive: &'a Conditioning, negative: &'a Conditioning) -> Result<Vec<Link<'a>>, NodeError> {
    let (positives, negatives) = (&positive.controls, &negative.controls);
    if !positives.is_empty() && !negatives.is_empty() {
        let names = |hints: &[Arc<ControlHint>]| {
            hints
                .iter()
                .map(|h| format!("\"{}\"", h.controlnet.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let same = positives.len() == negatives.len()
            && positives
                .iter()
                .zip(negatives)
                .all(|(p, n)| Arc::ptr_eq(&p.controlnet.network, &n.controlnet.network));
        if !same {
            return Err(NodeError::msg(format!(
                "the positive and negative conditionings carry different ControlNets (positive: {}; negative: {}): \
                 apply the same ControlNets to both, in the same order",
                names(positives),
                names(negatives)
            )));
        }
    }
    let links = positives.len().max(negatives.len());
    Ok((0..links)
        .filter_map(|i| {
            let (negative, positive) = (negatives.get(i), positives.get(i));
            positive.or(negative).map(|hint| Link {
                hint,
                negative,
                positive,
            })
        })
        .collect())
}

/// The ControlNet models the conditionings carry, placed as they will run: `companion` (from
/// the sampled model, e.g. BlockSwap with `target: controlnet`) decides where their weights
/// live, when given.
///
/// # Errors
/// As [`control_chain`].
pub fn placed_controlnets(
    positive: &Conditioning,
    negative: &Conditioning,
    companion: Option<&Arc<dyn Placement>>,
) -> Result<Vec<ModelHandle>, NodeError> {
    Ok(control_chain(positive, negative)?
        .into_iter()
        .map(|link| match companion {
            Some(placement) => link.hint.controlnet.with_placement(Arc::clone(placement)),
            None => link.hint.controlnet.clone(),
        })
        .collect())
}

/// The ControlNets the conditionings carry, in order (the positive side's settings and region
/// win), with each side's context: its own override, else its text; their weights placed as
/// [`placed_controlnets`] says, each within its room of `rooms`.
///
/// # Errors
/// As [`control_chain`], a ControlNet model that is not one, or a store that cannot be built.
pub fn control_guidance<'a>(
    positive: &'a Conditioning,
    negative: &'a Conditioning,
    companion: Option<&Arc<dyn Placement>>,
    (device, dtype): (&Device, DType),
    rooms: &[Room],
) -> Result<Vec<ControlGuidance<'a>>, NodeError> {
    let placed = placed_controlnets(positive, negative, companion)?;
    control_chain(positive, negative)?
        .into_iter()
        .zip(placed)
        .zip(rooms)
        .map(|((link, placed), room)| {
            let store = placed
                .store(device, dtype, room)
                .map_err(|e| NodeError::msg(e.to_string()))?;
            let context = |side: Option<&Arc<ControlHint>>, text: &Conditioning| {
                side.map(|hint| hint_context(hint, &text.context, device)).transpose()
            };
            guidance(
                link.hint,
                store,
                (context(link.negative, negative)?, context(link.positive, positive)?),
                device,
            )
        })
        .collect()
}

/// The distinct ControlNet models any conditioning of the lists carries (each once, however
/// many conditionings carry it), placed as [`placed_controlnets`] places them, in the order
/// first met.
pub fn listed_controlnets(
    positive: &ConditioningList,
    negative: &ConditioningList,
    companion: Option<&Arc<dyn Placement>>,
) -> Vec<ModelHandle> {
    let mut models: Vec<&ModelHandle> = Vec::new();
    for hint in positive.0.iter().chain(&negative.0).flat_map(|c| &c.controls) {
        if !models.iter().any(|m| Arc::ptr_eq(&m.network, &hint.controlnet.network)) {
            models.push(&hint.controlnet);
        }
    }
    models
        .into_iter()
        .map(|model| match companion {
            Some(placement) => model.with_placement(Arc::clone(placement)),
            None => model.clone(),
        })
        .collect()
}

/// The adapters `conditioning` brings to its region when sampled with `text`: its ControlNets,
/// their weights from `stores` (one per model of [`listed_controlnets`], in its order), and its
/// image tokens.
///
/// # Errors
/// A ControlNet model that is not one or has no store, or a context that cannot be moved.
pub fn region_adapters<'c>(
    conditioning: &'c Conditioning,
    text: &TextConditioning,
    stores: &[(&ModelHandle, Arc<dyn WeightStore>)],
    device: &Device,
) -> Result<RegionAdapters<'c>, NodeError> {
    let controls = conditioning
        .controls
        .iter()
        .map(|hint| {
            let store = stores
                .iter()
                .find(|(model, _)| Arc::ptr_eq(&model.network, &hint.controlnet.network))
                .map(|(_, store)| Arc::clone(store))
                .ok_or_else(|| {
                    NodeError::msg(format!("ControlNet \"{}\" has no weights placed", hint.controlnet.name))
                })?;
            guidance(
                hint,
                store,
                (None, Some(hint_context(hint, &text.context, device)?)),
                device,
            )
        })
        .collect::<Result<_, _>>()?;
    let image_tokens = conditioning.image_prompt.as_ref().map(|prompt| {
        ImageTokenGuidance::new(
            Arc::clone(&prompt.layers),
            (prompt.tokens.clone(), prompt.tokens.clone()),
            prompt.weight,
            (prompt.start_percent, prompt.end_percent),
            prompt.region.clone(),
        )
    });
    Ok(RegionAdapters { controls, image_tokens })
}

/// What `hint`'s ControlNet attends to on the device: its own context (InstantID's face tokens),
/// else `text`.
fn hint_context(
    hint: &ControlHint,
    text: &candle_core::Tensor,
    device: &Device,
) -> Result<candle_core::Tensor, NodeError> {
    hint.context
        .clone()
        .unwrap_or_else(|| text.clone())
        .to_device(device)
        .map_err(tensor_error)
}

/// `hint`'s ControlNet with its weights in `store`, run with each side's context of `contexts`
/// (negative, positive), its hint image moved to `device` once for every step.
fn guidance<'h>(
    hint: &'h ControlHint,
    store: Arc<dyn WeightStore>,
    contexts: (Option<candle_core::Tensor>, Option<candle_core::Tensor>),
    device: &Device,
) -> Result<ControlGuidance<'h>, NodeError> {
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
    Ok(ControlGuidance {
        controlnet,
        store,
        // Once, not from the host's pageable memory at every step.
        hint: hint.hint.to_device(device).map_err(tensor_error)?,
        strength: hint.strength,
        contexts,
        percent: (hint.start_percent, hint.end_percent),
        region: hint.region.clone(),
        context_cache: ContextCache::default(),
        embedded_hint: EmbeddedHint::default(),
    })
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
