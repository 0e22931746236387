//! What adapters add to each denoising step: ControlNet residuals (a chain's summed) and
//! IP-Adapter image tokens, for the batched (negative, positive) UNet input, within their part
//! of the schedule.

use super::schedule::DiscreteSchedule;
use super::step_split::{StepPart, StepSplit};
use crate::controlnet::{ControlNet, EmbeddedHint, Hint};
use crate::ip_adapter::IpAdapterLayers;
use crate::kept::KeptForLayout;
use crate::region::RegionMask;
use crate::unet::{ContextCache, ControlResiduals, ExtraTokens, ExtraTokensFn, UNet, UNetInput};
use candle_core::{Device, Result, Tensor};
use std::cell::RefCell;
use std::sync::Arc;
use swapgraph_image::{crop_to_aspect, resize, ScaleMethod};
use swapgraph_model::WeightStore;

/// The sigma where a fraction `percent` of the schedule has passed, as ComfyUI counts it: 0 is
/// before the first step (infinitely noisy), 1 after the last.
pub fn percent_sigma(schedule: &DiscreteSchedule, percent: f64) -> f64 {
    if percent <= 0.0 {
        f64::INFINITY
    } else if percent >= 1.0 {
        0.0
    } else {
        schedule.sigma_at((1.0 - percent) * 999.0)
    }
}

/// Whether `sigma` falls in the part of the schedule from `start` to `end` (fractions).
fn active(schedule: &DiscreteSchedule, sigma: f64, start: f64, end: f64) -> bool {
    sigma <= percent_sigma(schedule, start) && sigma >= percent_sigma(schedule, end)
}

/// Rows of a batch in the denoiser's order: the negative side first when guiding.
fn sides<T: Clone>(negative: T, positive: T, guided: bool) -> Vec<T> {
    if guided {
        vec![negative, positive]
    } else {
        vec![positive]
    }
}

/// A ControlNet for one sampling run: both sides' contexts and whether each side has it.
pub struct ControlGuidance<'a> {
    /// The network.
    pub controlnet: &'a ControlNet,
    /// Its weights.
    pub store: Arc<dyn WeightStore>,
    /// The hint `[1, 3, h, w]`, values 0..1, best on the sampler's device already (it is moved
    /// there at the first step otherwise).
    pub hint: Tensor,
    /// Its embedding, made at the first step the ControlNet acts in and reused after (start
    /// with an empty one).
    pub embedded_hint: EmbeddedHint,
    /// Residual scale.
    pub strength: f64,
    /// What each side's ControlNet pass attends to, `[1, n, dim]`; `None` for a side without it.
    pub contexts: (Option<Tensor>, Option<Tensor>),
    /// Fractions of the schedule it spans.
    pub percent: (f64, f64),
    /// Where its residuals act, if limited to a region.
    pub region: Option<RegionMask>,
    /// Its projection of the contexts, made at the first step it acts in and reused after
    /// (start with an empty one).
    pub context_cache: ContextCache,
}

