//! Noise schedules: SDXL's discrete training schedule and the sigma sequences a sampler walks.
//!
//! The training schedule is "scaled linear" betas from 0.00085 to 0.012 over 1000 steps. Sigma
//! sequences follow diffusers' `EulerDiscreteScheduler` with `timestep_spacing="linspace"`:
//! `normal` interpolates the training sigmas at evenly spaced timesteps, `karras` is Karras et al.'s
//! rho = 7 spacing and `exponential` is evenly spaced in log sigma, both between the training
//! schedule's smallest and largest sigma. Every sequence ends with 0.

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
}

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
        };
        sigmas.push(0.0);
        sigmas
    }
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
        for scheduler in [Scheduler::Normal, Scheduler::Karras, Scheduler::Exponential] {
            let sigmas = schedule.sigmas(scheduler, 10);
            assert_eq!(sigmas.len(), 11);
            assert!((sigmas[0] - schedule.sigma_max()).abs() < 1e-9);
            assert_eq!(sigmas[10], 0.0);
            assert!(sigmas.windows(2).all(|w| w[0] > w[1]), "{scheduler:?}");
        }
    }
}
