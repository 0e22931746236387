//! Samplers whose step needs only the current prediction (and, for second-order ones, a second
//! evaluation within the step).

use super::{Denoiser, NoiseSource};
use candle_core::{Result, Tensor};

/// A step's latents and their prediction, the sigmas it goes from and to, and the whole
/// schedule (which SDE noise spans).
#[derive(Clone, Copy)]
pub(super) struct Current<'a> {
    pub(super) x: &'a Tensor,
    pub(super) denoised: &'a Tensor,
    pub(super) sigma: f64,
    pub(super) next: f64,
    pub(super) sigmas: &'a [f64],
}

/// `x + (x - denoised) / sigma * (next - sigma)`.
pub(super) fn euler(x: &Tensor, denoised: &Tensor, sigma: f64, next: f64) -> Result<Tensor> {
    x + (slope(x, denoised, sigma)? * (next - sigma))?
}

/// The probability-flow ODE's slope at `x`: `(x - denoised) / sigma`.
pub(super) fn slope(x: &Tensor, denoised: &Tensor, sigma: f64) -> Result<Tensor> {
    (x - denoised)? / sigma
}

/// The sigma to step down to and the noise to add back (k-diffusion `get_ancestral_step`, eta 1).
pub(super) fn ancestral_step(sigma: f64, next: f64) -> (f64, f64) {
    if next == 0.0 {
        return (0.0, 0.0);
    }
    let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma))
        .sqrt()
        .min(next);
    ((next * next - up * up).sqrt(), up)
}

/// `x + noise * scale`, drawing the noise only when `next` is above zero (the last step adds
/// none and draws none).
fn renoised(x: Tensor, noise: &mut dyn NoiseSource, next: f64, scale: f64) -> Result<Tensor> {
    if next > 0.0 {
        x.clone() + (noise.noise_like(&x)? * scale)?
    } else {
        Ok(x)
    }
}

/// Euler to the ancestral step's lower sigma, then fresh noise back up.
pub(super) fn euler_ancestral(step: Current, noise: &mut dyn NoiseSource) -> Result<Tensor> {
    let Current {
        x,
        denoised,
        sigma,
        next,
        ..
    } = step;
    let (down, up) = ancestral_step(sigma, next);
    renoised(euler(x, denoised, sigma, down)?, noise, next, up)
}

/// Heun: an Euler step, corrected by the mean of its two end slopes (Euler alone to zero).
pub(super) fn heun(model: &mut dyn Denoiser, step: Current) -> Result<Tensor> {
    let Current {
        x,
        denoised,
        sigma,
        next,
        ..
    } = step;
    let d = slope(x, denoised, sigma)?;
    let x_2 = (x + (&d * (next - sigma))?)?;
    if next == 0.0 {
        return Ok(x_2);
    }
    let d_2 = slope(&x_2, &model.denoise(&x_2, next)?, next)?;
    x + (((d + d_2)? / 2.0)? * (next - sigma))?
}

/// DPM-Solver-2's step from `sigma` to `next`: the slope at the geometric midpoint, or Euler's
/// step to zero.
pub(super) fn midpoint(model: &mut dyn Denoiser, step: Current) -> Result<Tensor> {
    let Current {
        x,
        denoised,
        sigma,
        next,
        ..
    } = step;
    let d = slope(x, denoised, sigma)?;
    if next == 0.0 {
        return x + (d * (next - sigma))?;
    }
    let mid = ((sigma.ln() + next.ln()) / 2.0).exp();
    let x_2 = (x + (d * (mid - sigma))?)?;
    let d_2 = slope(&x_2, &model.denoise(&x_2, mid)?, mid)?;
    x + (d_2 * (next - sigma))?
}

/// DPM-Solver-2 to the ancestral step's lower sigma, then fresh noise back up.
pub(super) fn midpoint_ancestral(
    model: &mut dyn Denoiser,
    step: Current,
    noise: &mut dyn NoiseSource,
) -> Result<Tensor> {
    let (down, up) = ancestral_step(step.sigma, step.next);
    let x = midpoint(model, Current { next: down, ..step })?;
    if down > 0.0 {
        x.clone() + (noise.noise_like(&x)? * up)?
    } else {
        Ok(x)
    }
}