impl ControlGuidance<'_> {
    /// Residuals for the batched `input` at `sigma`, or `None` outside the ControlNet's span.
    /// A side without the ControlNet gets zero residuals; outside the region, every side does.
    ///
    /// # Errors
    /// A tensor or store error.
    pub fn residuals(
        &self,
        schedule: &DiscreteSchedule,
        input: &UNetInput,
        sigma: f64,
        guided: bool,
    ) -> Result<Option<ControlResiduals>> {
        if !active(schedule, sigma, self.percent.0, self.percent.1) {
            return Ok(None);
        }
        let rows = input.sample.dim(0)?;
        let per_side = rows / if guided { 2 } else { 1 };
        let (negative, positive) = &self.contexts;
        let fallback = positive
            .as_ref()
            .or(negative.as_ref())
            .ok_or_else(|| candle_core::Error::Msg("a ControlNet without a context on either side".into()))?;
        let contexts = sides(
            negative.as_ref().unwrap_or(fallback),
            positive.as_ref().unwrap_or(fallback),
            guided,
        );
        let context = Tensor::cat(
            &contexts
                .iter()
                .map(|c| Tensor::cat(&vec![*c; per_side], 0))
                .collect::<Result<Vec<_>>>()?,
            0,
        )?;
        let image = || {
            let (_, _, h, w) = input.sample.dims4()?;
            let factor = self.controlnet.config().hint_factor();
            let hint = fit_hint(&self.hint.to_device(input.sample.device())?, (h * factor, w * factor))?;
            Tensor::cat(&vec![&hint; rows], 0)
        };
        let hint = Hint {
            image: &image,
            embedded: &self.embedded_hint,
        };
        let projected = self.context_cache.get_or_make((guided, rows), || {
            self.controlnet.project_context(self.store.as_ref(), &context)
        })?;
        let control_input = UNetInput {
            context: &context,
            projected: Some(&projected),
            control: None,
            extra_tokens: None,
            ..*input
        };
        let residuals = self
            .controlnet
            .forward(self.store.as_ref(), &control_input, &hint, self.strength)?;
        let sides_on: Vec<f32> = sides(negative.is_some(), positive.is_some(), guided)
            .into_iter()
            .flat_map(|on| std::iter::repeat_n(if on { 1.0 } else { 0.0 }, per_side))
            .collect();
        let sides_on = if sides_on.iter().all(|m| *m == 1.0) {
            None
        } else {
            Some(Tensor::from_vec(sides_on, (rows, 1, 1, 1), input.sample.device())?)
        };
        if sides_on.is_none() && self.region.is_none() {
            return Ok(Some(residuals));
        }
        let apply = |t: &Tensor| -> Result<Tensor> {
            let mut t = t.clone();
            if let Some(on) = &sides_on {
                t = t.broadcast_mul(&on.to_dtype(t.dtype())?)?;
            }
            if let Some(region) = &self.region {
                let (_, _, h, w) = t.dims4()?;
                t = t.broadcast_mul(&region.at(h, w, t.device(), t.dtype())?)?;
            }
            Ok(t)
        };
        Ok(Some(ControlResiduals {
            down: residuals.down.iter().map(apply).collect::<Result<Vec<_>>>()?,
            mid: apply(&residuals.mid)?,
        }))
    }
}

/// `hint` `[1, 3, h, w]` resized to `(height, width)` as ComfyUI's ControlNets resize theirs:
/// cropped about its centre to the target's aspect ratio, then resampled with PyTorch's
/// `nearest-exact`.
///
/// # Errors
/// A tensor error.
pub fn fit_hint(hint: &Tensor, size: (usize, usize)) -> Result<Tensor> {
    if hint.dims()[2..] == [size.0, size.1] {
        return Ok(hint.clone());
    }
    let resized = resize(&crop_to_aspect(hint, size)?, size, ScaleMethod::NearestExact)?;
    resized.to_dtype(hint.dtype())
}

/// The adapters one UNet pass runs with: a chain of ControlNets and image tokens.
#[derive(Clone, Copy, Default)]
pub struct Adapters<'a> {
    /// The ControlNets, in the chain's order.
    pub controls: &'a [ControlGuidance<'a>],
    /// IP-Adapter image tokens.
    pub image_tokens: Option<&'a ImageTokenGuidance>,
    /// Where the ControlNets' and the UNet's passes are timed, if anywhere.
    pub split: Option<&'a StepSplit>,
}

impl Adapters<'_> {
    /// Which adapters act at `sigma`: the ControlNets in order, then the image tokens.
    pub fn acting(&self, schedule: &DiscreteSchedule, sigma: f64) -> Vec<bool> {
        let controls = self
            .controls
            .iter()
            .map(|control| active(schedule, sigma, control.percent.0, control.percent.1));
        let tokens = self
            .image_tokens
            .map(|tokens| active(schedule, sigma, tokens.percent.0, tokens.percent.1));
        controls.chain(tokens).collect()
    }

    /// `unet`'s noise prediction for `input` at `sigma` with the adapters that act there: the
    /// ControlNets' residuals summed, the image tokens in each attention layer.
    ///
    /// # Errors
    /// A tensor or store error.
    pub fn forward(
        &self,
        (unet, store): (&UNet, &dyn WeightStore),
        schedule: &DiscreteSchedule,
        input: UNetInput,
        sigma: f64,
        guided: bool,
    ) -> Result<Tensor> {
        let control = match self.controls.is_empty() {
            true => None,
            false => timed(self.split, StepPart::ControlNets, || {
                summed_residuals(self.controls, schedule, &input, sigma, guided)
            })?,
        };
        let rows = input.sample.dim(0)?;
        let extra = match self.image_tokens {
            Some(tokens) => tokens.extra_tokens(schedule, sigma, guided, rows, input.sample.device())?,
            None => None,
        };
        let provider = |layer: usize, grid: (usize, usize)| match (self.image_tokens, extra.as_ref()) {
            (Some(guidance), Some(all)) => guidance.layer_tokens(all, layer, grid),
            _ => Ok(None),
        };
        let input = UNetInput {
            control: control.as_ref(),
            extra_tokens: extra.is_some().then_some(&provider as &ExtraTokensFn),
            ..input
        };
        timed(self.split, StepPart::UNet, || unet.forward(store, &input))
    }
}

