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

/// The UNet's input of fixture case `name` (`square`, `odd`) in `cases`, with `control`.
pub fn input<'a>(
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

/// A UNet of SDXL's shape that differs from the tiny one in every size its config can vary
/// (latent channels in and out, widths, resnets per block, which levels attend and how deeply,
/// head width, GroupNorm groups, text, time-id and pooled widths), built from the config.json
/// diffusers wrote for it.
#[test]
fn a_unet_of_other_sizes_is_built_from_its_config_and_matches_diffusers() {
    let text = std::fs::read_to_string(fixture("unet_other_config.json")).unwrap();
    let cfg = UNetConfig::from_diffusers_json(&text).unwrap();
    let tiny = UNetConfig::tiny();
    let differs = [
        cfg.in_channels != tiny.in_channels,
        cfg.out_channels != tiny.out_channels,
        cfg.block_out_channels
            .iter()
            .zip(tiny.block_out_channels)
            .all(|(a, b)| *a != b),
        cfg.transformer_layers != tiny.transformer_layers,
        cfg.mid_transformer_layers != tiny.mid_transformer_layers,
        cfg.layers_per_block != tiny.layers_per_block,
        cfg.head_dim != tiny.head_dim,
        cfg.norm_groups != tiny.norm_groups,
        cfg.cross_attention_dim != tiny.cross_attention_dim,
        cfg.addition_time_embed_dim != tiny.addition_time_embed_dim,
        cfg.pooled_text_dim != tiny.pooled_text_dim,
    ];
    assert!(differs.iter().all(|d| *d), "{cfg:?} shares a size with the tiny UNet");
    let unet = UNet::new(cfg).unwrap();
    assert_units_cover(unet.units(), "unet_other.safetensors");
    let source = TensorSource::open(&[&fixture("unet_other.safetensors")]).unwrap();
    let store = ResidentStore::load(unet.units().to_vec(), &source, DType::F32, &Device::Cpu).unwrap();
    let cases = load_cases("unet_other_cases.safetensors");
    let out = unet.forward(&store, &input(&cases, "other", None)).unwrap();
    assert_close("other sizes", &out, &cases["other.out"]);
}

/// A UNet distilled as SSD-1B and Segmind Vega are (up levels with a transformer depth per
/// layer of their own, a middle block that is one resnet without attention), built from the
/// config.json diffusers wrote for it.
#[test]
fn a_distilled_unet_is_built_from_its_config_and_matches_diffusers() {
    let text = std::fs::read_to_string(fixture("unet_distilled_config.json")).unwrap();
    let cfg = UNetConfig::from_diffusers_json(&text).unwrap();
    assert_eq!(cfg.transformer_layers, [0, 2, 1]);
    assert_eq!(cfg.up_transformer_layers, [vec![1, 3, 2], vec![2, 1, 1], vec![0, 0, 0]]);
    assert_eq!(cfg.mid_transformer_layers, 0, "the middle block has no attention");
    let unet = UNet::new(cfg).unwrap();
    assert_units_cover(unet.units(), "unet_distilled.safetensors");
    let source = TensorSource::open(&[&fixture("unet_distilled.safetensors")]).unwrap();
    let store = ResidentStore::load(unet.units().to_vec(), &source, DType::F32, &Device::Cpu).unwrap();
    let cases = load_cases("unet_distilled_cases.safetensors");
    let out = unet.forward(&store, &input(&cases, "distilled", None)).unwrap();
    assert_close("distilled", &out, &cases["distilled.out"]);
}

/// `model`'s output for the UNet fixture's square case, computing in f32 on the CPU, and the
/// bytes its weights take as kept.
pub fn square_case(model: &swapgraph_model::ModelHandle) -> (candle_core::Tensor, u64) {
    use swapgraph_model::WeightStore;
    let store = ResidentStore::load(
        model.network.units().to_vec(),
        &model.source,
        model.dtypes(DType::F32),
        &Device::Cpu,
    )
    .unwrap();
    let kept: u64 = (0..store.units().len())
        .map(|unit| store.acquire(unit).unwrap().bytes())
        .sum();
    let cases = load_cases("unet_cases.safetensors");
    let unet = model.network.as_any().downcast_ref::<UNet>().unwrap();
    (unet.forward(&store, &input(&cases, "square", None)).unwrap(), kept)
}
