//! CFG++ (Chung et al., "CFG++: Manifold-constrained Classifier Free Guidance", 2024): the step
//! lands on the guided prediction but renoises along the unguided one, which keeps samples on
//! the data manifold at low guidance scales (about 0.5-1 where plain CFG wants 5-8).

use super::single_step::{ancestral_step, slope};
use super::{NoiseSource, Position};
use candle_core::{Result, Tensor};

/// Euler CFG++: `denoised + down * (x - unconditioned) / sigma`, then, when `noise` is given
/// (the ancestral form, eta 1), fresh noise up to `next`; the prediction itself to zero.
pub(super) fn euler(
    x: &Tensor,
    denoised: &Tensor,
    unconditioned: &Tensor,
    at: Position,
    noise: Option<&mut dyn NoiseSource>,
) -> Result<Tensor> {
    let (sigma, next) = (at.sigma(), at.next());
    if next == 0.0 {
        return Ok(denoised.clone());
    }
    let (down, up) = match noise {
        Some(_) => ancestral_step(sigma, next),
        None => (next, 0.0),
    };
    let x = (denoised + (slope(x, unconditioned, sigma)? * down)?)?;
    match noise {
        Some(noise) => x.clone() + (noise.noise_like(&x)? * up)?,
        None => Ok(x),
    }
}
