//! Multistep samplers: each step combines the current prediction with earlier steps' ones (or
//! their slopes), kept in [`History`].

use super::deis::{self, DEIS_ORDER};
use super::single_step::{euler, slope};
use super::{NoiseSource, Position};
use candle_core::{Result, Tensor};

/// How many slopes the linear multistep method combines.
const LMS_ORDER: usize = 4;

/// The highest order of iPNDM: the current slope and three earlier ones.
const IPNDM_ORDER: usize = 4;

/// What earlier steps leave for later ones.
#[derive(Default)]
pub(super) struct History {
    /// The predictions of earlier steps, newest last.
    denoised: Vec<Tensor>,
    /// The slopes of earlier steps, newest last.
    slopes: Vec<Tensor>,
}

impl History {
    /// Keeps `denoised` as the newest prediction, with at most `keep` in all.
    fn remember_denoised(&mut self, denoised: Tensor, keep: usize) {
        self.denoised.push(denoised);
        if self.denoised.len() > keep {
            self.denoised.remove(0);
        }
    }

    /// Keeps `slope` as the newest slope, with at most `keep` in all.
    fn remember_slope(&mut self, slope: Tensor, keep: usize) {
        self.slopes.push(slope);
        if self.slopes.len() > keep {
            self.slopes.remove(0);
        }
    }

    /// The `back`-th earlier prediction (1: the last step's).
    fn earlier(&self, back: usize) -> Option<&Tensor> {
        self.denoised.len().checked_sub(back).map(|i| &self.denoised[i])
    }

    /// DPM-Solver++(2M): the last prediction extrapolated in t = -ln sigma.
    pub(super) fn dpmpp_2m(&mut self, x: &Tensor, denoised: Tensor, at: Position) -> Result<Tensor> {
        let (sigma, next) = (at.sigma(), at.next());
        let h = sigma.ln() - next.ln();
        let step = match (self.earlier(1), next > 0.0) {
            (Some(old), true) => {
                let r = log_step(at, 1) / h;
                ((&denoised * (1.0 + 1.0 / (2.0 * r)))? - (old * (1.0 / (2.0 * r)))?)?
            }
            _ => denoised.clone(),
        };
        self.remember_denoised(denoised, 1);
        (x * (next / sigma))? - (step * (-h).exp_m1())?
    }

    /// DPM-Solver++(2M) SDE, midpoint variant, eta 1.
    pub(super) fn dpmpp_2m_sde(
        &mut self,
        x: &Tensor,
        denoised: Tensor,
        at: Position,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let (sigma, next) = (at.sigma(), at.next());
        if next == 0.0 {
            return Ok(denoised);
        }
        let h = sigma.ln() - next.ln();
        let mut x = ((x * (next / sigma * (-h).exp()))? + (&denoised * -(-2.0 * h).exp_m1())?)?;
        if let Some(old) = self.earlier(1) {
            let r = log_step(at, 1) / h;
            x = (x + ((&denoised - old)? * (0.5 * -(-2.0 * h).exp_m1() / r))?)?;
        }
        let x = sde_noise(x, noise, at, h)?;
        self.remember_denoised(denoised, 1);
        Ok(x)
    }

    /// DPM-Solver++(3M) SDE, eta 1: first order, then second, then third as earlier predictions
    /// become known.
    pub(super) fn dpmpp_3m_sde(
        &mut self,
        x: &Tensor,
        denoised: Tensor,
        at: Position,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let (sigma, next) = (at.sigma(), at.next());
        if next == 0.0 {
            return Ok(denoised);
        }
        let h = sigma.ln() - next.ln();
        let h_eta = 2.0 * h;
        let mut x = ((x * (next / sigma * (-h).exp()))? + (&denoised * -(-h_eta).exp_m1())?)?;
        let phi_2 = (-h_eta).exp_m1() / h_eta + 1.0;
        match (self.earlier(1), self.earlier(2)) {
            (Some(last), Some(before)) => {
                let (r0, r1) = (log_step(at, 1) / h, log_step(at, 2) / h);
                let d1_0 = ((&denoised - last)? / r0)?;
                let d1_1 = ((last - before)? / r1)?;
                let difference = (&d1_0 - &d1_1)?;
                let d1 = (&d1_0 + (&difference * (r0 / (r0 + r1)))?)?;
                let d2 = (difference / (r0 + r1))?;
                let phi_3 = phi_2 / h_eta - 0.5;
                x = ((x + (d1 * phi_2)?)? - (d2 * phi_3)?)?;
            }
            (Some(last), None) => {
                let r = log_step(at, 1) / h;
                x = (x + (((&denoised - last)? / r)? * phi_2)?)?;
            }
            _ => {}
        }
        let x = sde_noise(x, noise, at, h)?;
        self.remember_denoised(denoised, 2);
        Ok(x)
    }