/// `work`, timed as `part` of the step where there is a `split`.
fn timed<T>(split: Option<&StepSplit>, part: StepPart, work: impl FnOnce() -> Result<T>) -> Result<T> {
    match split {
        Some(split) => split.time(part, work),
        None => work(),
    }
}

/// The residuals of a chain of ControlNets for the batched `input` at `sigma`, summed as
/// ComfyUI sums a chain's; `None` where none of them acts at this sigma.
///
/// # Errors
/// A tensor or store error, or ControlNets whose residuals do not match layer for layer.
pub fn summed_residuals(
    controls: &[ControlGuidance],
    schedule: &DiscreteSchedule,
    input: &UNetInput,
    sigma: f64,
    guided: bool,
) -> Result<Option<ControlResiduals>> {
    let mut total: Option<ControlResiduals> = None;
    for control in controls {
        let Some(residuals) = control.residuals(schedule, input, sigma, guided)? else {
            continue;
        };
        total = Some(match total {
            None => residuals,
            Some(sum) if sum.down.len() == residuals.down.len() => ControlResiduals {
                down: sum
                    .down
                    .iter()
                    .zip(&residuals.down)
                    .map(|(a, b)| a + b)
                    .collect::<Result<_>>()?,
                mid: (&sum.mid + &residuals.mid)?,
            },
            Some(sum) => candle_core::bail!(
                "the chained ControlNets give {} and {} residuals: they are not for the same UNet",
                sum.down.len(),
                residuals.down.len()
            ),
        });
    }
    Ok(total)
}

/// IP-Adapter image tokens for one sampling run; projected once per batch layout.
pub struct ImageTokenGuidance {
    /// Per-layer projections.
    pub layers: Arc<IpAdapterLayers>,
    /// Negative and positive tokens `[1, n, dim]`.
    pub tokens: (Tensor, Tensor),
    /// Weight of the image attention.
    pub weight: f64,
    /// Fractions of the schedule it spans.
    pub percent: (f64, f64),
    /// Where the image attention acts, if limited to a region.
    pub region: Option<RegionMask>,
    /// Projected tokens for the last (guided, rows) layout.
    projected: KeptForLayout<(bool, usize), Vec<ExtraTokens>>,
    /// The region's token weights per feature-map grid seen so far.
    region_weights: RefCell<Vec<((usize, usize), Tensor)>>,
}

impl ImageTokenGuidance {
    /// Guidance from `layers` with each side's tokens, acting everywhere or only in `region`.
    pub fn new(
        layers: Arc<IpAdapterLayers>,
        tokens: (Tensor, Tensor),
        weight: f64,
        percent: (f64, f64),
        region: Option<RegionMask>,
    ) -> Self {
        Self {
            layers,
            tokens,
            weight,
            percent,
            region,
            projected: KeptForLayout::default(),
            region_weights: RefCell::new(Vec::new()),
        }
    }

    /// Layer `layer`'s tokens out of `projected` (from [`Self::extra_tokens`]) for a feature
    /// map of `grid` = (height, width), weighted by the region there when there is one.
    ///
    /// # Errors
    /// A tensor error.
    pub fn layer_tokens(
        &self,
        projected: &[ExtraTokens],
        layer: usize,
        grid: (usize, usize),
    ) -> Result<Option<ExtraTokens>> {
        let Some(tokens) = projected.get(layer) else {
            return Ok(None);
        };
        let mut tokens = tokens.clone();
        if let Some(region) = &self.region {
            let cached = self
                .region_weights
                .borrow()
                .iter()
                .find(|(g, _)| *g == grid)
                .map(|(_, w)| w.clone());
            let weights = match cached {
                Some(weights) => weights,
                None => {
                    let weights = region.token_weights(grid.0, grid.1, tokens.keys.device(), tokens.keys.dtype())?;
                    self.region_weights.borrow_mut().push((grid, weights.clone()));
                    weights
                }
            };
            tokens.token_weights = Some(weights);
        }
        Ok(Some(tokens))
    }

