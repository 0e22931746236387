//! `KSampler`: denoises latents with the SDXL UNet, a sampler and a schedule.

use super::adapters;
use super::out_of_memory::UNetOnDevice;
use super::sampler_room::{sampler_need, sampler_rooms};
use super::sampling_params::{AdvancedParams, KSamplerParams, SamplingPlan};
use super::sampling_times::{SamplingTimes, StepClock};
use super::tensor_error;
use crate::conditioning::{Conditioning, ConditioningList, SizeIds};
use crate::device::{candle_device, model_dtype};
use crate::sampling::{
    latent_mask, latent_preview, regions, Adapters, Denoiser, DiscreteSchedule, GuidedDenoiser, MaskedDenoiser,
    RegionalDenoiser, StepGraphs, StepSplit, TextConditioning, Watched,
};
use crate::unet::{ContextCache, UNet};
use candle_core::{DType, Device};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use swapgraph_model::{device_memory, reset_peak_memory, Latent, ModelHandle};
use swapgraph_node_api::{Args, Handle, NodeDescriptor, NodeError, NodeType, Rehearsal, RunContext, SocketType, Value};

/// `result` with the time since `started` once `device` has done the work queued for it.
fn timed<T>(device: &Device, started: Instant, result: T) -> Result<(T, Duration), NodeError> {
    device.synchronize().map_err(tensor_error)?;
    Ok((result, started.elapsed()))
}

/// Samples latents from noise (or partly noised latents, for `denoise` below 1).
pub struct KSampler {
    descriptor: NodeDescriptor,
    /// KSamplerAdvanced: part of a schedule, with or without added noise.
    advanced: bool,
}

impl KSampler {
    /// The node type.
    pub fn new() -> Self {
        Self::with(
            NodeDescriptor::new(
                "KSampler",
                "sampling",
                "Denoises latents with the model, guided by the positive and negative conditioning.",
            ),
            false,
        )
    }

    /// `KSamplerAdvanced`: a part of the schedule, with or without added noise, e.g. a base
    /// model's first steps and a refiner's last ones.
    pub fn advanced() -> Self {
        Self::with(
            NodeDescriptor::new(
                "KSamplerAdvanced",
                "sampling",
                "Denoises latents over part of the schedule (start_at_step to end_at_step), with or without adding \
                 noise first, and with the noise left in or denoised fully at the end.",
            ),
            true,
        )
    }

    fn with(descriptor: NodeDescriptor, advanced: bool) -> Self {
        let descriptor = descriptor
            .uses_device()
            .input(
                "model",
                SocketType::MODEL,
                "The diffusion model (possibly through BlockSwap).",
            )
            .input("positive", SocketType::CONDITIONING, "What the image should show.")
            .input("negative", SocketType::CONDITIONING, "What it should not show.")
            .input(
                "latent_image",
                SocketType::LATENT,
                "Empty latents, or encoded images for img2img.",
            );
        let descriptor = match advanced {
            true => descriptor.params::<AdvancedParams>(),
            false => descriptor.params::<KSamplerParams>(),
        }
        .output(SocketType::LATENT, "The denoised latents.");
        Self { descriptor, advanced }
    }
}

impl NodeType for KSampler {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let schedule = DiscreteSchedule::sdxl();
        let plan = SamplingPlan::from_args(args, self.advanced, &schedule)?;
        let model = args.handle::<ModelHandle>("model")?;
        let unet = sdxl_unet(&model)?;
        let device = candle_device(ctx.device)?;
        let latent = args.handle::<Latent>("latent_image")?;
        let (_, _, h, w) = latent.samples.dims4().map_err(tensor_error)?;
        let on_device = UNetOnDevice {
            model: &model,
            unet,
            device: &device,
            dtype: model_dtype(&device),
            latent: (h, w),
        };
        let (positive_list, negative_list) = (
            args.handle::<ConditioningList>("positive")?,
            args.handle::<ConditioningList>("negative")?,
        );
        let single = single_pair(&positive_list, &negative_list);
        let companion = model.companion_placement.as_ref();
        let controlnets = match single {
            Some((positive, negative)) => adapters::placed_controlnets(positive, negative, companion)?,
            None => adapters::listed_controlnets(&positive_list, &negative_list, companion),
        };
        let rooms = sampler_rooms(&on_device, &controlnets, ctx.vram_budget);
        // Times are taken with the device synchronised, so queued work counts where it ran. The
        // UNet's and the ControlNet's weights are read one after the other: side by side they
        // contend for the same cores and page-locked allocations and took longer (3.3 s against
        // 2.3 s on an H100).
        let started = Instant::now();
        let (store, unet_weights) = timed(
            &device,
            started,
            model.store(&device, model_dtype(&device), &rooms.unet),
        )?;
        let store = store.map_err(|e| on_device.explain(e.to_string(), "while loading the UNet's weights", false))?;
        let controls = match single {
            Some((positive, negative)) => adapters::control_guidance(
                positive,
                negative,
                companion,
                (&device, model_dtype(&device)),
                &rooms.controlnets,
            )?,
            None => Vec::new(),
        };
        // Lists of conditionings share one store per ControlNet model among their regions.
        let listed_stores = match single {
            Some(_) => Vec::new(),
            None => controlnets
                .iter()
                .zip(&rooms.controlnets)
                .map(|(controlnet, room)| {
                    let store = controlnet
                        .store(&device, model_dtype(&device), room)
                        .map_err(|e| NodeError::msg(e.to_string()))?;
                    Ok((controlnet, store))
                })
                .collect::<Result<Vec<_>, NodeError>>()?,
        };
        let (_, control_ready) = timed(&device, started, ())?;
        let image_size = SizeIds::square((w * 8) as f64, (h * 8) as f64);
        let text = |c: &Conditioning| -> Result<TextConditioning, String> {
            let ids = c
                .size
                .unwrap_or(image_size)
                .tensor(&device)
                .map_err(|e| e.to_string())?;
            Ok(TextConditioning {
                context: c.context.clone(),
                pooled: c.pooled.clone(),
                time_ids: ids,
            })
        };
        let texts = single
            .map(|(positive, negative)| Ok::<_, String>((text(positive)?, text(negative)?)))
            .transpose()
            .map_err(NodeError::msg)?;
        let image_tokens = match single {
            Some((positive, negative)) => adapters::image_token_guidance(positive, negative)?,
            None => None,
        };
        let controlnet_weights = (!controlnets.is_empty()).then(|| control_ready - unet_weights);
        let clock = RefCell::new(StepClock::new(SamplingTimes {
            unet_weights,
            controlnet_weights,
            ..SamplingTimes::default()
        }));

