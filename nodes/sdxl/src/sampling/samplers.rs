//! Samplers: ways to walk a sigma sequence from noise to an image, following k-diffusion's
//! `sample_euler`, `sample_euler_ancestral`, `sample_dpmpp_2m` and `sample_dpmpp_2m_sde`
//! (midpoint, eta 1), which ComfyUI uses under the same names.
//!
//! Reference: Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models"
//! (2022); Lu et al., "DPM-Solver++" (2022); k-diffusion `sampling.py`.

use candle_core::{Result, Tensor};

/// A model wrapped to predict the clean latent `x0` from a noisy latent at noise level `sigma`.
pub trait Denoiser {
    /// The denoised prediction for `x` at `sigma`.
    ///
    /// # Errors
    /// A model error.
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor>;
}

/// Fresh standard-normal noise for ancestral and SDE steps.
pub trait NoiseSource {
    /// Noise shaped like `like`.
    ///
    /// # Errors
    /// A tensor error.
    fn noise_like(&mut self, like: &Tensor) -> Result<Tensor>;
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
    /// DPM-Solver++(2M) SDE, midpoint variant, eta 1.
    #[choice(name = "dpmpp_2m_sde")]
    Dpmpp2mSde,
    /// DDIM, which for epsilon models in sigma space is the Euler step (as in ComfyUI).
    Ddim,
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
        let steps = sigmas.len().saturating_sub(1);
        let mut previous: Option<(Tensor, f64)> = None; // (denoised, h) of the last step
        for i in 0..steps {
            let (sigma, next) = (sigmas[i], sigmas[i + 1]);
            let denoised = model.denoise(&x, sigma)?;
            x = match self {
                Self::Euler | Self::Ddim => euler_step(&x, &denoised, sigma, next)?,
                Self::EulerAncestral => {
                    let (down, up) = ancestral_step(sigma, next);
                    let x = euler_step(&x, &denoised, sigma, down)?;
                    if next > 0.0 {
                        (x + (noise.noise_like(&denoised)? * up)?)?
                    } else {
                        x
                    }
                }
                Self::Dpmpp2m => {
                    let h = sigma.ln() - next.ln();
                    let step = match (&previous, next > 0.0) {
                        (Some((old, h_last)), true) => {
                            let r = h_last / h;
                            ((&denoised * (1.0 + 1.0 / (2.0 * r)))? - (old * (1.0 / (2.0 * r)))?)?
                        }
                        _ => denoised.clone(),
                    };
                    previous = Some((denoised.clone(), h));
                    ((&x * (next / sigma))? - (step * (-h).exp_m1())?)?
                }
                Self::Dpmpp2mSde => {
                    if next == 0.0 {
                        denoised.clone()
                    } else {
                        let h = sigma.ln() - next.ln();
                        let mut x = ((&x * (next / sigma * (-h).exp()))? + (&denoised * -(-2.0 * h).exp_m1())?)?;
                        if let Some((old, h_last)) = &previous {
                            let r = h_last / h;
                            x = (x + ((&denoised - old)? * (0.5 * -(-2.0 * h).exp_m1() / r))?)?;
                        }
                        let scale = next * (-(-2.0 * h).exp_m1()).sqrt();
                        let x = (x + (noise.noise_like(&denoised)? * scale)?)?;
                        previous = Some((denoised.clone(), h));
                        x
                    }
                }
            };
            if !matches!(self, Self::Dpmpp2m | Self::Dpmpp2mSde) {
                previous = None;
            }
            after_step(i + 1, steps)?;
        }
        Ok(x)
    }
}

/// `x + (x - denoised) / sigma * (next - sigma)`.
fn euler_step(x: &Tensor, denoised: &Tensor, sigma: f64, next: f64) -> Result<Tensor> {
    let derivative = ((x - denoised)? / sigma)?;
    x + (derivative * (next - sigma))?
}

/// The sigma to step down to and the noise to add back (k-diffusion `get_ancestral_step`, eta 1).
fn ancestral_step(sigma: f64, next: f64) -> (f64, f64) {
    if next == 0.0 {
        return (0.0, 0.0);
    }
    let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma))
        .sqrt()
        .min(next);
    ((next * next - up * up).sqrt(), up)
}
