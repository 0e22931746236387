//! Noise schedules: SDXL's discrete training schedule and the sigma sequences a sampler walks.
//!
//! The training schedule is "scaled linear" betas from 0.00085 to 0.012 over 1000 steps. Sigma
//! sequences follow diffusers' `EulerDiscreteScheduler` with `timestep_spacing="linspace"`:
//! `normal` interpolates the training sigmas at evenly spaced timesteps, `karras` is Karras et al.'s
//! rho = 7 spacing and `exponential` is evenly spaced in log sigma, both between the training
//! schedule's smallest and largest sigma. Every sequence ends with 0.

use super::beta_quantile::beta_quantile;

/// Timesteps of the training schedule.
pub const TRAINING_STEPS: usize = 1000;

/// How sampling steps are spread over the noise levels, named in workflows as in ComfyUI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, swapgraph_node_api::Choice)]
pub enum Scheduler {
    /// Evenly spaced timesteps.
    Normal,
    /// Karras et al. (2022), rho = 7: more steps at low noise.
    Karras,
    /// Evenly spaced in log sigma.
    Exponential,
    /// ComfyUI's `simple`: every (1000 / steps)th training sigma from the top, as they are.
    Simple,
    /// ComfyUI's `sgm_uniform`: `steps + 1` evenly spaced timesteps from 999 to 0 without the
    /// last, each sigma interpolated in log sigma (for distilled few-step models).
    #[choice(name = "sgm_uniform")]
    SgmUniform,
    /// ComfyUI's `ddim_uniform`: every (1000 / steps)th training sigma from timestep 1 up,
    /// highest first.
    #[choice(name = "ddim_uniform")]
    DdimUniform,
    /// ComfyUI's `beta`: training sigmas at the quantiles of Beta(0.6, 0.6), more steps at both
    /// ends; a timestep picked twice in a row is taken once, so there may be fewer steps.
    Beta,
    /// ComfyUI's `linear_quadratic`: noise falls linearly by 2.5% of the largest sigma over the
    /// first half of the steps, then quadratically to zero.
    #[choice(name = "linear_quadratic")]
    LinearQuadratic,
    /// ComfyUI's `kl_optimal`: evenly spaced in arctan(sigma) between the largest and smallest
    /// sigma.
    #[choice(name = "kl_optimal")]
    KlOptimal,
}

/// The shape parameters of ComfyUI's `beta` scheduler.
const BETA_SHAPE: (f64, f64) = (0.6, 0.6);

/// The fraction of the largest sigma `linear_quadratic` removes in its linear part.
const LINEAR_QUADRATIC_THRESHOLD: f64 = 0.025;

/// SDXL's discrete noise schedule: the sigma of each training timestep.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscreteSchedule {
    sigmas: Vec<f64>,
}

impl Default for DiscreteSchedule {
    fn default() -> Self {
        Self::sdxl()
    }
}

impl DiscreteSchedule {
    /// Scaled-linear betas 0.00085..0.012 over 1000 timesteps.
    pub fn sdxl() -> Self {
        let (start, end) = (0.00085f64.sqrt(), 0.012f64.sqrt());
        let mut alpha_cumprod = 1.0;
        let sigmas = (0..TRAINING_STEPS)
            .map(|i| {
                let beta = (start + (end - start) * i as f64 / (TRAINING_STEPS - 1) as f64).powi(2);
                alpha_cumprod *= 1.0 - beta;
                ((1.0 - alpha_cumprod) / alpha_cumprod).sqrt()
            })
            .collect();
        Self { sigmas }
    }

    /// The smallest sigma (timestep 0).
    pub fn sigma_min(&self) -> f64 {
        self.sigmas[0]
    }

    /// The largest sigma (timestep 999).
    pub fn sigma_max(&self) -> f64 {
        self.sigmas[TRAINING_STEPS - 1]
    }

    /// The sigma at a fractional timestep, interpolated linearly.
    pub fn sigma_at(&self, t: f64) -> f64 {
        let t = t.clamp(0.0, (TRAINING_STEPS - 1) as f64);
        let low = t.floor() as usize;
        let high = (low + 1).min(TRAINING_STEPS - 1);
        let w = t - low as f64;
        self.sigmas[low] * (1.0 - w) + self.sigmas[high] * w
    }

