//! Single-file checkpoints in the original layout: the tiny models written that way (and checked
//! against diffusers' converters by the fixture script) load to the same numbers; other files
//! are named for what they are.

use super::unet::input;
use crate::{assert_close, fixture, fixture_clip, load_cases};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use swapgraph_model::Room;
use swapgraph_node_api::VramBudget;
use swapgraph_sdxl::checkpoint::single_file::{load_with, Sizes};
use swapgraph_sdxl::checkpoint::Checkpoint;
use swapgraph_sdxl::clip::Activation;
use swapgraph_sdxl::unet::{UNet, UNetConfig};
use swapgraph_sdxl::vae::VaeConfig;

#[test]
fn the_original_layout_loads_to_the_same_numbers() {
    let sizes = Sizes {
        unet: UNetConfig::tiny(),
        clip_l: fixture_clip(Activation::QuickGelu, None),
        clip_g: fixture_clip(Activation::Gelu, Some(16)),
        vae: VaeConfig::tiny(),
    };
    let checkpoint = load_with(&fixture("sdxl_tiny_single_file.safetensors"), &sizes).unwrap();
    matches_the_fixtures(&checkpoint);
}

/// Asserts that every model of `checkpoint` (the tiny models, however stored) gives the
/// fixtures' numbers.
pub fn matches_the_fixtures(checkpoint: &Checkpoint) {
    let unet_cases = load_cases("unet_cases.safetensors");
    let unet = checkpoint.model.network.as_any().downcast_ref::<UNet>().unwrap();
    let store = checkpoint
        .model
        .store(&Device::Cpu, DType::F32, &Room::default())
        .unwrap();
    assert_eq!(store.units().len(), unet.units().len());
    let input = input(&unet_cases, "square", None);
    assert_close(
        "unet",
        &unet.forward(store.as_ref(), &input).unwrap(),
        &unet_cases["square.out"],
    );

    let clip_cases = load_cases("clip_cases.safetensors");
    let ids = clip_cases["ids"].to_dtype(DType::U32).unwrap();
    let g = checkpoint
        .clip
        .clip_g
        .get(&Device::Cpu, VramBudget::Auto)
        .unwrap()
        .forward(&ids, 2)
        .unwrap();
    assert_close("clip g penultimate", &g.hidden, &clip_cases["g.penultimate"]);
    assert_close("clip g pooled", &g.pooled, &clip_cases["g.pooled"]);
    let l = checkpoint
        .clip
        .clip_l
        .get(&Device::Cpu, VramBudget::Auto)
        .unwrap()
        .forward(&ids, 2)
        .unwrap();
    assert_close("clip l penultimate", &l.hidden, &clip_cases["l.penultimate"]);

    let vae_cases = load_cases("vae_cases.safetensors");
    let vae = checkpoint.vae.get(&Device::Cpu, VramBudget::Auto).unwrap();
    assert_close(
        "vae decode",
        &vae.decode(&vae_cases["latents"]).unwrap(),
        &vae_cases["decoded"],
    );
    assert_close(
        "vae encode",
        &vae.encode(&vae_cases["image"]).unwrap(),
        &vae_cases["encoded"],
    );
}

fn file_with(keys: &[&str]) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".safetensors").tempfile().unwrap();
    let tensors: HashMap<String, Tensor> = keys
        .iter()
        .map(|k| (k.to_string(), Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap()))
        .collect();
    candle_core::safetensors::save(&tensors, file.path()).unwrap();
    file
}

#[test]
fn other_checkpoints_are_named() {
    let cases = [
        (
            vec!["cond_stage_model.transformer.text_model.x", "model.diffusion_model.x"],
            "holds Stable Diffusion 1.x, not SDXL",
        ),
        (
            vec!["cond_stage_model.model.x", "model.diffusion_model.x"],
            "holds Stable Diffusion 2.x, not SDXL",
        ),
        (vec!["something.else"], "is not a Stable Diffusion checkpoint"),
    ];
    for (keys, expected) in cases {
        let file = file_with(&keys);
        let error = swapgraph_sdxl::checkpoint::load(file.path().to_str().unwrap(), &Device::Cpu, VramBudget::Auto)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains(expected), "{error}");
    }
    let missing = swapgraph_sdxl::checkpoint::load("/no/such/model.safetensors", &Device::Cpu, VramBudget::Auto)
        .err()
        .unwrap()
        .to_string();
    assert!(missing.contains("not found"), "{missing}");
    let unknown = swapgraph_sdxl::checkpoint::load("builtin:huge-sdxl", &Device::Cpu, VramBudget::Auto)
        .err()
        .unwrap()
        .to_string();
    assert!(
        unknown.contains("the built-in ones are \"builtin:tiny-sdxl\" and \"builtin:random-sdxl\""),
        "{unknown}"
    );
}
