//! Schedules against diffusers' `EulerDiscreteScheduler` (linspace spacing), and full sampling
//! runs of the tiny UNet with classifier-free guidance against k-diffusion's samplers.

use crate::{assert_close, assert_close_to, fixture, load_cases};
use candle_core::{DType, Device, Result, Tensor};
use std::sync::Mutex;
use swapgraph_model::{ResidentStore, TensorSource, UnitSpec, UnitWeights, WeightStore};
use swapgraph_node_api::Choice;
use swapgraph_sdxl::sampling::{DiscreteSchedule, GuidedDenoiser, NoiseSource, Sampler, Scheduler, TextConditioning};
use swapgraph_sdxl::unet::{ContextCache, UNet, UNetConfig};

#[test]
fn schedules_match_diffusers() {
    let cases = load_cases("sampling_cases.safetensors");
    let schedule = DiscreteSchedule::sdxl();
    // diffusers' linspace spacing has these three; ComfyUI's own are checked in the schedule's
    // unit tests against their definitions.
    for name in ["normal", "karras", "exponential"] {
        let sigmas = schedule.sigmas(Scheduler::from_name(name).unwrap(), 10);
        let ours = Tensor::new(sigmas.iter().map(|&s| s as f32).collect::<Vec<_>>(), &Device::Cpu).unwrap();
        assert_close(
            &format!("{name} sigmas"),
            &ours,
            &cases[&format!("schedule.{name}.sigmas")],
        );
        let timesteps: Vec<f32> = sigmas[..10].iter().map(|&s| schedule.timestep(s) as f32).collect();
        let ours = Tensor::new(timesteps, &Device::Cpu).unwrap();
        assert_close(
            &format!("{name} timesteps"),
            &ours,
            &cases[&format!("schedule.{name}.timesteps")],
        );
    }
}

#[test]
fn comfyuis_schedules_match_their_definitions() {
    let cases = load_cases("comfy_sampling_cases.safetensors");
    let schedule = DiscreteSchedule::sdxl();
    for name in ["beta", "linear_quadratic", "kl_optimal"] {
        for steps in [7, 10, 30] {
            let sigmas = schedule.sigmas(Scheduler::from_name(name).unwrap(), steps);
            let ours = Tensor::new(sigmas.iter().map(|&s| s as f32).collect::<Vec<_>>(), &Device::Cpu).unwrap();
            assert_close_to(
                &format!("{name} {steps}"),
                &ours,
                &cases[&format!("schedule.{name}.{steps}")],
                1e-5,
            );
        }
    }
}

/// Replays the fixture's noise in order.
struct Replay(Vec<Tensor>);

impl NoiseSource for Replay {
    fn noise_like(&mut self, _: &Tensor) -> Result<Tensor> {
        Ok(self.0.remove(0))
    }
}

/// A store that counts how often each unit is acquired.
struct Counting<'a> {
    inner: &'a dyn WeightStore,
    acquired: Mutex<Vec<usize>>,
}

impl WeightStore for Counting<'_> {
    fn units(&self) -> &[UnitSpec] {
        self.inner.units()
    }
    fn acquire(&self, unit: usize) -> Result<UnitWeights> {
        self.acquired.lock().unwrap()[unit] += 1;
        self.inner.acquire(unit)
    }
    fn release(&self, unit: usize) {
        self.inner.release(unit);
    }
    fn device(&self) -> &Device {
        self.inner.device()
    }
    fn dtype(&self) -> DType {
        self.inner.dtype()
    }
}

#[test]
fn every_sampler_matches_k_diffusion_on_the_tiny_unet() {
    let cases = load_cases("sampling_cases.safetensors");
    let unet = UNet::new(UNetConfig::tiny()).unwrap();
    let source = TensorSource::open(&[&fixture("unet_tiny.safetensors")]).unwrap();
    let store = ResidentStore::load(unet.units().to_vec(), &source, DType::F32, &Device::Cpu).unwrap();
    let schedule = DiscreteSchedule::sdxl();
    let side = |context: &str, pooled: &str| TextConditioning {
        context: cases[context].clone(),
        pooled: cases[pooled].clone(),
        time_ids: cases["sample.time_ids"].clone(),
    };
    let positive = side("sample.positive", "sample.pooled_positive");
    let negative = side("sample.negative", "sample.pooled_negative");
    let sigmas: Vec<f64> = cases["sample.sigmas"]
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|&s| s as f64)
        .collect();
    // k-diffusion's samplers, and ComfyUI's own (its `lms` ends on the prediction where
    // k-diffusion's takes one more multistep).
    let comfy = load_cases("comfy_sampling_cases.safetensors");
    for (name, reference) in [
        ("euler", &cases["sample.euler"]),
        ("ddim", &cases["sample.euler"]),
        ("euler_ancestral", &cases["sample.euler_ancestral"]),
        ("dpmpp_2m", &cases["sample.dpmpp_2m"]),
        ("dpmpp_2m_sde", &cases["sample.dpmpp_2m_sde"]),
        ("heun", &cases["sample.heun"]),
        ("dpm_2", &cases["sample.dpm_2"]),
        ("dpm_2_ancestral", &cases["sample.dpm_2_ancestral"]),
        ("dpmpp_2s_ancestral", &cases["sample.dpmpp_2s_ancestral"]),
        ("lms", &comfy["sample.lms"]),
        ("dpmpp_3m_sde", &comfy["sample.dpmpp_3m_sde"]),
        ("ddpm", &comfy["sample.ddpm"]),
        ("lcm", &comfy["sample.lcm"]),
        ("ipndm", &comfy["sample.ipndm"]),
        ("ipndm_v", &comfy["sample.ipndm_v"]),
        ("res_multistep", &comfy["sample.res_multistep"]),
        ("euler_cfg_pp", &comfy["sample.euler_cfg_pp"]),
        ("euler_ancestral_cfg_pp", &comfy["sample.euler_ancestral_cfg_pp"]),
    ] {
        let counting = Counting {
            inner: &store,
            acquired: Mutex::new(vec![0; unet.units().len()]),
        };
        let mut denoiser = GuidedDenoiser {
            unet: &unet,
            store: &counting,
            schedule: &schedule,
            positive: &positive,
            negative: &negative,
            cfg: 5.0,
            control: None,
            image_tokens: None,
            context_cache: ContextCache::default(),
        };
        let mut noise = Replay((0..4).map(|i| cases[&format!("sample.noise.{i}")].clone()).collect());
        let start = (&cases["sample.initial"] * sigmas[0]).unwrap();
        let mut steps = Vec::new();
        let out = Sampler::from_name(name)
            .unwrap()
            .sample(&mut denoiser, start, &sigmas, &mut noise, &mut |i, n| {
                steps.push((i, n));
                Ok(())
            })
            .unwrap();
        assert_close_to(name, &out, reference, 1e-5);
        assert_eq!(steps, [(1, 4), (2, 4), (3, 4), (4, 4)]);
        // Every pass ran, and the conditioning was projected once for all of them.
        let acquired = counting.acquired.into_inner().unwrap();
        let (pass, context): (Vec<_>, Vec<_>) = unet
            .units()
            .iter()
            .zip(acquired)
            .partition(|(unit, _)| unit.group.every_pass);
        assert!(pass.iter().all(|(_, n)| *n >= 4), "{name}: a unit missed a pass");
        assert!(
            !context.is_empty() && context.iter().all(|(_, n)| *n == 1),
            "{name}: {context:?}"
        );
    }
}
