//! What KSampler and KSamplerAdvanced are asked to do, with ComfyUI's params, turned into one
//! plan: the seed and its noise, the guidance, the sampler and the noise levels to walk.

use crate::sampling::{DiscreteSchedule, Sampler, Scheduler, SeedNoise};
use swapgraph_node_api::{Args, Choice, NodeError, Params};

/// KSampler's params, as ComfyUI names them.
#[derive(Params)]
pub struct KSamplerParams {
    /// Seeds the noise: a seed gives the same starting noise on every machine and device.
    #[param(default = 0)]
    seed: u64,
    /// Sampling steps.
    #[param(default = 20, min = 1, max = 10_000)]
    steps: usize,
    /// Classifier-free guidance scale; 1 skips the negative prompt.
    #[param(default = 8.0, min = 0.0, max = 100.0)]
    cfg: f64,
    /// The sampling algorithm.
    #[param(default = Sampler::Euler)]
    sampler_name: Sampler,
    /// How steps are spread over noise levels.
    #[param(default = Scheduler::Normal)]
    scheduler: Scheduler,
    /// How much of the schedule to run; below 1 keeps part of the input latents (img2img).
    #[param(default = 1.0, min = 0.0, max = 1.0)]
    denoise: f64,
    /// How a seed becomes noise: comfyui (PyTorch's CPU generator, as ComfyUI draws it, so a seed gives the noise it gives there) or chacha8. Last, after ComfyUI's own params, which keep their order.
    #[param(default = SeedNoise::ComfyUi)]
    noise_source: SeedNoise,
}

/// ComfyUI's on/off switches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Choice)]
pub enum Switch {
    /// On.
    Enable,
    /// Off.
    Disable,
}

/// KSamplerAdvanced's params, as ComfyUI names them.
#[derive(Params)]
pub struct AdvancedParams {
    /// Whether noise is added to the input latents first (disable to go on from latents that
    /// still hold their noise, e.g. after a first KSamplerAdvanced).
    #[param(default = Switch::Enable)]
    add_noise: Switch,
    /// Seeds the noise.
    #[param(default = 0)]
    noise_seed: u64,
    /// Steps of the whole schedule.
    #[param(default = 20, min = 1, max = 10_000)]
    steps: usize,
    /// Classifier-free guidance scale; 1 skips the negative prompt.
    #[param(default = 8.0, min = 0.0, max = 100.0)]
    cfg: f64,
    /// The sampling algorithm.
    #[param(default = Sampler::Euler)]
    sampler_name: Sampler,
    /// How steps are spread over noise levels.
    #[param(default = Scheduler::Normal)]
    scheduler: Scheduler,
    /// The step of the schedule to start at.
    #[param(default = 0, max = 10_000)]
    start_at_step: usize,
    /// The step to end at (past the last: the whole schedule).
    #[param(default = 10_000, max = 10_000)]
    end_at_step: usize,
    /// Whether latents that end before the schedule does keep their noise (enable, for a later
    /// KSamplerAdvanced to go on from) or are denoised fully at the end (disable).
    #[param(default = Switch::Disable)]
    return_with_leftover_noise: Switch,
    /// How a seed becomes noise: comfyui or chacha8.
    #[param(default = SeedNoise::ComfyUi)]
    noise_source: SeedNoise,
}

/// One sampling run as the params ask for it.
pub struct SamplingPlan {
    /// The seed.
    pub seed: u64,
    /// How it becomes noise.
    pub noise_source: SeedNoise,
    /// Whether noise is added to the input latents.
    pub add_noise: bool,
    /// Guidance scale.
    pub cfg: f64,
    /// The sampler.
    pub sampler: Sampler,
    /// The noise levels walked, from the first to the last.
    pub sigmas: Vec<f64>,
}

impl SamplingPlan {
    /// The plan of a KSampler (`advanced` false) or a KSamplerAdvanced.
    ///
    /// # Errors
    /// Params out of range, or a run with nothing to sample.
    pub fn from_args(args: &Args, advanced: bool, schedule: &DiscreteSchedule) -> Result<Self, NodeError> {
        if !advanced {
            let params = KSamplerParams::from_args(args)?;
            return Ok(Self {
                seed: params.seed,
                noise_source: params.noise_source,
                add_noise: true,
                cfg: params.cfg,
                sampler: params.sampler_name,
                sigmas: denoise_sigmas(schedule, params.scheduler, params.steps, params.denoise)?,
            });
        }
        let params = AdvancedParams::from_args(args)?;
        let mut sigmas = schedule.sigmas(params.scheduler, params.steps);
        // As ComfyUI: cut at the end step (to zero unless the noise is to be kept), then start.
        if params.end_at_step < params.steps {
            sigmas.truncate(params.end_at_step + 1);
            if params.return_with_leftover_noise == Switch::Disable {
                *sigmas.last_mut().expect("a schedule has a sigma") = 0.0;
            }
        }
        if params.start_at_step >= sigmas.len() - 1 {
            return Err(NodeError::msg(format!(
                "start_at_step {} is at or past the end ({} steps to run): nothing to sample",
                params.start_at_step,
                sigmas.len() - 1
            )));
        }
        Ok(Self {
            seed: params.noise_seed,
            noise_source: params.noise_source,
            add_noise: params.add_noise == Switch::Enable,
            cfg: params.cfg,
            sampler: params.sampler_name,
            sigmas: sigmas.split_off(params.start_at_step),
        })
    }

    /// Steps the plan runs.
    pub fn steps(&self) -> usize {
        self.sigmas.len() - 1
    }
}

/// The last `steps` noise levels of a longer schedule for `denoise` below 1 (img2img).
fn denoise_sigmas(
    schedule: &DiscreteSchedule,
    scheduler: Scheduler,
    steps: usize,
    denoise: f64,
) -> Result<Vec<f64>, NodeError> {
    if denoise <= 0.0 {
        return Err(NodeError::msg(
            "denoise 0 leaves nothing to sample; use a value above 0",
        ));
    }
    if denoise >= 1.0 {
        return Ok(schedule.sigmas(scheduler, steps));
    }
    let total = (steps as f64 / denoise) as usize;
    let all = schedule.sigmas(scheduler, total);
    // `beta` may give fewer levels than asked for (it merges repeats): then all of them.
    Ok(all[all.len().saturating_sub(steps + 1)..].to_vec())
}
