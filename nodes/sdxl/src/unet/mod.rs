//! The SDXL UNet (diffusers' `UNet2DConditionModel` with `addition_embed_type: text_time`),
//! written as a list of swap units whose weights come from a [`WeightStore`] one unit at a time.
//!
//! Reference: diffusers `models/unets/unet_2d_condition.py`; Podell et al., "SDXL: Improving
//! Latent Diffusion Models for High-Resolution Image Synthesis" (2023).

mod activations;
mod attention;
mod config;
mod context;
#[cfg(all(test, feature = "cuda"))]
mod cuda_tests;
mod embeddings;
mod flops;
mod layout;
mod section;
mod state;
pub(crate) mod stem;
mod transformer;

pub use activations::step_activations;
pub use attention::{ContextKeys, ExtraTokens};
pub use config::UNetConfig;
pub(crate) use context::{given_or_projected, project};
pub use context::{ContextCache, ProjectedContext};
pub use layout::{context_steps, layout, Layer, Op, Step};
pub use section::Section;

use crate::kernels;
use candle_core::{Result, Tensor};
pub(crate) use state::State;
use swapgraph_model::{record_params, Network, UnitSpec, WeightStore};

/// Residuals a ControlNet adds to the UNet: one per skip connection of the down path (in push
/// order), and one after the middle block.
#[derive(Clone, Debug)]
pub struct ControlResiduals {
    /// Added to each skip connection.
    pub down: Vec<Tensor>,
    /// Added to the middle block's output.
    pub mid: Tensor,
}

/// Supplies extra key/value tokens per cross-attention layer (IP-Adapter), given the layer and
/// its feature map's `(height, width)`; `None` for a layer without any.
pub type ExtraTokensFn<'a> = dyn Fn(usize, (usize, usize)) -> Result<Option<ExtraTokens>> + 'a;

/// The inputs of one UNet evaluation.
pub struct UNetInput<'a> {
    /// Noisy latents `[b, 4, h, w]`.
    pub sample: &'a Tensor,
    /// Timesteps `[b]` (0..1000, fractional allowed).
    pub timesteps: &'a Tensor,
    /// Text conditioning `[b, n, cross_attention_dim]`.
    pub context: &'a Tensor,
    /// `context` already projected ([`UNet::project_context`]); `None` projects it in the pass.
    /// Samplers project once per run: the projection's weights then stay out of every step.
    pub projected: Option<&'a ProjectedContext>,
    /// Pooled text embedding `[b, pooled_text_dim]`.
    pub text_embeds: &'a Tensor,
    /// Original size, crop offset and target size `[b, 6]`.
    pub time_ids: &'a Tensor,
    /// ControlNet residuals, if any.
    pub control: Option<&'a ControlResiduals>,
    /// IP-Adapter tokens, if any.
    pub extra_tokens: Option<&'a ExtraTokensFn<'a>>,
}

/// An SDXL-architecture UNet: its configuration, its steps and their swap units. Holds no
/// weights; [`forward`](Self::forward) takes them from a store.
#[derive(Debug)]
pub struct UNet {
    cfg: UNetConfig,
    steps: Vec<Step>,
    context_steps: Vec<Step>,
    units: Vec<UnitSpec>,
}

impl UNet {
    /// The UNet of configuration `cfg`, with its unit list derived from the layer code.
    ///
    /// # Errors
    /// A tensor error from recording (not expected for valid configurations).
    pub fn new(cfg: UNetConfig) -> Result<Self> {
        let steps = layout(&cfg);
        let context_steps = context_steps(&steps);
        let units = steps
            .iter()
            .chain(&context_steps)
            .map(|step| {
                let tensors = record_params(|vb| step.op.build(vb, &cfg))?;
                Ok(UnitSpec {
                    name: step.name.clone(),
                    group: step.section.group(cfg.block_out_channels.len()),
                    tensors,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg,
            steps,
            context_steps,
            units,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// The swap units: the pass's in execution order (unit `i` belongs to step `i`), then the
    /// context projections' ([`Section::Context`]) in layer order.
    pub fn units(&self) -> &[UnitSpec] {
        &self.units
    }

    /// Every cross-attention layer's keys and values of `context` (`[b, n,
    /// cross_attention_dim]`), for passes with that context.
    ///
    /// # Errors
    /// A tensor error on a context of the wrong width, or a store error.
    pub fn project_context(&self, store: &dyn WeightStore, context: &Tensor) -> Result<ProjectedContext> {
        project(&self.context_steps, self.steps.len(), store, &self.cfg, context)
    }

    /// Predicts the noise in `input.sample`, fetching each unit's weights from `store` right
    /// before it runs and releasing them right after.
    ///
    /// # Errors
    /// A tensor error on mismatched inputs, or a store error.
    pub fn forward(&self, store: &dyn WeightStore, input: &UNetInput) -> Result<Tensor> {
        let mut projected_here = None;
        let context = given_or_projected(input.projected, &mut projected_here, || {
            self.project_context(store, input.context)
        })?;
        let mut state = State::new(input.sample);
        let dtype = store.dtype();
        let mut residuals_applied = (false, false);
        for (index, step) in self.steps.iter().enumerate() {
            if let Some(control) = input.control {
                if step.section == Section::Mid && !residuals_applied.0 {
                    state.add_down_residuals(&control.down)?;
                    residuals_applied.0 = true;
                }
                if matches!(step.section, Section::Up(_)) && !residuals_applied.1 {
                    state.x = kernels::add(&state.x, &control.mid.to_dtype(dtype)?)?;
                    residuals_applied.1 = true;
                }
            }
            let weights = store.acquire(index)?;
            let result = weights
                .var_builder(dtype, store.device())
                .and_then(|vb| step.op.build(vb, &self.cfg))
                .and_then(|layer| state.apply(&layer, &step.op, input, context, dtype));
            store.release(index);
            result?;
        }
        Ok(state.x)
    }
}

impl Network for UNet {
    fn units(&self) -> &[UnitSpec] {
        &self.units
    }

    fn kind(&self) -> &'static str {
        "SDXL UNet"
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn resident_layout(&self, weight: &Tensor) -> Result<Tensor> {
        kernels::resident_filter(weight)
    }
}