        let sigmas = &plan.sigmas;
        let (start_noise, mut noise) = plan
            .noise_source
            .draw(plan.seed, latent.samples.dims(), latent.batch_index.as_deref(), &device)
            .map_err(tensor_error)?;
        let latents = latent.samples.to_dtype(DType::F32).map_err(tensor_error)?;
        // Without added noise the mask's noised input is the input itself, as in ComfyUI.
        let start_noise = match plan.add_noise {
            true => start_noise,
            false => start_noise.zeros_like().map_err(tensor_error)?,
        };
        let start = (&latents + (&start_noise * sigmas[0]).map_err(tensor_error)?).map_err(tensor_error)?;

        // Steps are recorded as CUDA graphs, when asked for, where no store moves weights during a step.
        let graphs = StepGraphs::new(
            &device,
            store.replayable() && controls.iter().all(|control| control.store.replayable()),
        );
        // The ControlNets' and the UNet's device time in each step, for the log; not in recorded
        // steps, whose marks could not be read after them.
        let split = StepSplit::new(&device, !graphs.records());
        let mut denoiser: Box<dyn Denoiser + '_> = match &texts {
            Some((positive, negative)) => Box::new(GuidedDenoiser {
                unet,
                store: store.as_ref(),
                schedule: &schedule,
                positive,
                negative,
                cfg: plan.cfg,
                adapters: Adapters {
                    controls: &controls,
                    image_tokens: image_tokens.as_ref(),
                    split: Some(&split),
                },
                context_cache: ContextCache::default(),
                graphs: &graphs,
            }),
            None => {
                let (positive, negative) = regions(
                    (&positive_list.0, &negative_list.0),
                    text,
                    |conditioning, text| {
                        adapters::region_adapters(conditioning, text, &listed_stores, &device)
                            .map_err(|e| e.to_string())
                    },
                    latents.dims4().map_err(tensor_error)?,
                    &schedule,
                    &device,
                )
                .map_err(|e| NodeError::msg(format!("{}: {e}", ctx.node_id)))?;
                Box::new(RegionalDenoiser {
                    unet,
                    store: store.as_ref(),
                    schedule: &schedule,
                    positive,
                    negative,
                    cfg: plan.cfg,
                    split: Some(&split),
                })
            }
        };
        let cancelled = Cell::new(false);
        let done = Cell::new(0);
        let latest = Rc::new(RefCell::new(None));
        let watching = ctx.reporter.wants_previews();
        let mut after_step = |step: usize, total: usize| -> candle_core::Result<()> {
            if StepClock::marks(step, total) {
                device.synchronize()?;
                clock.borrow_mut().step_done(step, total);
            }
            if step == 1 {
                split.first_step_done();
            }
            done.set(step);
            if let Some(denoised) = latest.borrow_mut().take().filter(|_| watching) {
                ctx.reporter.preview(latent_preview(&denoised)?);
            }
            ctx.progress(step as u64, total as u64);
            if let Some(report) = store.memory_now() {
                ctx.reporter.memory(report);
            }
            if ctx.cancel.is_cancelled() {
                cancelled.set(true);
                candle_core::bail!("cancelled");
            }
            Ok(())
        };
        reset_peak_memory(&device);
        let mut denoiser = Watched {
            inner: denoiser.as_mut(),
            latest: Rc::clone(&latest),
        };
        let sampled = match &latent.noise_mask {
            None => plan
                .sampler
                .sample(&mut denoiser, start, sigmas, noise.as_mut(), &mut after_step),
            Some(mask) => {
                // Fitted to the latents on the host, where masks are made, then moved.
                let host_mask = mask.to_device(&candle_core::Device::Cpu).map_err(tensor_error)?;
                let mask = latent_mask(&host_mask, latents.dims())
                    .and_then(|mask| mask.to_device(&device))
                    .map_err(|e| NodeError::msg(format!("latent_image: {e}")))?;
                let mut masked = MaskedDenoiser {
                    inner: &mut denoiser,
                    mask,
                    latents,
                    noise: start_noise,
                };
                plan.sampler
                    .sample(&mut masked, start, sigmas, noise.as_mut(), &mut after_step)
            }
        };
        let samples = match sampled {
            Ok(samples) => samples,
            Err(_) if cancelled.get() => return Err(NodeError::Cancelled),
            Err(e) => {
                let stage = format!("in step {} of {}", done.get() + 1, plan.steps());
                return Err(on_device.explain(e.to_string(), &stage, true));
            }
        };
        clock.borrow_mut().replayed(graphs.replayed());
        let later_steps = clock.borrow().times().later_steps.1;
        match split.shares(later_steps) {
            Ok(shares) => clock.borrow_mut().split(shares),
            Err(e) => tracing::warn!("{}: the steps' time by part could not be read: {e}", ctx.node_id),
        }
        tracing::info!("{}: {}", ctx.node_id, clock.borrow().times());
        if let Some(memory) = device_memory(&device) {
            tracing::info!(
                "{}: sampling peaked at {} MiB allocated on the device",
                ctx.node_id,
                memory.peak_allocated >> 20
            );
        }
        if let Some(report) = store.report() {
            ctx.reporter.memory(report);
        }
        let control_stores: Vec<_> = match single {
            Some(_) => controls.iter().map(|control| &control.store).collect(),
            None => listed_stores.iter().map(|(_, store)| store).collect(),
        };
        for (number, store) in control_stores.iter().enumerate() {
            if let Some(mut report) = store.report() {
                report.title = match control_stores.len() {
                    1 => format!("{} (ControlNet)", report.title),
                    _ => format!(
                        "{} (ControlNet {} of {})",
                        report.title,
                        number + 1,
                        control_stores.len()
                    ),
                };
                ctx.reporter.memory(report);
            }
        }
        Ok(vec![Value::Handle(Handle::new(
            SocketType::LATENT,
            Arc::new(Latent {
                samples,
                ..(*latent).clone()
            }),
        ))])
    }

    /// Stands in with the input latents (the output has their shape) and says what sampling
    /// needs: the UNet and the ControlNets the conditionings carry, as placed, beside a step's
    /// activations at this size.
    fn rehearse(&self, args: &Args, ctx: &RunContext) -> Result<Rehearsal, NodeError> {
        // Params that leave nothing to sample are refused before any work.
        SamplingPlan::from_args(args, self.advanced, &DiscreteSchedule::sdxl())?;
        let model = args.handle::<ModelHandle>("model")?;
        let device = candle_device(ctx.device)?;
        let latent = args.handle::<Latent>("latent_image")?;
        let (_, _, h, w) = latent.samples.dims4().map_err(tensor_error)?;
        let on_device = UNetOnDevice {
            model: &model,
            unet: sdxl_unet(&model)?,
            device: &device,
            dtype: model_dtype(&device),
            latent: (h, w),
        };
        let (positive, negative) = (
            args.handle::<ConditioningList>("positive")?,
            args.handle::<ConditioningList>("negative")?,
        );
        let companion = model.companion_placement.as_ref();
        let controlnets = match single_pair(&positive, &negative) {
            Some((positive, negative)) => adapters::placed_controlnets(positive, negative, companion)?,
            None => adapters::listed_controlnets(&positive, &negative, companion),
        };
        Ok(Rehearsal::StoodIn {
            outputs: vec![args.value("latent_image")?.clone()],
            need: sampler_need(&on_device, &controlnets),
        })
    }
}

/// The one conditioning of each side, when each applies everywhere and always (sampled in one
/// batched pass, adapters and all); `None` for lists of placed conditionings, which are
/// sampled region by region, each with its own adapters.
fn single_pair<'a>(
    positive: &'a ConditioningList,
    negative: &'a ConditioningList,
) -> Option<(&'a Conditioning, &'a Conditioning)> {
    positive.single().zip(negative.single())
}

/// The UNet of `model`, which KSampler runs.
fn sdxl_unet(model: &ModelHandle) -> Result<&UNet, NodeError> {
    model.network.as_any().downcast_ref::<UNet>().ok_or_else(|| {
        NodeError::msg(format!(
            "KSampler runs SDXL UNets; model \"{}\" is a {}",
            model.name,
            model.network.kind()
        ))
    })
}