    /// The sigma at a fractional timestep, interpolated linearly in log sigma (ComfyUI's
    /// `ModelSamplingDiscrete.sigma`).
    fn sigma_in_log_at(&self, t: f64) -> f64 {
        let t = t.clamp(0.0, (TRAINING_STEPS - 1) as f64);
        let (low, high) = (t.floor() as usize, t.ceil() as usize);
        let w = t - low as f64;
        ((1.0 - w) * self.sigmas[low].ln() + w * self.sigmas[high].ln()).exp()
    }

    /// The fractional timestep of `sigma`, interpolating linearly in log sigma (diffusers'
    /// `_sigma_to_t`): the value the UNet's timestep embedding receives.
    pub fn timestep(&self, sigma: f64) -> f64 {
        let log_sigma = sigma.max(1e-10).ln();
        let log_sigmas: Vec<f64> = self.sigmas.iter().map(|s| s.ln()).collect();
        let low = log_sigmas
            .iter()
            .rposition(|&l| log_sigma - l >= 0.0)
            .unwrap_or(0)
            .min(TRAINING_STEPS - 2);
        let (l, h) = (log_sigmas[low], log_sigmas[low + 1]);
        let w = ((l - log_sigma) / (l - h)).clamp(0.0, 1.0);
        (1.0 - w) * low as f64 + w * (low + 1) as f64
    }

    /// `steps` sigmas from high to low noise, then 0.
    pub fn sigmas(&self, scheduler: Scheduler, steps: usize) -> Vec<f64> {
        let steps = steps.max(1);
        let ramp = |i: usize| if steps == 1 { 0.0 } else { i as f64 / (steps - 1) as f64 };
        let (min, max) = (self.sigma_min(), self.sigma_max());
        let mut sigmas: Vec<f64> = match scheduler {
            Scheduler::Normal => (0..steps)
                .map(|i| self.sigma_at((TRAINING_STEPS - 1) as f64 * (1.0 - ramp(i))))
                .collect(),
            Scheduler::Karras => {
                let rho = 7.0;
                let (min_inv, max_inv) = (min.powf(1.0 / rho), max.powf(1.0 / rho));
                (0..steps)
                    .map(|i| (max_inv + ramp(i) * (min_inv - max_inv)).powf(rho))
                    .collect()
            }
            Scheduler::Exponential => (0..steps)
                .map(|i| (max.ln() + ramp(i) * (min.ln() - max.ln())).exp())
                .collect(),
            Scheduler::Simple => {
                let stride = TRAINING_STEPS as f64 / steps as f64;
                (0..steps)
                    .map(|i| self.sigmas[TRAINING_STEPS - 1 - (i as f64 * stride) as usize])
                    .collect()
            }
            Scheduler::SgmUniform => {
                let last = (TRAINING_STEPS - 1) as f64;
                (0..steps)
                    .map(|i| self.sigma_in_log_at(last * (1.0 - i as f64 / steps as f64)))
                    .collect()
            }
            Scheduler::DdimUniform => {
                let stride = (TRAINING_STEPS / steps).max(1);
                (1..TRAINING_STEPS)
                    .step_by(stride)
                    .rev()
                    .map(|t| self.sigmas[t])
                    .collect()
            }
            Scheduler::Beta => {
                let last = (TRAINING_STEPS - 1) as f64;
                let mut picked: Vec<usize> = (0..steps)
                    .map(|i| {
                        let p = 1.0 - i as f64 / steps as f64;
                        (beta_quantile(p, BETA_SHAPE.0, BETA_SHAPE.1) * last).round_ties_even() as usize
                    })
                    .collect();
                picked.dedup();
                picked.into_iter().map(|t| self.sigmas[t]).collect()
            }
            Scheduler::LinearQuadratic => linear_quadratic(steps).into_iter().map(|s| s * max).collect(),
            Scheduler::KlOptimal => (0..steps)
                .map(|i| (ramp(i) * min.atan() + (1.0 - ramp(i)) * max.atan()).tan())
                .collect(),
        };
        sigmas.push(0.0);
        sigmas
    }
}

