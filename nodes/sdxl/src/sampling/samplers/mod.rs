//! Samplers: ways to walk a sigma sequence from noise to an image, following k-diffusion's and
//! ComfyUI's `sample_*` functions of the same names (eta 1 where a sampler has one, as ComfyUI's
//! KSampler runs them).
//!
//! Reference: Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models"
//! (2022); Lu et al., "DPM-Solver++" (2022); k-diffusion's and ComfyUI's `sampling.py`.

mod cfg_pp;
mod deis;
mod multistep;
mod single_step;
mod unipc;

use candle_core::{Result, Tensor};
use multistep::History;
use single_step::Current;

/// A model wrapped to predict the clean latent `x0` from a noisy latent at noise level `sigma`.
pub trait Denoiser {
    /// The denoised prediction for `x` at `sigma`.
    ///
    /// # Errors
    /// A model error.
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor>;

    /// The guided prediction and the negative side's own, which the CFG++ samplers step along.
    /// A denoiser without guidance has one prediction for both.
    ///
    /// # Errors
    /// A model error.
    fn denoise_with_unconditioned(&mut self, x: &Tensor, sigma: f64) -> Result<(Tensor, Tensor)> {
        let denoised = self.denoise(x, sigma)?;
        Ok((denoised.clone(), denoised))
    }
}

/// Fresh standard-normal noise for ancestral and SDE steps.
pub trait NoiseSource {
    /// Noise shaped like `like` for an ancestral step.
    ///
    /// # Errors
    /// A tensor error.
    fn noise_like(&mut self, like: &Tensor) -> Result<Tensor>;

    /// Noise shaped like `like` for an SDE step from `sigma` to `next` of the schedule `sigmas`
    /// (ComfyUI draws it from a Brownian tree over the schedule); by default as
    /// [`NoiseSource::noise_like`].
    ///
    /// # Errors
    /// A tensor error.
    fn brownian(&mut self, like: &Tensor, _sigmas: &[f64], _sigma: f64, _next: f64) -> Result<Tensor> {
        self.noise_like(like)
    }
}

/// A sampling algorithm, named in workflows as in ComfyUI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, swapgraph_node_api::Choice)]
pub enum Sampler {
    /// Euler's method on the probability-flow ODE.
    Euler,
    /// Euler steps to a lower sigma, then fresh noise back up (eta 1).
    EulerAncestral,
    /// DPM-Solver++(2M): second-order multistep.
    #[choice(name = "dpmpp_2m")]
    Dpmpp2m,
    /// DPM-Solver++ (stochastic): two predictions a step, Brownian noise at the midpoint and the
    /// end (eta 1).
    #[choice(name = "dpmpp_sde")]
    DpmppSde,
    /// DPM-Solver++(2M) SDE, midpoint variant, eta 1.
    #[choice(name = "dpmpp_2m_sde")]
    Dpmpp2mSde,
    /// DDIM, which for epsilon models in sigma space is the Euler step (as in ComfyUI).
    Ddim,
    /// Heun's second-order method: an Euler step, corrected by the slope at its end.
    Heun,
    /// DPM-Solver-2: the slope taken at the step's geometric midpoint.
    #[choice(name = "dpm_2")]
    Dpm2,
    /// DPM-Solver-2 to a lower sigma, then fresh noise back up (eta 1).
    #[choice(name = "dpm_2_ancestral")]
    Dpm2Ancestral,
    /// Linear multistep of order 4 over the last slopes.
    Lms,
    /// DPM-Solver++(2S), single-step second order, ancestral (eta 1).
    #[choice(name = "dpmpp_2s_ancestral")]
    Dpmpp2sAncestral,
    /// DPM-Solver++(3M) SDE, eta 1: third order once two earlier steps are known.
    #[choice(name = "dpmpp_3m_sde")]
    Dpmpp3mSde,
    /// The DDPM posterior step: the training process run backwards, with fresh noise each step.
    Ddpm,
    /// Latent consistency sampling: each step's prediction noised afresh to the next sigma (for
    /// LCM-distilled models).
    Lcm,
    /// Improved pseudo-numerical methods: Adams-Bashforth of order up to 4 over the slopes.
    Ipndm,
    /// iPNDM with its coefficients for unevenly spaced steps.
    #[choice(name = "ipndm_v")]
    IpndmV,
    /// DEIS: Adams-Bashforth of order up to 3 in the time of a variance-preserving process.
    Deis,
    /// UniPC: multistep predictor-corrector of order up to 3, B(h) = h.
    #[choice(name = "uni_pc")]
    UniPc,
    /// UniPC with B(h) = e^h - 1.
    #[choice(name = "uni_pc_bh2")]
    UniPcBh2,
    /// Second-order multistep exponential integrator (RES).
    #[choice(name = "res_multistep")]
    ResMultistep,
    /// Euler steps along the unguided prediction from the guided one (CFG++).
    #[choice(name = "euler_cfg_pp")]
    EulerCfgPp,
    /// Ancestral Euler along the unguided prediction from the guided one (CFG++, eta 1).
    #[choice(name = "euler_ancestral_cfg_pp")]
    EulerAncestralCfgPp,
}

