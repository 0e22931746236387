//! Numerical parity with diffusers on the tiny random-weight fixtures that
//! `fixtures/make_fixtures.py` writes. Tolerance: the largest absolute difference is at most
//! 1e-4 of the largest absolute reference value, in f32 on the CPU.

mod parity {
    pub mod clip;
    pub mod controlnet;
    pub mod folder;
    pub mod fp8;
    pub mod gguf;
    pub mod lora;
    pub mod noise;
    pub mod regional;
    pub mod sampling;
    pub mod single_file;
    pub mod unet;
    pub mod vae;
}

use candle_core::{DType, Device, Tensor};
use std::path::PathBuf;

/// A fixture file's path.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// The tensors of the single-file checkpoint fixture under `prefix`, written without it to
/// `name` in `dir`: a model of the checkpoint as a file of its own.
pub fn checkpoint_part(prefix: &str, dir: &std::path::Path, name: &str) -> PathBuf {
    let tensors = candle_core::safetensors::load(fixture("sdxl_tiny_single_file.safetensors"), &Device::Cpu).unwrap();
    let part: std::collections::HashMap<String, Tensor> = tensors
        .into_iter()
        .filter_map(|(key, tensor)| Some((key.strip_prefix(prefix)?.to_string(), tensor)))
        .collect();
    let path = dir.join(name);
    candle_core::safetensors::save(&part, &path).unwrap();
    path
}

/// Loads every tensor of a fixture file in f32.
pub fn load_cases(name: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name), &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::F32).unwrap()))
        .collect()
}

/// The sizes of the fixture text encoders: a 1000-token vocabulary, end-of-text 999.
pub fn fixture_clip(
    activation: swapgraph_sdxl::clip::Activation,
    projection_dim: Option<usize>,
) -> swapgraph_sdxl::clip::ClipConfig {
    swapgraph_sdxl::clip::ClipConfig {
        vocab_size: 1000,
        hidden_size: 32,
        intermediate_size: 64,
        layers: 3,
        heads: 2,
        max_positions: 77,
        activation,
        projection_dim,
        eos_token_id: 999,
    }
}

/// Asserts that `units` ask for exactly the tensors of the checkpoint fixture `file`, each once.
pub fn assert_units_cover(units: &[swapgraph_model::UnitSpec], file: &str) {
    let source = swapgraph_model::TensorSource::open(&[&fixture(file)]).unwrap();
    let mut ours: Vec<String> = units
        .iter()
        .flat_map(|u| u.tensors.iter().map(|(name, _)| u.key(name)))
        .collect();
    let mut theirs = source.keys();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
}

/// A builder over a fixture's weights, loaded in f32 on the CPU.
pub fn weights(name: &str) -> candle_nn::VarBuilder<'static> {
    let tensors = load_cases(name);
    candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)
}

/// Asserts `actual` matches `expected` within 1e-4 relative to the reference's largest value.
pub fn assert_close(what: &str, actual: &Tensor, expected: &Tensor) {
    assert_close_to(what, actual, expected, 1e-4);
}

/// The largest magnitude in `tensor`.
pub fn largest(tensor: &Tensor) -> f32 {
    tensor
        .abs()
        .and_then(|t| t.max_all())
        .and_then(|t| t.to_scalar::<f32>())
        .unwrap()
}

/// [`assert_close`] within `tolerance` of the reference's largest magnitude.
pub fn assert_close_to(what: &str, actual: &Tensor, expected: &Tensor, tolerance: f32) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shapes differ");
    let difference = largest(&(actual - expected).unwrap());
    let scale = largest(expected).max(1e-6);
    let relative = difference / scale;
    assert!(
        relative <= tolerance,
        "{what}: max difference {difference} is {relative:e} of the reference scale {scale}"
    );
}