/// DPM-Solver++(2S) to the ancestral step's lower sigma (half a step in t = -ln sigma, then the
/// whole step from its estimate), then fresh noise back up.
pub(super) fn dpmpp_2s_ancestral(
    model: &mut dyn Denoiser,
    step: Current,
    noise: &mut dyn NoiseSource,
) -> Result<Tensor> {
    let Current {
        x,
        denoised,
        sigma,
        next,
        ..
    } = step;
    let (down, up) = ancestral_step(sigma, next);
    let x = if down == 0.0 {
        euler(x, denoised, sigma, down)?
    } else {
        let (t, t_next) = (-sigma.ln(), -down.ln());
        let h = t_next - t;
        let s = t + h / 2.0;
        let x_2 = ((x * ((-s).exp() / sigma))? - (denoised * (-h / 2.0).exp_m1())?)?;
        let denoised_2 = model.denoise(&x_2, (-s).exp())?;
        ((x * (down / sigma))? - (denoised_2 * (-h).exp_m1())?)?
    };
    renoised(x, noise, next, up)
}

/// DPM-Solver++ (stochastic), ComfyUI's `dpmpp_sde` with eta 1 and r 1/2: an ancestral step to
/// the midpoint in log sigma with Brownian noise, a second prediction there, then an ancestral
/// step from the start to `next` along it.
pub(super) fn dpmpp_sde(model: &mut dyn Denoiser, step: Current, noise: &mut dyn NoiseSource) -> Result<Tensor> {
    let Current {
        x,
        denoised,
        sigma,
        next,
        sigmas,
    } = step;
    if next == 0.0 {
        return Ok(denoised.clone());
    }
    // The midpoint as ComfyUI computes it, in float32: the Brownian tree is queried there.
    let (lambda_s, lambda_t) = (-(sigma as f32).ln(), -(next as f32).ln());
    let midpoint = f64::from((-(lambda_s + (lambda_t - lambda_s) * 0.5)).exp());
    let toward = |x: &Tensor, prediction: &Tensor, to: f64| -> Result<(Tensor, f64)> {
        let (down, up) = ancestral_step(sigma, to);
        let h = sigma.ln() - down.ln();
        Ok((((x * (-h).exp())? - (prediction * (-h).exp_m1())?)?, up))
    };
    let (x_2, up) = toward(x, denoised, midpoint)?;
    let x_2 = (x_2.clone() + (noise.brownian(&x_2, sigmas, sigma, midpoint)? * up)?)?;
    let denoised_2 = model.denoise(&x_2, midpoint)?;
    let (x, up) = toward(x, &denoised_2, next)?;
    x.clone() + (noise.brownian(&x, sigmas, sigma, next)? * up)?
}

/// The DDPM posterior step in the model's own scaling (`x / sqrt(1 + sigma^2)`): the mean of
/// q(x_prev | x, x0) plus its standard deviation's worth of fresh noise.
pub(super) fn ddpm(step: Current, noise: &mut dyn NoiseSource) -> Result<Tensor> {
    let Current {
        x,
        denoised,
        sigma,
        next,
        ..
    } = step;
    let eps = slope(x, denoised, sigma)?;
    let alpha_cumprod = 1.0 / (sigma * sigma + 1.0);
    let alpha_cumprod_next = 1.0 / (next * next + 1.0);
    let alpha = alpha_cumprod / alpha_cumprod_next;
    let scaled = (x / (1.0 + sigma * sigma).sqrt())?;
    let mean = ((scaled - (eps * ((1.0 - alpha) / (1.0 - alpha_cumprod).sqrt()))?)? * (1.0 / alpha).sqrt())?;
    if next == 0.0 {
        return Ok(mean);
    }
    let deviation = ((1.0 - alpha) * (1.0 - alpha_cumprod_next) / (1.0 - alpha_cumprod)).sqrt();
    let x = (mean.clone() + (noise.noise_like(&mean)? * deviation)?)?;
    x * (1.0 + next * next).sqrt()
}

/// Latent consistency: the prediction itself, noised afresh to `next`.
pub(super) fn lcm(denoised: &Tensor, next: f64, noise: &mut dyn NoiseSource) -> Result<Tensor> {
    renoised(denoised.clone(), noise, next, next)
}
