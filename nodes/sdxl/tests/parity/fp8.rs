//! The UNet with its weights kept in 8-bit floats against diffusers' UNet with its weights
//! rounded the same way: from an 8-bit file, from a scaled 8-bit file (kept in 8 bits with its
//! scales, and read into f32), and from an f16 file converted when loaded.

use super::unet::square_case;
use crate::{assert_close, fixture, load_cases};
use candle_core::DType;
use std::sync::Arc;
use swapgraph_model::{ModelHandle, TensorSource};
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