    /// Linear multistep of order 4 over the last slopes (the prediction itself to zero).
    pub(super) fn lms(&mut self, x: &Tensor, denoised: &Tensor, at: Position) -> Result<Tensor> {
        self.remember_slope(slope(x, denoised, at.sigma())?, LMS_ORDER);
        if at.next() == 0.0 {
            return Ok(denoised.clone());
        }
        let mut x = x.clone();
        for (j, d) in self.slopes.iter().rev().enumerate() {
            x = (x + (d * lms_coefficient(at.sigmas, at.i, self.slopes.len(), j))?)?;
        }
        Ok(x)
    }

    /// iPNDM: Adams-Bashforth over the current and up to three earlier slopes, with the
    /// coefficients of evenly spaced steps.
    pub(super) fn ipndm(&mut self, x: &Tensor, denoised: &Tensor, at: Position) -> Result<Tensor> {
        let d = slope(x, denoised, at.sigma())?;
        let weights: &[f64] = match self.slopes.len() {
            0 => &[1.0],
            1 => &[3.0 / 2.0, -1.0 / 2.0],
            2 => &[23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0],
            _ => &[55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0],
        };
        self.adams_bashforth(x, denoised, d, at, weights)
    }

    /// iPNDM with the coefficients for the actual, uneven step sizes.
    pub(super) fn ipndm_v(&mut self, x: &Tensor, denoised: &Tensor, at: Position) -> Result<Tensor> {
        let d = slope(x, denoised, at.sigma())?;
        let weights = variable_ipndm_weights(at, self.slopes.len());
        self.adams_bashforth(x, denoised, d, at, &weights)
    }

    /// `x + (next - sigma) * (weights[0] d + weights[1] d_-1 + ...)`, or the prediction itself
    /// to zero; then `d` joins the slopes.
    fn adams_bashforth(
        &mut self,
        x: &Tensor,
        denoised: &Tensor,
        d: Tensor,
        at: Position,
        weights: &[f64],
    ) -> Result<Tensor> {
        let next = if at.next() == 0.0 {
            denoised.clone()
        } else {
            let mut combined = (&d * weights[0])?;
            for (weight, earlier) in weights[1..].iter().zip(self.slopes.iter().rev()) {
                combined = (combined + (earlier * *weight)?)?;
            }
            (x + (combined * (at.next() - at.sigma()))?)?
        };
        self.remember_slope(d, IPNDM_ORDER - 1);
        Ok(next)
    }

    /// DEIS of order up to 3 (ComfyUI's `deis`): the current slope and the last two, weighted by
    /// [`deis::coefficients`]; Euler first and to zero.
    pub(super) fn deis(&mut self, x: &Tensor, denoised: &Tensor, at: Position) -> Result<Tensor> {
        let d = slope(x, denoised, at.sigma())?;
        let order = if at.next() <= 0.0 {
            1
        } else {
            (at.i + 1).min(DEIS_ORDER)
        };
        let next = if order == 1 {
            (x + (&d * (at.next() - at.sigma()))?)?
        } else {
            let weights = deis::coefficients(at.sigmas, at.i, order);
            let mut next = (x + (&d * weights[0])?)?;
            for (weight, earlier) in weights[1..].iter().zip(self.slopes.iter().rev()) {
                next = (next + (earlier * *weight)?)?;
            }
            next
        };
        self.remember_slope(d, DEIS_ORDER - 1);
        Ok(next)
    }