    /// Every layer's extra tokens for a batch of `rows` at `sigma`, or `None` outside the span.
    ///
    /// # Errors
    /// A tensor error.
    pub fn extra_tokens(
        &self,
        schedule: &DiscreteSchedule,
        sigma: f64,
        guided: bool,
        rows: usize,
        device: &Device,
    ) -> Result<Option<Vec<ExtraTokens>>> {
        if !active(schedule, sigma, self.percent.0, self.percent.1) {
            return Ok(None);
        }
        self.projected
            .get_or_make((guided, rows), || {
                let per_side = rows / if guided { 2 } else { 1 };
                let batch = sides(&self.tokens.0, &self.tokens.1, guided)
                    .into_iter()
                    .map(|t| Tensor::cat(&vec![t; per_side], 0))
                    .collect::<Result<Vec<_>>>()?;
                let batch = Tensor::cat(&batch, 0)?.to_device(device)?;
                (0..self.layers.len())
                    .map(|layer| self.layers.extra_tokens(layer, &batch, self.weight))
                    .collect()
            })
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controlnet::ControlNetConfig;
    use crate::sampling::Scheduler;
    use crate::unet::UNetConfig;
    use candle_core::DType;
    use swapgraph_model::{Network, ResidentStore, TensorSource};

    /// A store of seeded f32 weights on the CPU for `network`'s units.
    fn seeded_store(network: &dyn Network) -> Result<ResidentStore> {
        let units = network.units().to_vec();
        let params = units
            .iter()
            .flat_map(|u| u.tensors.iter().map(|(n, s)| (u.key(n), s.clone())))
            .collect();
        let source = TensorSource::seeded("tiny", network.kind(), params, DType::F32);
        ResidentStore::load(units, &source, DType::F32, &Device::Cpu).map_err(candle_core::Error::wrap)
    }

    #[test]
    fn a_pass_with_a_split_times_the_controlnets_and_the_unet_apart() -> Result<()> {
        let unet = UNet::new(UNetConfig::tiny())?;
        let controlnet = ControlNet::new(ControlNetConfig::tiny())?;
        let (unet_store, control_store) = (seeded_store(&unet)?, seeded_store(&controlnet)?);
        let cfg = UNetConfig::tiny();
        let randn = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, &Device::Cpu);
        let context = randn(&[1, 8, cfg.cross_attention_dim])?;
        let controls = [ControlGuidance {
            controlnet: &controlnet,
            store: Arc::new(control_store),
            hint: (randn(&[1, 3, 64, 64])?.abs()? * 0.5)?,
            embedded_hint: EmbeddedHint::default(),
            strength: 0.8,
            contexts: (None, Some(context.clone())),
            percent: (0.0, 1.0),
            region: None,
            context_cache: ContextCache::default(),
        }];
        let split = StepSplit::new(&Device::Cpu, true);
        let adapters = Adapters {
            controls: &controls,
            image_tokens: None,
            split: Some(&split),
        };
        let schedule = DiscreteSchedule::sdxl();
        let (sample, timesteps) = (randn(&[1, 4, 8, 8])?, Tensor::new(&[500f32], &Device::Cpu)?);
        let (pooled, time_ids) = (
            randn(&[1, cfg.pooled_text_dim])?,
            Tensor::zeros((1, 6), DType::F32, &Device::Cpu)?,
        );
        let input = || UNetInput {
            sample: &sample,
            timesteps: &timesteps,
            context: &context,
            projected: None,
            text_embeds: &pooled,
            time_ids: &time_ids,
            control: None,
            extra_tokens: None,
        };
        let sigma = schedule.sigmas(Scheduler::Normal, 2)[0];
        adapters.forward((&unet, &unet_store), &schedule, input(), sigma, false)?;
        split.first_step_done();
        adapters.forward((&unet, &unet_store), &schedule, input(), sigma, false)?;
        let shares = split.shares(1)?.expect("the second pass was marked");
        assert!(shares.controlnets_ms.is_some_and(|ms| ms > 0.0), "{shares:?}");
        assert!(shares.unet_ms > 0.0, "{shares:?}");

        // Without ControlNets there is no share for them.
        let unet_only = StepSplit::new(&Device::Cpu, true);
        let adapters = Adapters {
            split: Some(&unet_only),
            ..Adapters::default()
        };
        unet_only.first_step_done();
        adapters.forward((&unet, &unet_store), &schedule, input(), sigma, false)?;
        assert_eq!(unet_only.shares(1)?.map(|s| s.controlnets_ms), Some(None));
        Ok(())
    }
}
