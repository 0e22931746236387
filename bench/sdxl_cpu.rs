//! CPU timings of the SDXL UNet: one step of the built-in tiny UNet, a whole tiny text-to-image
//! workflow, and (with `--full`) one step of a real-size SDXL UNet with random weights at
//! 512x512, so regressions show. Prints one line per figure with the median of its runs.
//!
//! Run with `cargo bench --bench sdxl_cpu` (add `-- --full` for the real-size step: about 11 GB
//! of memory).

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use swapgraph::exec::{Engine, EventSink, RunOptions};
use swapgraph_model::{ResidentStore, TensorSource};
use swapgraph_node_api::{FileRoots, Registry};
use swapgraph_sdxl::unet::{UNet, UNetConfig, UNetInput};

fn main() {
    let full = std::env::args().any(|a| a == "--full");
    let tiny = UNetConfig::tiny();
    report("tiny UNet step, latents 2x4x16x16", 10, unet_step(&tiny, 16));
    report("tiny txt2img workflow, 128x128, 8 steps", 5, workflow());
    if full {
        report(
            "SDXL UNet step, random weights, latents 2x4x64x64 (512x512 with CFG)",
            1,
            unet_step(&UNetConfig::sdxl(), 64),
        );
    }
}

fn report(what: &str, runs: usize, mut run: impl FnMut() -> Duration) {
    run();
    let mut times: Vec<Duration> = (0..runs).map(|_| run()).collect();
    times.sort();
    println!(
        "{what}: median {:.1} ms over {runs} runs",
        times[runs / 2].as_secs_f64() * 1e3
    );
}

/// One UNet evaluation on random weights and inputs.
fn unet_step(cfg: &UNetConfig, latent: usize) -> impl FnMut() -> Duration {
    let unet = UNet::new(cfg.clone()).unwrap();
    let tensors: HashMap<String, Tensor> = unet
        .units()
        .iter()
        .flat_map(|u| u.tensors.iter().map(|(n, s)| (u.key(n), s.clone())))
        .map(|(key, shape)| {
            let fan_in: usize = shape.dims().iter().skip(1).product::<usize>().max(1);
            let t = Tensor::randn(0f32, (1.0 / fan_in as f64).sqrt() as f32, shape, &Device::Cpu).unwrap();
            (key, t)
        })
        .collect();
    let source = TensorSource::from_tensors("random", tensors);
    let store = ResidentStore::load(unet.units().to_vec(), &source, DType::F32, &Device::Cpu).unwrap();
    drop(source);
    let sample = Tensor::randn(0f32, 1.0, (2, 4, latent, latent), &Device::Cpu).unwrap();
    let timesteps = Tensor::new(&[500f32, 500.0], &Device::Cpu).unwrap();
    let context = Tensor::randn(0f32, 1.0, (2, 77, cfg.cross_attention_dim), &Device::Cpu).unwrap();
    let pooled = Tensor::randn(0f32, 1.0, (2, cfg.pooled_text_dim), &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[1024f32, 1024.0, 0.0, 0.0, 1024.0, 1024.0]; 2], &Device::Cpu).unwrap();
    move || {
        let input = UNetInput {
            sample: &sample,
            timesteps: &timesteps,
            context: &context,
            projected: None,
            text_embeds: &pooled,
            time_ids: &ids,
            control: None,
            extra_tokens: None,
        };
        let clock = Instant::now();
        unet.forward(&store, &input).unwrap();
        clock.elapsed()
    }
}

/// The whole `sdxl_txt2img` example on the built-in tiny model, in a fresh engine each run.
fn workflow() -> impl FnMut() -> Duration {
    let bytes = std::fs::read("workflows/sdxl_txt2img.yaml").unwrap();
    let output = std::env::temp_dir().join("swapgraph-bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    move || {
        let mut registry = Registry::new();
        swapgraph_sdxl::register(&mut registry).unwrap();
        swapgraph_image::register(&mut registry).unwrap();
        let engine = Arc::new(Engine::new(registry));
        let plan = swapgraph::prepare("sdxl_txt2img.yaml", &bytes, &[], engine.registry()).unwrap();
        let options = RunOptions {
            files: FileRoots {
                outputs: output.clone(),
                ..FileRoots::default()
            },
            ..RunOptions::default()
        };
        let clock = Instant::now();
        runtime
            .block_on(engine.run(&plan, &options, &EventSink::discard()))
            .unwrap();
        clock.elapsed()
    }
}
