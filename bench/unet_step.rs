//! One SDXL-size UNet step on a device, resident or through BlockSwap, with seeded random
//! weights: the figure BlockSwap's promises are measured by.
//!
//! `cargo bench --bench unet_step [--features cuda] -- --device cuda:0 --latent 128 --steps 10
//! --swap none|blocks:N|budget:MB [--granularity unit|block] [--prefetch N]` prints one JSON line:
//! median ms per step, bytes streamed per step, and device memory used (CUDA).

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use swapgraph_blockswap::placement::BlockSwapPlacement;
use swapgraph_blockswap::{plan, Granularity, SwapSettings};
use swapgraph_model::{weight_dtype, ModelHandle, TensorSource};
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
    let device = match value("--device", "cpu").as_str() {
        "cpu" => Device::Cpu,
        other => Device::new_cuda(other.trim_start_matches("cuda:").parse().unwrap_or(0)).expect("a CUDA device"),
    };
    let latent: usize = value("--latent", "128").parse().expect("--latent N");
    let steps: usize = value("--steps", "10").parse().expect("--steps N");
    let swap = value("--swap", "none");
    let dtype = weight_dtype(&device);
    let mut settings = SwapSettings {
        granularity: if value("--granularity", "unit") == "block" {
            Granularity::Block
        } else {
            Granularity::Unit
        },
        prefetch: value("--prefetch", "1").parse().expect("--prefetch N"),
        non_blocking: false,
        ..SwapSettings::default()
    };
    let swapped = match swap.split_once(':') {
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

    let cfg = UNetConfig::sdxl();
    let unet = UNet::new(cfg).unwrap();
    let tensors: HashMap<String, Tensor> = unet
        .units()
        .iter()
        .flat_map(|u| u.tensors.iter().map(|(n, s)| (u.key(n), s.clone())))
        .map(|(key, shape)| {
            let fan_in: usize = shape.dims().iter().skip(1).product::<usize>().max(1);
            let scale = (1.0 / fan_in as f64).sqrt();
            let t = Tensor::randn(0f32, 1.0, shape, &Device::Cpu)
                .unwrap()
                .affine(scale, 0.0)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            (key, t)
        })
        .collect();
    let units = unet.units().to_vec();
    let mut model = ModelHandle::new(
        "random SDXL UNet",
        Arc::new(unet),
        Arc::new(TensorSource::from_tensors("random", tensors)),
    );
    let streamed_per_step = if swapped {
        let swap_plan = plan(&units, dtype, &settings).expect("a swap plan");
        model = model.with_placement(Arc::new(BlockSwapPlacement::new(settings)));
        swap_plan.streamed_bytes
    } else {
        0
    };
    let before = used_device_memory(&device);
    let store = model.store(&device, dtype).expect("weights on the device");
    let unet = model.network.as_any().downcast_ref::<UNet>().unwrap();
    let sample = Tensor::randn(0f32, 1.0, (2, 4, latent, latent), &device)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let timesteps = Tensor::new(&[500f32, 500.0], &device).unwrap();
    let context = Tensor::randn(0f32, 1.0, (2, 77, cfg.cross_attention_dim), &device)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let pooled = Tensor::randn(0f32, 1.0, (2, cfg.pooled_text_dim), &device)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let ids = Tensor::new(&[[1024f32, 1024.0, 0.0, 0.0, 1024.0, 1024.0]; 2], &device).unwrap();
    let input = UNetInput {
        sample: &sample,
        timesteps: &timesteps,
        context: &context,
        text_embeds: &pooled,
        time_ids: &ids,
        control: None,
        extra_tokens: None,
    };
    let mut times = Vec::new();
    let mut peak = 0u64;
    for step in 0..=steps {
        let clock = Instant::now();
        let out = unet.forward(store.as_ref(), &input).unwrap();
        device.synchronize().unwrap();
        let elapsed = clock.elapsed().as_secs_f64() * 1e3;
        peak = peak.max(used_device_memory(&device).saturating_sub(before));
        drop(out);
        if step > 0 {
            times.push(elapsed);
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"swap\": \"{swap}\", \"latent\": {latent}, \"dtype\": \"{dtype:?}\", \"median_ms\": {:.1}, \"min_ms\": {:.1}, \
         \"streamed_gib_per_step\": {:.3}, \"device_used_gib\": {:.3}}}",
        times[times.len() / 2],
        times[0],
        streamed_per_step as f64 / (1u64 << 30) as f64,
        peak as f64 / (1u64 << 30) as f64,
    );
}

/// Device memory in use on the whole device (CUDA); 0 elsewhere.
fn used_device_memory(device: &Device) -> u64 {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(_) = device {
        if let Ok((free, total)) = candle_core::cuda_backend::cudarc::driver::result::mem_get_info() {
            return (total - free) as u64;
        }
    }
    let _ = device;
    0
}
