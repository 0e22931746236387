//! The ControlNet against diffusers' `ControlNetModel` built from the tiny UNet: configuration
//! read from its config.json, every weight used once, residuals for a hint image.

use crate::{assert_close, assert_units_cover, fixture, load_cases};
use candle_core::{DType, Device};
use swapgraph_model::{Network, ResidentStore, TensorSource};
use swapgraph_sdxl::controlnet::{ControlNet, ControlNetConfig, EmbeddedHint, Hint};
use swapgraph_sdxl::unet::UNetInput;

fn tiny() -> ControlNet {
    let text = std::fs::read_to_string(fixture("controlnet_tiny_config.json")).unwrap();
    let cfg = ControlNetConfig::from_diffusers_json(&text).unwrap();
    assert_eq!(
        cfg,
        ControlNetConfig::tiny(),
        "config.json reads as the built-in tiny config"
    );
    ControlNet::new(cfg).unwrap()
}

#[test]
fn unit_list_covers_every_tensor_of_the_checkpoint_once() {
    assert_units_cover(tiny().units(), "controlnet_tiny.safetensors");
}

#[test]
fn residuals_match_diffusers() {
    let controlnet = tiny();
    let source = TensorSource::open(&[&fixture("controlnet_tiny.safetensors")]).unwrap();
    let store = ResidentStore::load(controlnet.units().to_vec(), &source, DType::F32, &Device::Cpu).unwrap();
    let cases = load_cases("controlnet_cases.safetensors");
    let input = UNetInput {
        sample: &cases["sample"],
        timesteps: &cases["timesteps"],
        context: &cases["context"],
        projected: None,
        text_embeds: &cases["text_embeds"],
        time_ids: &cases["time_ids"],
        control: None,
        extra_tokens: None,
    };
    let embedded = EmbeddedHint::default();
    let image = || Ok(cases["hint"].clone());
    let first = Hint {
        image: &image,
        embedded: &embedded,
    };
    // The second pass takes the first's embedding and must not need the image.
    let no_image = || candle_core::bail!("the kept embedding fits this pass");
    let second = Hint {
        image: &no_image,
        embedded: &embedded,
    };
    for (pass, hint) in [("first", first), ("second", second)] {
        let residuals = controlnet.forward(&store, &input, &hint, 0.8).unwrap();
        assert_eq!(residuals.down.len(), 9);
        for (i, down) in residuals.down.iter().enumerate() {
            assert_close(
                &format!("{pass} pass, down residual {i}"),
                down,
                &cases[&format!("down.{i}")],
            );
        }
        assert_close(&format!("{pass} pass, mid residual"), &residuals.mid, &cases["mid"]);
    }
}
