//! The conditioning projected once: every cross-attention layer's keys and values of the text
//! (or of what a ControlNet attends to).
//!
//! The conditioning stays the same through a sampling run, so its keys and values do too.
//! Projecting them once per run instead of in every pass leaves each pass with fewer weights:
//! SDXL's `attn2.to_k` and `attn2.to_v` are 0.63 GiB in f16 that BlockSwap no longer streams in
//! every step.

use super::attention::ContextKeys;
use super::layout::{Layer, Op, Step};
use super::UNetConfig;
use candle_core::{Result, Tensor};
use swapgraph_model::WeightStore;

/// One conditioning's keys and values for each cross-attention layer, in layer order.
#[derive(Clone, Debug)]
pub struct ProjectedContext {
    layers: Vec<ContextKeys>,
}

impl ProjectedContext {
    /// Layer `layer`'s keys and values.
    ///
    /// # Errors
    /// A layer the projection does not cover.
    pub fn layer(&self, layer: usize) -> Result<&ContextKeys> {
        self.layers.get(layer).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "the projected conditioning has {} cross-attention layers, layer {layer} was asked for",
                self.layers.len()
            ))
        })
    }
}

/// Runs the context projection `steps` (units `first_unit..` of `store`) on `context`.
///
/// # Errors
/// A store error, or a tensor error on a context of the wrong width.
pub(crate) fn project(
    steps: &[Step],
    first_unit: usize,
    store: &dyn WeightStore,
    cfg: &UNetConfig,
    context: &Tensor,
) -> Result<ProjectedContext> {
    let dtype = store.dtype();
    let context = context.to_dtype(dtype)?;
    let mut layers = Vec::with_capacity(steps.len());
    for (offset, step) in steps.iter().enumerate() {
        let Op::ContextProjection { layer, .. } = step.op else {
            candle_core::bail!("step {} is not a context projection", step.name);
        };
        if layer != layers.len() {
            candle_core::bail!("context projection of layer {layer} out of order");
        }
        let unit = first_unit + offset;
        let weights = store.acquire(unit)?;
        let built = weights
            .var_builder(dtype, store.device())
            .and_then(|vb| step.op.build(vb, cfg));
        let keys = match built {
            Ok(Layer::ContextProjection(projection)) => projection.forward(&context),
            Ok(_) => Err(candle_core::Error::Msg(format!(
                "step {} built another layer",
                step.name
            ))),
            Err(e) => Err(e),
        };
        store.release(unit);
        layers.push(keys?);
    }
    Ok(ProjectedContext { layers })
}

/// `given`, or else the projection `project` makes, held in `slot` for the pass that asked.
///
/// # Errors
/// Whatever `project` returns.
pub(crate) fn given_or_projected<'a>(
    given: Option<&'a ProjectedContext>,
    slot: &'a mut Option<ProjectedContext>,
    project: impl FnOnce() -> Result<ProjectedContext>,
) -> Result<&'a ProjectedContext> {
    match given {
        Some(projected) => Ok(projected),
        None => Ok(slot.insert(project()?)),
    }
}

/// The projected conditioning of a sampling run, kept for the batch layout it was made for
/// (whether guided, and the rows), so that each step after the first reuses it.
pub type ContextCache = crate::kept::KeptForLayout<(bool, usize), ProjectedContext>;
