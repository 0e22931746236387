//! Schedules against diffusers' `EulerDiscreteScheduler` (linspace spacing), and full sampling
//! runs of the tiny UNet with classifier-free guidance against k-diffusion's samplers.

use crate::{assert_close, assert_close_to, fixture, load_cases};
use candle_core::{DType, Device, Result, Tensor};
use std::sync::Mutex;
use swapgraph_model::{ResidentStore, TensorSource, UnitSpec, UnitWeights, WeightStore};
use swapgraph_node_api::Choice;
use swapgraph_sdxl::sampling::{
    Adapters, ComfyUiStepNoise, DiscreteSchedule, GuidedDenoiser, NoiseSource, Sampler, Scheduler, StepGraphs,
    TextConditioning,
};
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

/// The tiny UNet, the sampling fixture's conditioning and its schedule.
struct Tiny {
    cases: std::collections::HashMap<String, Tensor>,
    unet: UNet,
    store: ResidentStore,
    schedule: DiscreteSchedule,
    positive: TextConditioning,
    negative: TextConditioning,
    sigmas: Vec<f64>,
    /// None on the CPU: every step queued as it comes.
    graphs: StepGraphs,
}

impl Tiny {
    fn new() -> Self {
        let cases = load_cases("sampling_cases.safetensors");
        let unet = UNet::new(UNetConfig::tiny()).unwrap();
        let source = TensorSource::open(&[&fixture("unet_tiny.safetensors")]).unwrap();
        let store = ResidentStore::load(unet.units().to_vec(), &source, DType::F32, &Device::Cpu).unwrap();
        let side = |context: &str, pooled: &str| TextConditioning {
            context: cases[context].clone(),
            pooled: cases[pooled].clone(),
            time_ids: cases["sample.time_ids"].clone(),
        };
        let positive = side("sample.positive", "sample.pooled_positive");
        let negative = side("sample.negative", "sample.pooled_negative");
        let sigmas = cases["sample.sigmas"]
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|&s| f64::from(s))
            .collect();
        Self {
            cases,
            unet,
            store,
            schedule: DiscreteSchedule::sdxl(),
            positive,
            negative,
            sigmas,
            graphs: StepGraphs::queued(),
        }
    }

    /// The UNet guided at 5, reading its weights from `store`.
    fn denoiser<'a>(&'a self, store: &'a dyn WeightStore) -> GuidedDenoiser<'a> {
        GuidedDenoiser {
            unet: &self.unet,
            store,
            schedule: &self.schedule,
            positive: &self.positive,
            negative: &self.negative,
            cfg: 5.0,
            adapters: Adapters::default(),
            context_cache: ContextCache::default(),
            graphs: &self.graphs,
        }
    }

    /// The fixture's starting noise at the first sigma.
    fn start(&self) -> Tensor {
        (&self.cases["sample.initial"] * self.sigmas[0]).unwrap()
    }
}

#[test]
fn every_sampler_matches_k_diffusion_on_the_tiny_unet() {
    let tiny = Tiny::new();
    let Tiny {
        cases,
        unet,
        store,
        sigmas,
        ..
    } = &tiny;
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
        ("deis", &comfy["sample.deis"]),
        ("uni_pc", &comfy["sample.uni_pc"]),
        ("uni_pc_bh2", &comfy["sample.uni_pc_bh2"]),
        ("res_multistep", &comfy["sample.res_multistep"]),
        ("euler_cfg_pp", &comfy["sample.euler_cfg_pp"]),
        ("euler_ancestral_cfg_pp", &comfy["sample.euler_ancestral_cfg_pp"]),
    ] {
        let counting = Counting {
            inner: store,
            acquired: Mutex::new(vec![0; unet.units().len()]),
        };
        let mut denoiser = tiny.denoiser(&counting);
        let mut noise = Replay((0..4).map(|i| cases[&format!("sample.noise.{i}")].clone()).collect());
        let start = tiny.start();
        let mut steps = Vec::new();
        let out = Sampler::from_name(name)
            .unwrap()
            .sample(&mut denoiser, start, sigmas, &mut noise, &mut |i, n| {
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

/// The seed of the fixture's runs with the samplers' own noise (stored as two 32-bit halves,
/// read as stored: f32 would round them).
fn fixture_seed() -> u64 {
    let cases = candle_core::safetensors::load(fixture("comfy_sampling_cases.safetensors"), &Device::Cpu).unwrap();
    let halves = cases["seeded.seed"].to_vec1::<i64>().unwrap();
    ((halves[0] as u64) << 32) | halves[1] as u64
}

#[test]
fn the_brownian_tree_gives_torchsdes_noise_for_a_seed() {
    let tiny = Tiny::new();
    let comfy = load_cases("comfy_sampling_cases.safetensors");
    let mut noise = ComfyUiStepNoise::new(fixture_seed());
    let like = &tiny.cases["sample.initial"];
    let sigmas = &tiny.sigmas;
    // Out of order on purpose: the tree gives an interval the same noise whenever it is asked.
    for i in [2, 0, 1] {
        let ours = noise.brownian(like, sigmas, sigmas[i], sigmas[i + 1]).unwrap();
        assert_close_to(&format!("step {i}"), &ours, &comfy[&format!("brownian.{i}")], 1e-5);
    }
    let midpoint = f64::from((sigmas[1] as f32 * sigmas[2] as f32).sqrt());
    let ours = noise.brownian(like, sigmas, sigmas[1], midpoint).unwrap();
    assert_close_to("midpoint", &ours, &comfy["brownian.midpoint"], 1e-5);
}

#[test]
fn samplers_drawing_their_own_noise_for_a_seed_match_comfyui() {
    let tiny = Tiny::new();
    let comfy = load_cases("comfy_sampling_cases.safetensors");
    for name in ["euler_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde"] {
        let mut denoiser = tiny.denoiser(&tiny.store);
        let mut noise = ComfyUiStepNoise::new(fixture_seed());
        let out = Sampler::from_name(name)
            .unwrap()
            .sample(
                &mut denoiser,
                tiny.start(),
                &tiny.sigmas,
                &mut noise,
                &mut |_, _| Ok(()),
            )
            .unwrap();
        assert_close_to(name, &out, &comfy[&format!("seeded.{name}")], 1e-5);
    }
}
