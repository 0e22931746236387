//! SDXL-size UNet steps on a device, resident or through BlockSwap, with seeded random weights:
//! the figures BlockSwap's promises are measured by.
//!
//! `cargo bench --bench unet_step [--features cuda] -- --device cuda:0 --latent 128 --steps 10
//! --configs none,blocks:3/p1,blocks:3/sync,budget:4096/p2/debug`
//!
//! Each configuration is a swap choice (`none`, `blocks:N`, `budget:MB`) with optional modifiers:
//! `pN` prefetch N units, `sync` synchronous copies (`non_blocking: false`), `block` block
//! granularity, `debug` per-unit timing (adds event overhead). The random weights are made once
//! for all configurations. One JSON line per configuration: median and minimum ms per step,
//! bytes streamed per step, the achieved host-to-device rate, the memory pool's peak during the
//! steps (CUDA) and, with `debug`, the compute stream's wait for copies per step, in all and by
//! block.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use swapgraph_blockswap::store::SwapStore;
use swapgraph_blockswap::{plan, Granularity, SwapSettings};
use swapgraph_model::{
    candle_device, device_memory, reset_peak_memory, weight_dtype, ModelHandle, ResidentStore, TensorSource,
    WeightStore,
};
use swapgraph_node_api::DeviceSpec;
use swapgraph_sdxl::unet::{UNet, UNetConfig, UNetInput};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str, default: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let spec: DeviceSpec = value("--device", "cpu").parse().expect("--device cpu|cuda:N");
    let device = candle_device(spec).expect("the device");
    let latent: usize = value("--latent", "128").parse().expect("--latent N");
    let steps: usize = value("--steps", "10").parse().expect("--steps N");
    let configs = value("--configs", "none");
    let dtype = weight_dtype(&device);
    let cfg = UNetConfig::sdxl();
    let unet = UNet::new(cfg).expect("the SDXL layout");
    let units = unet.units().to_vec();
    let model = ModelHandle::new(
        "random SDXL UNet",
        Arc::new(unet),
        Arc::new(TensorSource::from_tensors("random", random_weights(&units, dtype))),
    );
    let unet = model.network.as_any().downcast_ref::<UNet>().expect("a UNet");
    let inputs = Inputs::new(&cfg, latent, dtype, &device).expect("inputs");
    for config in configs.split(',') {
        let (swapped, settings) = parse_config(config);
        let swap = swapped.then(|| {
            let swap_plan = plan(&units, dtype, &settings).expect("a swap plan");
            SwapStore::load(units.clone(), &model.source, swap_plan, settings, &device, dtype).expect("a swap store")
        });
        // Built here rather than through the model's placement, which would keep it cached on
        // the device for the configurations after it.
        let resident = swap
            .is_none()
            .then(|| ResidentStore::load(units.clone(), &model.source, dtype, &device).expect("weights on the device"));
        let store: &dyn WeightStore = match (&swap, &resident) {
            (Some(swap), _) => swap,
            (None, Some(resident)) => resident,
            (None, None) => unreachable!("one store is built"),
        };
        let mut times = Vec::new();
        reset_peak_memory(&device);
        for step in 0..=steps {
            let clock = Instant::now();
            let out = inputs.run(unet, store);
            device.synchronize().expect("device work to finish");
            let elapsed = clock.elapsed().as_secs_f64() * 1e3;
            drop(out);
            if step > 0 {
                times.push(elapsed);
            }
        }
        let memory = device_memory(&device).unwrap_or_default();
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let gib = |bytes: f64| bytes / (1u64 << 30) as f64;
        let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
        let figures = swap.as_ref().map(SwapStore::figures);
        let streamed = figures.as_ref().map_or(0.0, |f| f.streamed_per_pass);
        let wait: Option<f64> = figures
            .as_ref()
            .filter(|_| settings.debug)
            .map(|f| f.units.iter().map(|u| u.wait_ms).sum());
        let wait_by_block: Option<serde_json::Map<String, serde_json::Value>> =
            figures.as_ref().filter(|_| settings.debug).map(|f| {
                let mut by_block: Vec<(String, f64)> = Vec::new();
                for unit in &f.units {
                    let block = block_name(&unit.name);
                    match by_block.iter_mut().find(|(b, _)| *b == block) {
                        Some((_, ms)) => *ms += unit.wait_ms,
                        None => by_block.push((block, unit.wait_ms)),
                    }
                }
                by_block.into_iter().map(|(b, ms)| (b, round(ms, 1).into())).collect()
            });
        println!(
            "{}",
            serde_json::json!({
                "config": config,
                "transfers": figures.as_ref().map_or("resident".to_string(), |f| f.transfers.clone()),
                "latent": latent,
                "dtype": format!("{dtype:?}"),
                "median_ms": round(median, 1),
                "min_ms": round(times[0], 1),
                "streamed_gib_per_step": round(gib(streamed), 3),
                "achieved_h2d_gb_s": round(streamed / (median * 1e-3) / 1e9, 1),
                "compute_wait_ms_per_step": wait.map(|w| round(w, 1)),
                "compute_wait_ms_per_step_by_block": wait_by_block,
                "peak_device_gib": round(gib(memory.peak_allocated as f64), 3),
            })
        );
    }
}