    /// RES second-order multistep (eta 0): an exponential integrator in t = -ln sigma whose
    /// second stage is the last step's prediction; Euler first and to zero.
    pub(super) fn res_multistep(&mut self, x: &Tensor, denoised: Tensor, at: Position) -> Result<Tensor> {
        let (sigma, next) = (at.sigma(), at.next());
        let x = match self.earlier(1) {
            Some(old) if next > 0.0 => {
                let h = sigma.ln() - next.ln();
                // The last step's length against this one's, measured backwards in t.
                let c2 = -log_step(at, 1) / h;
                let phi_1 = (-h).exp_m1() / -h;
                let phi_2 = (phi_1 - 1.0) / -h;
                let (b1, b2) = (phi_1 - phi_2 / c2, phi_2 / c2);
                ((x * (-h).exp())? + (((&denoised * b1)? + (old * b2)?)? * h)?)?
            }
            _ => euler(x, &denoised, sigma, next)?,
        };
        self.remember_denoised(denoised, 1);
        Ok(x)
    }
}

/// ln(sigma[i - back] / sigma[i - back + 1]): an earlier step's length in t = -ln sigma.
fn log_step(at: Position, back: usize) -> f64 {
    let i = at.i - back;
    at.sigmas[i].ln() - at.sigmas[i + 1].ln()
}

/// The SDE samplers' fresh noise at eta 1: `next * sqrt(1 - e^(-2h))` of it.
fn sde_noise(x: Tensor, noise: &mut dyn NoiseSource, at: Position, h: f64) -> Result<Tensor> {
    let scale = at.next() * (-(-2.0 * h).exp_m1()).sqrt();
    x.clone() + (noise.brownian(&x, at.sigmas, at.sigma(), at.next())? * scale)?
}

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

/// iPNDM-v's weights for the current slope and the `earlier` ones before it (at most three),
/// from the step lengths in sigma (Zhou et al., "Fast ODE-based Sampling for Diffusion Models
/// in Around 5 Steps", 2024).
fn variable_ipndm_weights(at: Position, earlier: usize) -> Vec<f64> {
    let s = at.sigmas;
    let i = at.i;
    let h = |back: usize| s[i + 1 - back] - s[i - back];
    match earlier {
        0 => vec![1.0],
        1 => {
            let ratio = h(0) / h(1);
            vec![(2.0 + ratio) / 2.0, -ratio / 2.0]
        }
        2 => {
            let (h_n, h_1, h_2) = (h(0), h(1), h(2));
            let temp = (1.0 - h_n / (3.0 * (h_n + h_1)) * (h_n * (h_n + h_1)) / (h_1 * (h_1 + h_2))) / 2.0;
            vec![
                (2.0 + h_n / h_1) / 2.0 + temp,
                -(h_n / h_1) / 2.0 - (1.0 + h_1 / h_2) * temp,
                temp * h_1 / h_2,
            ]
        }
        _ => {
            let (h_n, h_1, h_2, h_3) = (h(0), h(1), h(2), h(3));
            let temp1 = (1.0 - h_n / (3.0 * (h_n + h_1)) * (h_n * (h_n + h_1)) / (h_1 * (h_1 + h_2))) / 2.0;
            let temp2 = ((1.0 - h_n / (3.0 * (h_n + h_1))) / 2.0
                + (1.0 - h_n / (2.0 * (h_n + h_1))) * h_n / (6.0 * (h_n + h_1 + h_2)))
                * (h_n * (h_n + h_1) * (h_n + h_1 + h_2))
                / (h_1 * (h_1 + h_2) * (h_1 + h_2 + h_3));
            let spread = h_1 * (h_1 + h_2) / (h_2 * (h_2 + h_3));
            vec![
                (2.0 + h_n / h_1) / 2.0 + temp1 + temp2,
                -(h_n / h_1) / 2.0 - (1.0 + h_1 / h_2) * temp1 - (1.0 + h_1 / h_2 + spread) * temp2,
                temp1 * h_1 / h_2 + (h_1 / h_2 + spread * (1.0 + h_2 / h_3)) * temp2,
                -temp2 * spread * h_1 / h_2,
            ]
        }
    }
}
