//! Sampling: noise schedules, seeded noise, the guided UNet denoiser and the samplers.

mod adapters;
mod beta_quantile;
mod brownian_tree;
mod denoiser;
mod inpainting;
mod noise;
mod preview;
mod regional;
mod samplers;
mod schedule;
mod seed_sequence;
pub mod step_graphs;
mod step_split;
mod torch_noise;

pub use adapters::{fit_hint, percent_sigma, summed_residuals, Adapters, ControlGuidance, ImageTokenGuidance};
pub use denoiser::{GuidedDenoiser, TextConditioning};
pub use inpainting::{latent_mask, MaskedDenoiser};
pub use noise::SeededNoise;
pub use preview::{latent_preview, Watched};
pub use regional::{regions, Region, RegionAdapters, RegionalDenoiser};
pub use samplers::{Denoiser, NoiseSource, Sampler};
pub use schedule::{DiscreteSchedule, Scheduler, TRAINING_STEPS};
pub use step_graphs::StepGraphs;
pub use step_split::{StepPart, StepShares, StepSplit};
pub use torch_noise::{ComfyUiStepNoise, SeedNoise, TorchNoise};
