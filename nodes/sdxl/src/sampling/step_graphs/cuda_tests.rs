//! Recorded steps against steps queued from the host: a guided UNet with a ControlNet acting
//! over the first half of the schedule, on the sampler's shared device. Each replay must give
//! the host-queued step's result bit for bit, and a change in which adapters act must be
//! recorded again rather than replay the other graph.

use super::StepGraphs;
use crate::controlnet::{ControlNet, ControlNetConfig, EmbeddedHint};
use crate::gpu_fixtures::{kernel_sized_unet, randn, stores};
use crate::sampling::{
    percent_sigma, Adapters, ControlGuidance, Denoiser, DiscreteSchedule, GuidedDenoiser, Scheduler, TextConditioning,
};
use crate::unet::{ContextCache, UNet};
use candle_core::{DType, Result, Tensor};
use std::sync::Arc;
use swapgraph_model::{candle_device, Network, WeightStore};
use swapgraph_node_api::DeviceSpec;

const MODEL: &str = "recorded steps";

#[test]
fn replayed_steps_match_steps_queued_from_the_host() -> Result<()> {
    let unet_cfg = kernel_sized_unet();
    let controlnet = ControlNet::new(ControlNetConfig {
        unet: unet_cfg.clone(),
        conditioning_channels: 3,
        embedding_channels: vec![16, 16, 32, 32],
    })?;
    let unet = UNet::new(unet_cfg.clone())?;
    let gpu = candle_device(DeviceSpec::Cuda(0)).map_err(candle_core::Error::wrap)?;
    let (_, unet_store) = stores(MODEL, unet.units(), &gpu)?;
    let (_, control_store) = stores(MODEL, controlnet.units(), &gpu)?;
    let control_store: Arc<dyn WeightStore> = Arc::new(control_store);
    let on_gpu = |name: &str, shape: &[usize]| randn(MODEL, name, shape)?.to_dtype(DType::F16)?.to_device(&gpu);
    let side = |name: &str| -> Result<TextConditioning> {
        Ok(TextConditioning {
            context: on_gpu(&format!("{name} context"), &[1, 16, unet_cfg.cross_attention_dim])?,
            pooled: on_gpu(&format!("{name} pooled"), &[1, unet_cfg.pooled_text_dim])?,
            time_ids: Tensor::new(&[[256f32, 256.0, 0.0, 0.0, 256.0, 256.0]], &gpu)?,
        })
    };
    let (positive, negative) = (side("positive")?, side("negative")?);
    let hint = (randn(MODEL, "hint", &[1, 3, 256, 256])?.abs()? * 0.5)?
        .to_dtype(DType::F16)?
        .to_device(&gpu)?;
    let schedule = DiscreteSchedule::sdxl();
    // Three steps with the ControlNet acting, three without.
    let sigmas = schedule.sigmas(Scheduler::Normal, 6);
    let halfway = percent_sigma(&schedule, 0.5);
    let acting: Vec<bool> = sigmas[..6].iter().map(|&sigma| sigma >= halfway).collect();
    assert_eq!(acting, [true, true, true, false, false, false]);
    let latents = randn(MODEL, "latents", &[1, 4, 32, 32])?.to_device(&gpu)?;

    let denoised = |graphs: &StepGraphs| -> Result<Vec<Vec<f32>>> {
        let controls = [ControlGuidance {
            controlnet: &controlnet,
            store: Arc::clone(&control_store),
            hint: hint.clone(),
            strength: 0.8,
            contexts: (Some(negative.context.clone()), Some(positive.context.clone())),
            percent: (0.0, 0.5),
            region: None,
            context_cache: ContextCache::default(),
            embedded_hint: EmbeddedHint::default(),
        }];
        let mut denoiser = GuidedDenoiser {
            unet: &unet,
            store: &unet_store,
            schedule: &schedule,
            positive: &positive,
            negative: &negative,
            cfg: 5.0,
            adapters: Adapters {
                controls: &controls,
                image_tokens: None,
                split: None,
            },
            context_cache: ContextCache::default(),
            graphs,
        };
        sigmas[..6]
            .iter()
            .map(|&sigma| {
                let x = (&latents * sigma)?;
                denoiser.denoise(&x, sigma)?.flatten_all()?.to_vec1::<f32>()
            })
            .collect()
    };
    let queued = StepGraphs::queued();
    let expected = denoised(&queued)?;
    assert_eq!(queued.replayed(), 0);
    let recorded = StepGraphs::recording(&gpu);
    let replayed = denoised(&recorded)?;
    // Per activity: one step queued, one recorded and replayed, one replayed.
    assert_eq!(recorded.replayed(), 4, "steps replayed");
    for (step, (replayed, expected)) in replayed.iter().zip(&expected).enumerate() {
        let largest = replayed
            .iter()
            .zip(expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(replayed == expected, "step {step}: differs by up to {largest}");
    }
    Ok(())
}
