//! The SDXL ControlNet (diffusers' `ControlNetModel`): the UNet's encoder half fed the noisy
//! latents plus an embedded hint image, whose skip connections and middle output, through
//! 1x1 "zero" convolutions, become residuals for the UNet.
//!
//! Like the UNet it is a list of swap units over a [`WeightStore`], so BlockSwap streams it
//! unchanged. Its down and middle steps are the UNet's own.
//!
//! Reference: diffusers `models/controlnets/controlnet.py`; Zhang et al., "Adding Conditional
//! Control to Text-to-Image Diffusion Models" (2023).

mod config;
#[cfg(all(test, feature = "cuda"))]
mod cuda_tests;
mod hint;
mod load;

pub use config::ControlNetConfig;

/// The socket type of a ControlNet, which this pack registers; packs that take ControlNets
/// (InstantID) use it too.
pub const CONTROL_NET: swapgraph_node_api::SocketType =
    swapgraph_node_api::SocketType::new("CONTROL_NET", "control_net");
pub use hint::{EmbeddedHint, Hint, HintEmbedding};
pub use load::{load, RANDOM_CONTROLNET, TINY_CONTROLNET};

use crate::blocks::Conv2d;
use crate::kernels;
use crate::unet::stem::Stem;
use crate::unet::Section;
use crate::unet::{
    context_steps, given_or_projected, layout, project, ControlResiduals, ProjectedContext, State, Step, UNetInput,
};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use swapgraph_model::{record_params, Network, UnitSpec, WeightStore};

/// What a ControlNet step does.
#[derive(Clone, Debug)]
enum ControlStep {
    /// Embeddings, `conv_in` and the hint embedding, added together.
    Stem,
    /// A down or middle step of the UNet's layout.
    Body(Step),
    /// The zero convolutions turning skips and the middle output into residuals.
    Outputs,
}

/// The 1x1 convolutions on each skip connection and on the middle output.
struct Outputs {
    down: Vec<Conv2d>,
    mid: Conv2d,
}

