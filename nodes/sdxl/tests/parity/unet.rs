//! The UNet against diffusers' `UNet2DConditionModel`, built from the config.json diffusers
//! wrote for it, with and without ControlNet residuals, on a square and an odd-sized latent.

use crate::{assert_close, assert_units_cover, fixture, load_cases};
use candle_core::{DType, Device};
use swapgraph_model::{ResidentStore, TensorSource};
use swapgraph_sdxl::unet::{ControlResiduals, UNet, UNetConfig, UNetInput};

fn tiny() -> (UNet, ResidentStore) {
    let text = std::fs::read_to_string(fixture("unet_tiny_config.json")).unwrap();
    let cfg = UNetConfig::from_diffusers_json(&text).unwrap();
    assert_eq!(cfg, UNetConfig::tiny(), "config.json reads as the built-in tiny config");
    let unet = UNet::new(cfg).unwrap();
    let source = TensorSource::open(&[&fixture("unet_tiny.safetensors")]).unwrap();
    let store = ResidentStore::load(unet.units().to_vec(), &source, DType::F32, &Device::Cpu).unwrap();
    (unet, store)
}

#[test]
fn unit_list_covers_every_tensor_of_the_checkpoint_once() {
    let unet = UNet::new(UNetConfig::tiny()).unwrap();
    assert_units_cover(unet.units(), "unet_tiny.safetensors");
}

fn input<'a>(
    cases: &'a std::collections::HashMap<String, candle_core::Tensor>,
    name: &str,
    control: Option<&'a ControlResiduals>,
) -> UNetInput<'a> {
    let get = |key: &str| &cases[&format!("{name}.{key}")];
    UNetInput {
        sample: get("sample"),
        timesteps: get("timesteps"),
        context: get("context"),
        projected: None,
        text_embeds: get("text_embeds"),
        time_ids: get("time_ids"),
        control,
        extra_tokens: None,
    }
}

#[test]
fn matches_diffusers() {
    let (unet, store) = tiny();
    let cases = load_cases("unet_cases.safetensors");
    for name in ["square", "odd"] {
        let out = unet.forward(&store, &input(&cases, name, None)).unwrap();
        assert_close(name, &out, &cases[&format!("{name}.out")]);
    }
}

#[test]
fn a_context_projected_once_gives_the_pass_it_would_project_itself() {
    let (unet, store) = tiny();
    let cases = load_cases("unet_cases.safetensors");
    let itself = unet.forward(&store, &input(&cases, "square", None)).unwrap();
    let projected = unet.project_context(&store, &cases["square.context"]).unwrap();
    let given = UNetInput {
        projected: Some(&projected),
        ..input(&cases, "square", None)
    };
    let once = unet.forward(&store, &given).unwrap();
    let values = |t: candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(values(itself) == values(once), "outputs differ");
}

#[test]
fn a_context_of_the_wrong_width_or_a_layer_past_the_projection_is_an_error() {
    let (unet, store) = tiny();
    let cases = load_cases("unet_cases.safetensors");
    let narrow = cases["square.context"].narrow(2, 0, 8).unwrap();
    assert!(unet.project_context(&store, &narrow).is_err());
    let projected = unet.project_context(&store, &cases["square.context"]).unwrap();
    let error = projected.layer(1000).unwrap_err().to_string();
    assert!(error.contains("layer 1000 was asked for"), "{error}");
}

#[test]
fn matches_diffusers_with_controlnet_residuals() {
    let (unet, store) = tiny();
    let cases = load_cases("unet_cases.safetensors");
    let control = ControlResiduals {
        down: (0..9).map(|i| cases[&format!("control.down.{i}")].clone()).collect(),
        mid: cases["control.mid"].clone(),
    };
    let out = unet.forward(&store, &input(&cases, "square", Some(&control))).unwrap();
    assert_close("control", &out, &cases["control.out"]);
}
