//! The SDXL UNet as a k-diffusion denoiser: epsilon prediction turned into a clean-latent
//! prediction at a noise level, with classifier-free guidance over a batched cond/uncond pass.

use super::adapters::Adapters;
use super::samplers::Denoiser;
use super::schedule::DiscreteSchedule;
use super::step_graphs::StepGraphs;
use crate::unet::{ContextCache, UNet, UNetInput};
use candle_core::{DType, Result, Tensor};
use swapgraph_model::WeightStore;

/// Text conditioning for one side of classifier-free guidance.
#[derive(Clone, Debug)]
pub struct TextConditioning {
    /// Token embeddings `[1, n, cross_attention_dim]`.
    pub context: Tensor,
    /// Pooled embedding `[1, pooled_text_dim]`.
    pub pooled: Tensor,
    /// Size and crop ids `[1, 6]`.
    pub time_ids: Tensor,
}

/// `denoised = x - sigma * eps(x / sqrt(sigma^2 + 1), t(sigma))`, with
/// `eps = eps_uncond + cfg * (eps_cond - eps_uncond)`.
pub struct GuidedDenoiser<'a> {
    /// The UNet.
    pub unet: &'a UNet,
    /// Its weights.
    pub store: &'a dyn WeightStore,
    /// Sigma to timestep conversion.
    pub schedule: &'a DiscreteSchedule,
    /// Positive conditioning.
    pub positive: &'a TextConditioning,
    /// Negative conditioning.
    pub negative: &'a TextConditioning,
    /// Guidance scale; 1 evaluates only the positive side.
    pub cfg: f64,
    /// The ControlNets and image tokens attached (none: `Adapters::default()`).
    pub adapters: Adapters<'a>,
    /// The conditioning's keys and values, projected at the first step and reused after (start
    /// with an empty one).
    pub context_cache: ContextCache,
    /// Steps recorded as CUDA graphs and replayed (or `StepGraphs::new` with `replayable`
    /// false: queued from the host).
    pub graphs: &'a StepGraphs,
}

impl GuidedDenoiser<'_> {
    fn batch(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        // Long prompts give more 77-token windows on one side: repeat both sides to the least
        // common multiple of their lengths, as ComfyUI does.
        let pad = |a: &Tensor, b: &Tensor| -> Result<(Tensor, Tensor)> {
            let (na, nb) = (a.dim(1)?, b.dim(1)?);
            let common = na / gcd(na, nb) * nb;
            Ok((
                Tensor::cat(&vec![a; common / na], 1)?,
                Tensor::cat(&vec![b; common / nb], 1)?,
            ))
        };
        let (negative, positive) = pad(&self.negative.context, &self.positive.context)?;
        let context = Tensor::cat(&[&negative, &positive], 0)?;
        let pooled = Tensor::cat(&[&self.negative.pooled, &self.positive.pooled], 0)?;
        let time_ids = Tensor::cat(&[&self.negative.time_ids, &self.positive.time_ids], 0)?;
        let x = Tensor::cat(&[x, x], 0)?;
        Ok((x, context, pooled, time_ids))
    }
}

impl GuidedDenoiser<'_> {
    /// The guided prediction, and the negative side's own when `with_unconditioned` (which
    /// evaluates both sides even at a guidance scale of 1).
    fn predict(&mut self, x: &Tensor, sigma: f64, with_unconditioned: bool) -> Result<(Tensor, Option<Tensor>)> {
        let scaled = (x / (sigma * sigma + 1.0).sqrt())?;
        let batch = x.dim(0)?;
        let guided = self.cfg != 1.0 || with_unconditioned;
        let rows = if guided { 2 * batch } else { batch };
        let timesteps = Tensor::full(self.schedule.timestep(sigma) as f32, rows, x.device())?;
        let acting = self.adapters.acting(self.schedule, sigma);
        let eps = self
            .graphs
            .run(&[scaled, timesteps], acting, |inputs| {
                self.noise_prediction(&inputs[0], &inputs[1], sigma, guided)
            })?
            .to_dtype(DType::F32)?;
        let x = x.to_dtype(DType::F32)?;
        let denoised = |eps: &Tensor| &x - (eps * sigma)?;
        if !guided {
            return Ok((denoised(&eps)?, None));
        }
        let uncond = eps.narrow(0, 0, batch)?;
        let cond = eps.narrow(0, batch, batch)?;
        let guided_eps = (&uncond + ((cond - &uncond)? * self.cfg)?)?;
        let unconditioned = with_unconditioned.then(|| denoised(&uncond)).transpose()?;
        Ok((denoised(&guided_eps)?, unconditioned))
    }
}

impl GuidedDenoiser<'_> {
    /// The UNet's noise prediction for the `scaled` latents at `timesteps`, both sides batched
    /// when `guided`. Everything it reads but its two inputs is the same at every step with
    /// the same adapters acting (`sigma` only decides which act), as a recorded step needs.
    fn noise_prediction(&self, scaled: &Tensor, timesteps: &Tensor, sigma: f64, guided: bool) -> Result<Tensor> {
        let (input, context, pooled, time_ids) = if guided {
            self.batch(scaled)?
        } else {
            (
                scaled.clone(),
                self.positive.context.clone(),
                self.positive.pooled.clone(),
                self.positive.time_ids.clone(),
            )
        };
        let n = input.dim(0)?;
        let expand = |t: &Tensor| -> Result<Tensor> {
            let per = t.dim(0)?;
            if per == n {
                Ok(t.clone())
            } else {
                t.repeat_interleave_rows(n / per)
            }
        };
        let (context, pooled, time_ids) = (expand(&context)?, expand(&pooled)?, expand(&time_ids)?);
        let projected = self
            .context_cache
            .get_or_make((guided, n), || self.unet.project_context(self.store, &context))?;
        let unet_input = UNetInput {
            sample: &input,
            timesteps,
            context: &context,
            projected: Some(&projected),
            text_embeds: &pooled,
            time_ids: &time_ids,
            control: None,
            extra_tokens: None,
        };
        self.adapters
            .forward((self.unet, self.store), self.schedule, unet_input, sigma, guided)
    }
}

impl Denoiser for GuidedDenoiser<'_> {
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        Ok(self.predict(x, sigma, false)?.0)
    }

    fn denoise_with_unconditioned(&mut self, x: &Tensor, sigma: f64) -> Result<(Tensor, Tensor)> {
        both_sides(self.predict(x, sigma, true)?)
    }
}

/// A guided prediction with the negative side's own, which a prediction asked for both must
/// have.
pub(super) fn both_sides((guided, unconditioned): (Tensor, Option<Tensor>)) -> Result<(Tensor, Tensor)> {
    let unconditioned =
        unconditioned.ok_or_else(|| candle_core::Error::Msg("the negative side was not evaluated".into()))?;
    Ok((guided, unconditioned))
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a.max(1)
    } else {
        gcd(b, a % b)
    }
}

/// Repeats each row `n` times along the batch dimension.
trait RepeatRows {
    fn repeat_interleave_rows(&self, n: usize) -> Result<Tensor>;
}

impl RepeatRows for Tensor {
    fn repeat_interleave_rows(&self, n: usize) -> Result<Tensor> {
        let rows = (0..self.dim(0)?)
            .map(|i| self.narrow(0, i, 1))
            .collect::<Result<Vec<_>>>()?;
        let repeated: Vec<&Tensor> = rows.iter().flat_map(|row| std::iter::repeat_n(row, n)).collect();
        Tensor::cat(&repeated, 0)
    }
}
