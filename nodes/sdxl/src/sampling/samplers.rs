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
        let mut slopes: Vec<Tensor> = Vec::new(); // LMS: the last slopes, oldest first
        for i in 0..steps {
            let (sigma, next) = (sigmas[i], sigmas[i + 1]);
            let denoised = model.denoise(&x, sigma)?;
            x = match self {
                Self::Heun => {
                    let d = slope(&x, &denoised, sigma)?;
                    let x_2 = (&x + (&d * (next - sigma))?)?;
                    if next == 0.0 {
                        x_2
                    } else {
                        let d_2 = slope(&x_2, &model.denoise(&x_2, next)?, next)?;
                        (&x + (((d + d_2)? / 2.0)? * (next - sigma))?)?
                    }
                }
                Self::Dpm2 => midpoint_step(model, &x, &denoised, sigma, next)?,
                Self::Dpm2Ancestral => {
                    let (down, up) = ancestral_step(sigma, next);
                    let x = midpoint_step(model, &x, &denoised, sigma, down)?;
                    if down > 0.0 {
                        (x + (noise.noise_like(&denoised)? * up)?)?
                    } else {
                        x
                    }
                }
                Self::Lms => {
                    slopes.push(slope(&x, &denoised, sigma)?);
                    if slopes.len() > LMS_ORDER {
                        slopes.remove(0);
                    }
                    let mut x = x.clone();
                    for (j, d) in slopes.iter().rev().enumerate() {
                        x = (x + (d * lms_coefficient(sigmas, i, slopes.len(), j))?)?;
                    }
                    x
                }
                Self::Dpmpp2sAncestral => {
                    let (down, up) = ancestral_step(sigma, next);
                    let x = if down == 0.0 {
                        euler_step(&x, &denoised, sigma, down)?
                    } else {
                        // In t = -ln(sigma): half a step, then the whole step from its estimate.
                        let (t, t_next) = (-sigma.ln(), -down.ln());
                        let h = t_next - t;
                        let s = t + h / 2.0;
                        let x_2 = ((&x * ((-s).exp() / sigma))? - (&denoised * (-h / 2.0).exp_m1())?)?;
                        let denoised_2 = model.denoise(&x_2, (-s).exp())?;
                        ((&x * (down / sigma))? - (denoised_2 * (-h).exp_m1())?)?
                    };
                    if next > 0.0 {
                        (x + (noise.noise_like(&denoised)? * up)?)?
                    } else {
                        x
                    }
                }
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
    x + (slope(x, denoised, sigma)? * (next - sigma))?
}

/// The probability-flow ODE's slope at `x`: `(x - denoised) / sigma`.
fn slope(x: &Tensor, denoised: &Tensor, sigma: f64) -> Result<Tensor> {
    (x - denoised)? / sigma
}

/// DPM-Solver-2's step from `sigma` to `next`: the slope at the geometric midpoint, or Euler's
/// step to zero.
fn midpoint_step(model: &mut dyn Denoiser, x: &Tensor, denoised: &Tensor, sigma: f64, next: f64) -> Result<Tensor> {
    let d = slope(x, denoised, sigma)?;
    if next == 0.0 {
        return x + (d * (next - sigma))?;
    }
    let mid = ((sigma.ln() + next.ln()) / 2.0).exp();
    let x_2 = (x + (d * (mid - sigma))?)?;
    let d_2 = slope(&x_2, &model.denoise(&x_2, mid)?, mid)?;
    x + (d_2 * (next - sigma))?
}

/// How many slopes the linear multistep method combines.
const LMS_ORDER: usize = 4;

/// The weight of the slope `j` steps back in step `i` of an `order`-slope linear multistep: the
/// integral over the step of that slope's Lagrange basis polynomial through the sigmas of the
/// slopes, by 4-point Gauss-Legendre quadrature (exact for these polynomials of degree at most
/// 3).
fn lms_coefficient(sigmas: &[f64], i: usize, order: usize, j: usize) -> f64 {
    let basis = |tau: f64| {
        (0..order)
            .filter(|&k| k != j)
            .map(|k| (tau - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k]))
            .product::<f64>()
    };
    const NODES: [(f64, f64); 4] = [
        (-0.861_136_311_594_052_6, 0.347_854_845_137_453_9),
        (-0.339_981_043_584_856_3, 0.652_145_154_862_546_1),
        (0.339_981_043_584_856_3, 0.652_145_154_862_546_1),
        (0.861_136_311_594_052_6, 0.347_854_845_137_453_9),
    ];
    let (a, b) = (sigmas[i], sigmas[i + 1]);
    let half = (b - a) / 2.0;
    NODES
        .iter()
        .map(|(node, weight)| weight * basis(a + half * (node + 1.0)))
        .sum::<f64>()
        * half
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
