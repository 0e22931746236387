//! The UNet with its weights kept in 8-bit floats against diffusers' UNet with its weights
//! rounded the same way: from an 8-bit file, from a scaled 8-bit file (kept in 8 bits with its
//! scales, and read into f32), and from an f16 file converted when loaded. With 8-bit products
//! (`fp8_e4m3fn_fast`), against diffusers' UNet whose linear layers take their products as
//! ComfyUI's `fp8_linear` does.

use super::unet::square_case;
use crate::{assert_close, fixture, largest, load_cases};
use candle_core::{DType, Device, Module};
use std::collections::HashMap;
use std::sync::Arc;
use swapgraph_model::{ModelHandle, TensorSource, UnitDecoding, UnitWeights};
use swapgraph_sdxl::blocks::Linear;
use swapgraph_sdxl::checkpoint::unet_file;
use swapgraph_sdxl::unet::{UNet, UNetConfig};

/// A UNet-only fixture file in the original layout, at the tiny UNet's sizes.
fn load(name: &str) -> ModelHandle {
    unet_file::load_single_file(&fixture(name), Some(UNetConfig::tiny())).unwrap()
}

fn parameters(model: &ModelHandle) -> u64 {
    model.network.units().iter().map(|u| u.parameter_count() as u64).sum()
}

#[test]
fn an_eight_bit_file_is_kept_in_eight_bits_and_matches_diffusers() {
    let model = load("unet_fp8.safetensors");
    assert_eq!(model.kept_dtype, Some(DType::F8E4M3), "an 8-bit file stays in 8 bits");
    let (out, kept) = square_case(&model);
    assert_eq!(kept, parameters(&model), "one byte per weight");
    assert_close("fp8 file", &out, &load_cases("fp8_cases.safetensors")["fp8.out"]);
}

#[test]
fn a_scaled_file_keeps_its_scales_in_eight_bits_and_applies_them_when_read_wide() {
    let model = load("unet_fp8_scaled.safetensors");
    assert_eq!(model.kept_dtype, Some(DType::F8E4M3));
    let cases = load_cases("fp8_cases.safetensors");
    let (kept_out, kept) = square_case(&model);
    assert_eq!(kept, parameters(&model));
    assert_close("scaled, kept in 8 bits", &kept_out, &cases["scaled_kept.out"]);
    let (wide_out, wide) = square_case(&model.with_kept_dtype(None));
    assert_eq!(wide, 4 * parameters(&model));
    assert_close("scaled, read into f32", &wide_out, &cases["scaled_wide.out"]);
}

#[test]
fn an_f16_file_converted_when_loaded_matches_the_eight_bit_file() {
    let text = std::fs::read_to_string(fixture("unet_tiny_config.json")).unwrap();
    let unet = UNet::new(UNetConfig::from_diffusers_json(&text).unwrap()).unwrap();
    let source = TensorSource::open(&[&fixture("unet_tiny.safetensors")]).unwrap();
    let model = ModelHandle::new("unet_tiny", Arc::new(unet), Arc::new(source));
    let unreadable = unet_file::load(fixture("unet_tiny.safetensors").to_str().unwrap())
        .err()
        .unwrap();
    assert!(
        unreadable.to_string().contains("is a UNet in diffusers' layout"),
        "{unreadable}"
    );
    let (out, kept) = square_case(&model.with_kept_dtype(Some(DType::F8E4M3)));
    assert_eq!(kept, parameters(&model));
    assert_close(
        "f16 converted to fp8",
        &out,
        &load_cases("fp8_cases.safetensors")["fp8.out"],
    );
}

#[test]
fn a_linear_layer_with_eight_bit_products_takes_them_as_comfyui_fast_fp8_does() {
    let cases = load_cases("fp8_cases.safetensors");
    let case = |name: &str| cases[&format!("linear.{name}")].clone();
    let scale = case("scale").to_scalar::<f32>().unwrap();
    // The cases are read as f32: the weight's 8-bit values go back to 8 bits exactly.
    let weight = case("weight").to_dtype(DType::F8E4M3).unwrap();
    let tensors = HashMap::from([
        ("layer.weight".to_string(), weight),
        ("layer.bias".to_string(), case("bias")),
    ]);
    let weights = UnitWeights::new(tensors).with_decoding(Arc::new(UnitDecoding {
        scales: HashMap::from([("layer.weight".to_string(), f64::from(scale))]),
        ..UnitDecoding::default()
    }));
    let (outputs, inputs) = case("weight").dims2().unwrap();
    let build = |weights: UnitWeights| {
        Linear::new(
            inputs,
            outputs,
            weights.var_builder(DType::F32, &Device::Cpu).unwrap().pp("layer"),
        )
        .unwrap()
    };
    let eight_bit = build(weights.clone().with_eight_bit_products(true));
    assert_close("8-bit products", &eight_bit.forward(&case("x")).unwrap(), &case("out"));
    let widened = build(weights).forward(&case("x")).unwrap();
    assert!(
        largest(&(widened - case("out")).unwrap()) > 0.1,
        "without 8-bit products the inputs are not rounded"
    );
}

/// The tiny UNet from the 8-bit file (no scales, so every product of 8-bit factors and every
/// sum of them is exact in f32 and the order of additions cannot change a rounded input).
#[test]
fn a_unet_with_eight_bit_products_rounds_the_inputs_of_every_linear_layer_as_comfyui() {
    let model = load("unet_fp8.safetensors").with_eight_bit_products(true);
    let (out, kept) = square_case(&model);
    assert_eq!(kept, parameters(&model), "one byte per weight");
    let cases = load_cases("fp8_cases.safetensors");
    assert_close("8-bit products", &out, &cases["fp8_fast.out"]);
    assert!(
        largest(&(out - &cases["fp8.out"]).unwrap()) > 0.01,
        "rounding the inputs changes the output"
    );
}