impl Outputs {
    fn new(vb: VarBuilder, skip_channels: &[usize], mid_channels: usize) -> Result<Self> {
        let down = skip_channels
            .iter()
            .enumerate()
            .map(|(i, &c)| Conv2d::new(c, c, 1, 0, 1, vb.pp(format!("controlnet_down_blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let mid = Conv2d::new(mid_channels, mid_channels, 1, 0, 1, vb.pp("controlnet_mid_block"))?;
        Ok(Self { down, mid })
    }
}

/// An SDXL ControlNet: its configuration, steps and swap units; weights come from a store.
#[derive(Debug)]
pub struct ControlNet {
    cfg: ControlNetConfig,
    steps: Vec<ControlStep>,
    /// Its transformer blocks' context projections, run once per conditioning.
    context_steps: Vec<Step>,
    units: Vec<UnitSpec>,
    skip_channels: Vec<usize>,
}

impl ControlNet {
    /// The ControlNet of configuration `cfg`, with its unit list derived from the layer code.
    ///
    /// # Errors
    /// A tensor error from recording (not expected for valid configurations).
    pub fn new(cfg: ControlNetConfig) -> Result<Self> {
        let body: Vec<Step> = layout(&cfg.unet)
            .into_iter()
            .filter(|step| matches!(step.section, Section::Down(_) | Section::Mid))
            .collect();
        let skip_channels = skip_channels(&cfg, &body);
        let levels = cfg.unet.block_out_channels.len();
        let context_steps = context_steps(&body);
        let mut steps = vec![ControlStep::Stem];
        steps.extend(body.into_iter().map(ControlStep::Body));
        steps.push(ControlStep::Outputs);
        let mut net = Self {
            cfg,
            steps,
            context_steps,
            units: Vec::new(),
            skip_channels,
        };
        let context = net.context_steps.iter().cloned().map(ControlStep::Body);
        net.units = net
            .steps
            .iter()
            .cloned()
            .chain(context)
            .map(|step| {
                let (name, section) = match &step {
                    ControlStep::Stem => (String::new(), Section::Stem),
                    ControlStep::Body(step) => (step.name.clone(), step.section),
                    ControlStep::Outputs => (String::new(), Section::Head),
                };
                let tensors = record_params(|vb| net.build(&step, vb).map(drop))?;
                Ok(UnitSpec {
                    name,
                    group: section.group(levels),
                    tensors,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(net)
    }

    /// The configuration.
    pub fn config(&self) -> &ControlNetConfig {
        &self.cfg
    }

    /// Every cross-attention layer's keys and values of `context`, for passes that attend to it.
    ///
    /// # Errors
    /// A tensor error on a context of the wrong width, or a store error.
    pub fn project_context(&self, store: &dyn WeightStore, context: &Tensor) -> Result<ProjectedContext> {
        project(&self.context_steps, self.steps.len(), store, &self.cfg.unet, context)
    }

    /// Residuals for the UNet from the noisy latents and conditioning in `input` (its
    /// `context` is what the ControlNet attends to: the text, or InstantID's face tokens, and
    /// `projected`, when given, this ControlNet's projection of it) and the `hint` image
    /// (embedded at the first pass, the embedding kept for the passes after it), scaled by
    /// `scale`.
    ///
    /// # Errors
    /// A tensor error on mismatched inputs, or a store error.
    pub fn forward(
        &self,
        store: &dyn WeightStore,
        input: &UNetInput,
        hint: &Hint,
        scale: f64,
    ) -> Result<ControlResiduals> {
        let dtype = store.dtype();
        let mut projected_here = None;
        let context = given_or_projected(input.projected, &mut projected_here, || {
            self.project_context(store, input.context)
        })?;
        let pass = Pass {
            input,
            context,
            hint,
            scale,
        };
        let mut state = State::new(input.sample);
        let mut residuals = None;
        for (index, step) in self.steps.iter().enumerate() {
            let weights = store.acquire(index)?;
            let result = weights
                .var_builder(dtype, store.device())
                .and_then(|vb| self.run(step, vb, &mut state, &pass, &mut residuals));
            store.release(index);
            result?;
        }
        residuals.ok_or_else(|| candle_core::Error::Msg("ControlNet produced no residuals".into()))
    }

    fn run(
        &self,
        step: &ControlStep,
        vb: VarBuilder,
        state: &mut State,
        pass: &Pass,
        residuals: &mut Option<ControlResiduals>,
    ) -> Result<()> {
        let dtype = vb.dtype();
        let Pass {
            input,
            context,
            hint,
            scale,
        } = *pass;
        match (step, self.build(step, vb)?) {
            (ControlStep::Stem, Built::Stem(stem, embedding)) => {
                state.emb =
                    Some(stem.embedding(input.timesteps, &input.text_embeds.to_dtype(dtype)?, input.time_ids)?);
                let (rows, _, height, width) = input.sample.dims4()?;
                let hint = hint.embedded.get_or_make((rows, height, width), || {
                    embedding.forward(&(hint.image)()?.to_dtype(dtype)?)
                })?;
                // In the hint's layout: channels-last on CUDA, as the blocks after it take it.
                state.x = kernels::add(&hint, &stem.conv_in(&input.sample.to_dtype(dtype)?)?)?;
                state.skips.push(state.x.clone());
            }
            (ControlStep::Body(step), Built::Body(layer)) => state.apply(&layer, &step.op, input, context, dtype)?,
            (ControlStep::Outputs, Built::Outputs(outputs)) => {
                let down = state
                    .skips
                    .iter()
                    .zip(&outputs.down)
                    .map(|(skip, conv)| kernels::elementwise(&conv.forward(skip)?, |t| t * scale))
                    .collect::<Result<Vec<_>>>()?;
                let mid = kernels::elementwise(&outputs.mid.forward(&state.x)?, |t| t * scale)?;
                *residuals = Some(ControlResiduals { down, mid });
            }
            _ => candle_core::bail!("ControlNet step and layer disagree"),
        }
        Ok(())
    }

    fn build(&self, step: &ControlStep, vb: VarBuilder) -> Result<Built> {
        let unet = &self.cfg.unet;
        Ok(match step {
            ControlStep::Stem => Built::Stem(
                Stem::new(vb.clone(), unet)?,
                HintEmbedding::new(
                    vb.pp("controlnet_cond_embedding"),
                    self.cfg.conditioning_channels,
                    &self.cfg.embedding_channels,
                    unet.block_out_channels[0],
                )?,
            ),
            ControlStep::Body(step) => Built::Body(step.op.build(vb, unet)?),
            ControlStep::Outputs => Built::Outputs(Outputs::new(vb, &self.skip_channels, unet.block_out_channels[2])?),
        })
    }
}

/// What one pass of the ControlNet runs on.
struct Pass<'a> {
    input: &'a UNetInput<'a>,
    context: &'a ProjectedContext,
    hint: &'a Hint<'a>,
    scale: f64,
}

/// A step's layers.
enum Built {
    Stem(Stem, HintEmbedding),
    Body(crate::unet::Layer),
    Outputs(Outputs),
}

/// Channels of each skip connection the down path pushes, in order.
fn skip_channels(cfg: &ControlNetConfig, body: &[Step]) -> Vec<usize> {
    use crate::unet::Op;
    let mut channels = vec![cfg.unet.block_out_channels[0]];
    for step in body {
        match step.op {
            Op::Resnet {
                cfg, push_skip: true, ..
            } => channels.push(cfg.out_channels),
            Op::TransformerOut {
                channels: c,
                push_skip: true,
            } => channels.push(c),
            Op::Downsample { channels: c } => channels.push(c),
            _ => {}
        }
    }
    channels
}

impl Network for ControlNet {
    fn units(&self) -> &[UnitSpec] {
        &self.units
    }

    fn kind(&self) -> &'static str {
        "SDXL ControlNet"
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn resident_layout(&self, weight: &Tensor) -> Result<Tensor> {
        kernels::resident_filter(weight)
    }
}