/// The block a unit's name belongs to: `down_blocks.2` for `down_blocks.2.attentions.0`.
fn block_name(unit: &str) -> String {
    let parts = if unit.starts_with("mid_block") { 1 } else { 2 };
    unit.split('.').take(parts).collect::<Vec<_>>().join(".")
}

/// A configuration string as the settings it names; `false` for `none` (resident).
fn parse_config(config: &str) -> (bool, SwapSettings) {
    let mut parts = config.split('/');
    let mut settings = SwapSettings {
        non_blocking: true,
        ..SwapSettings::default()
    };
    let swapped = match parts.next().unwrap_or("none").split_once(':') {
        Some(("blocks", n)) => {
            settings.blocks_to_swap = n.parse().expect("blocks:N");
            true
        }
        Some(("budget", mb)) => {
            settings.vram_budget_mb = Some(mb.parse().expect("budget:MB"));
            true
        }
        _ => false,
    };
    for modifier in parts {
        match modifier {
            "sync" => settings.non_blocking = false,
            "debug" => settings.debug = true,
            "block" => settings.granularity = Granularity::Block,
            p => {
                settings.prefetch = p
                    .trim_start_matches('p')
                    .parse()
                    .expect("a modifier: pN, sync, debug, block")
            }
        }
    }
    (swapped, settings)
}

/// Seeded random weights, N(0, 1/fan_in), for every tensor of `units`.
fn random_weights(units: &[swapgraph_model::UnitSpec], dtype: DType) -> HashMap<String, Tensor> {
    units
        .iter()
        .flat_map(|u| u.tensors.iter().map(|(n, s)| (u.key(n), s.clone())))
        .map(|(key, shape)| {
            let fan_in: usize = shape.dims().iter().skip(1).product::<usize>().max(1);
            let scale = (1.0 / fan_in as f64).sqrt();
            let tensor = Tensor::randn(0f32, 1.0, shape, &Device::Cpu)
                .and_then(|t| t.affine(scale, 0.0))
                .and_then(|t| t.to_dtype(dtype))
                .expect("random weights");
            (key, tensor)
        })
        .collect()
}

/// One CFG batch of SDXL inputs at `latent` x `latent`.
struct Inputs {
    sample: Tensor,
    timesteps: Tensor,
    context: Tensor,
    pooled: Tensor,
    ids: Tensor,
}

impl Inputs {
    fn new(cfg: &UNetConfig, latent: usize, dtype: DType, device: &Device) -> candle_core::Result<Self> {
        let randn = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, device)?.to_dtype(dtype);
        Ok(Self {
            sample: randn(&[2, 4, latent, latent])?,
            timesteps: Tensor::new(&[500f32, 500.0], device)?,
            context: randn(&[2, 77, cfg.cross_attention_dim])?,
            pooled: randn(&[2, cfg.pooled_text_dim])?,
            ids: Tensor::new(&[[1024f32, 1024.0, 0.0, 0.0, 1024.0, 1024.0]; 2], device)?,
        })
    }

    fn run(&self, unet: &UNet, store: &dyn WeightStore) -> Tensor {
        let input = UNetInput {
            sample: &self.sample,
            timesteps: &self.timesteps,
            context: &self.context,
            text_embeds: &self.pooled,
            time_ids: &self.ids,
            control: None,
            extra_tokens: None,
        };
        unet.forward(store, &input).expect("a UNet step")
    }
}