/// `linear_quadratic`'s levels as fractions of the largest sigma, without the final zero.
fn linear_quadratic(steps: usize) -> Vec<f64> {
    if steps == 1 {
        return vec![1.0];
    }
    let threshold = LINEAR_QUADRATIC_THRESHOLD;
    let linear_steps = steps / 2;
    let (linear, quadratic_steps) = (linear_steps as f64, (steps - linear_steps) as f64);
    let step_diff = linear - threshold * steps as f64;
    let quadratic_coef = step_diff / (linear * quadratic_steps * quadratic_steps);
    let linear_coef = threshold / linear - 2.0 * step_diff / (quadratic_steps * quadratic_steps);
    let constant = quadratic_coef * linear * linear;
    (0..steps)
        .map(|i| {
            let i = i as f64;
            let fallen = if i < linear {
                i * threshold / linear
            } else {
                quadratic_coef * i * i + linear_coef * i + constant
            };
            1.0 - fallen
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_schedule_spans_sdxl_noise_levels() {
        let schedule = DiscreteSchedule::sdxl();
        assert!((schedule.sigma_min() - 0.0292).abs() < 1e-3, "{}", schedule.sigma_min());
        assert!(
            (schedule.sigma_max() - 14.6146).abs() < 1e-3,
            "{}",
            schedule.sigma_max()
        );
        for t in [0.0, 17.25, 500.0, 998.5] {
            assert!((schedule.timestep(schedule.sigma_at(t)) - t).abs() < 0.05, "{t}");
        }
    }

    #[test]
    fn sequences_fall_from_sigma_max_to_zero() {
        let schedule = DiscreteSchedule::sdxl();
        for scheduler in [
            Scheduler::Normal,
            Scheduler::Karras,
            Scheduler::Exponential,
            Scheduler::Simple,
            Scheduler::SgmUniform,
        ] {
            let sigmas = schedule.sigmas(scheduler, 10);
            assert_eq!(sigmas.len(), 11);
            assert!((sigmas[0] - schedule.sigma_max()).abs() < 1e-9);
            assert_eq!(sigmas[10], 0.0);
            assert!(sigmas.windows(2).all(|w| w[0] > w[1]), "{scheduler:?}");
        }
    }

    /// ComfyUI's definitions: `simple` takes training sigmas 999, 999 - 1000/steps, ... (the
    /// offset truncated); `ddim_uniform` timesteps 1, 1 + 1000 // steps, ... highest first;
    /// `sgm_uniform` drops the last of `steps + 1` evenly spaced timesteps, in log sigma.
    #[test]
    fn comfyuis_own_schedulers_pick_the_training_sigmas_they_name() {
        let schedule = DiscreteSchedule::sdxl();
        let at = |t: usize| schedule.sigmas[t];
        let simple = schedule.sigmas(Scheduler::Simple, 30);
        let picked: Vec<f64> = [999, 966, 933, 899].into_iter().map(at).collect();
        assert_eq!(&simple[..4], picked.as_slice(), "1000 / 30 = 33.3: 999, 966, 933, 899");
        assert_eq!((simple.len(), simple[29], simple[30]), (31, at(999 - 966), 0.0));
        let ddim = schedule.sigmas(Scheduler::DdimUniform, 10);
        let expected: Vec<f64> = (0..10).rev().map(|i| at(1 + 100 * i)).chain([0.0]).collect();
        assert_eq!(ddim, expected);
        let sgm = schedule.sigmas(Scheduler::SgmUniform, 4);
        assert_eq!(sgm.len(), 5);
        assert!(
            (sgm[2] - at(499).sqrt() * at(500).sqrt()).abs() < 1e-12,
            "timestep 499.5, halfway in log sigma"
        );
        assert!(
            (sgm[3] - (0.25 * at(249).ln() + 0.75 * at(250).ln()).exp()).abs() < 1e-12,
            "timestep 249.75"
        );
    }
}