/// Where a step stands: its index and the whole sigma sequence.
#[derive(Clone, Copy)]
struct Position<'a> {
    i: usize,
    sigmas: &'a [f64],
}

impl Position<'_> {
    /// The step's starting sigma.
    fn sigma(&self) -> f64 {
        self.sigmas[self.i]
    }

    /// The sigma it steps to.
    fn next(&self) -> f64 {
        self.sigmas[self.i + 1]
    }
}

impl Sampler {
    /// Walks `x` (noise at `sigmas[0]`, plus the latent for img2img) down `sigmas`, calling
    /// `after_step(i, n)` after each of the `n` steps (progress, cancellation).
    ///
    /// # Errors
    /// A model, noise or tensor error, or whatever `after_step` returns.
    pub fn sample(
        &self,
        model: &mut dyn Denoiser,
        mut x: Tensor,
        sigmas: &[f64],
        noise: &mut dyn NoiseSource,
        after_step: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<Tensor> {
        // UniPC's corrector evaluates the model where the next step starts: a loop of its own.
        match self {
            Self::UniPc => return unipc::sample(model, x, sigmas, unipc::Variant::Bh1, after_step),
            Self::UniPcBh2 => return unipc::sample(model, x, sigmas, unipc::Variant::Bh2, after_step),
            _ => {}
        }
        let steps = sigmas.len().saturating_sub(1);
        let mut history = History::default();
        for i in 0..steps {
            let at = Position { i, sigmas };
            x = self.step(model, &x, at, noise, &mut history)?;
            after_step(i + 1, steps)?;
        }
        Ok(x)
    }

    /// One step from `sigmas[i]` to `sigmas[i + 1]`.
    fn step(
        &self,
        model: &mut dyn Denoiser,
        x: &Tensor,
        at: Position,
        noise: &mut dyn NoiseSource,
        history: &mut History,
    ) -> Result<Tensor> {
        // CFG++ samplers step along the unguided prediction; the others have only the guided.
        let (denoised, unconditioned) = if matches!(self, Self::EulerCfgPp | Self::EulerAncestralCfgPp) {
            model.denoise_with_unconditioned(x, at.sigma())?
        } else {
            let denoised = model.denoise(x, at.sigma())?;
            (denoised.clone(), denoised)
        };
        let current = Current {
            x,
            denoised: &denoised,
            sigma: at.sigma(),
            next: at.next(),
            sigmas: at.sigmas,
        };
        match self {
            Self::Euler | Self::Ddim => single_step::euler(x, &denoised, current.sigma, current.next),
            Self::EulerAncestral => single_step::euler_ancestral(current, noise),
            Self::Heun => single_step::heun(model, current),
            Self::Dpm2 => single_step::midpoint(model, current),
            Self::Dpm2Ancestral => single_step::midpoint_ancestral(model, current, noise),
            Self::Dpmpp2sAncestral => single_step::dpmpp_2s_ancestral(model, current, noise),
            Self::DpmppSde => single_step::dpmpp_sde(model, current, noise),
            Self::Ddpm => single_step::ddpm(current, noise),
            Self::Lcm => single_step::lcm(&denoised, current.next, noise),
            Self::Dpmpp2m => history.dpmpp_2m(x, denoised, at),
            Self::Dpmpp2mSde => history.dpmpp_2m_sde(x, denoised, at, noise),
            Self::Dpmpp3mSde => history.dpmpp_3m_sde(x, denoised, at, noise),
            Self::Lms => history.lms(x, &denoised, at),
            Self::Ipndm => history.ipndm(x, &denoised, at),
            Self::IpndmV => history.ipndm_v(x, &denoised, at),
            Self::Deis => history.deis(x, &denoised, at),
            Self::ResMultistep => history.res_multistep(x, denoised, at),
            Self::EulerCfgPp => cfg_pp::euler(x, &denoised, &unconditioned, at, None),
            Self::EulerAncestralCfgPp => cfg_pp::euler(x, &denoised, &unconditioned, at, Some(noise)),
            Self::UniPc | Self::UniPcBh2 => candle_core::bail!("UniPC runs its own loop, not single steps"),
        }
    }
}
