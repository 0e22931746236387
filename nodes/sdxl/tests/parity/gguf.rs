//! The UNet from a GGUF file (every storage type the loader reads, some tensors reshaped by the
//! converter) against diffusers' UNet on the weights the gguf package dequantizes; and the same
//! weights as GGUF and as safetensors.

use super::unet::square_case;
use crate::{assert_close, fixture, largest, load_cases};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device};
use swapgraph_model::KEPT_AS_STORED;
use swapgraph_sdxl::checkpoint::unet_file;
use swapgraph_sdxl::unet::UNetConfig;

#[test]
fn a_gguf_unet_reads_every_type_as_the_gguf_package_dequantizes_it_and_matches_diffusers() {
    let model = unet_file::load_gguf(&fixture("unet_tiny.gguf"), Some(UNetConfig::tiny())).unwrap();
    let cases = load_cases("gguf_cases.safetensors");
    let mut checked = 0;
    for unit in model.network.units() {
        for (name, shape) in &unit.tensors {
            let key = unit.key(name);
            let weight = model.source.load(&key, shape, DType::F32, &Device::Cpu).unwrap();
            let flat = weight
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let n = flat.len() as f64;
            let place = |i: usize| i as f64 / n;
            let ours = [
                flat.iter().sum::<f64>(),
                flat.iter().map(|v| v * v).sum::<f64>(),
                flat.iter().enumerate().map(|(i, v)| v * place(i)).sum::<f64>(),
                flat.iter()
                    .enumerate()
                    .map(|(i, v)| v * place(i) * place(i))
                    .sum::<f64>(),
            ];
            let reference = cases[&format!("weight.{key}")]
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let what = ["sum", "sum of squares", "sum by place", "sum by place squared"];
            for (what, (a, b)) in what.iter().zip(ours.iter().zip(&reference)) {
                let stored = model.source.stored_dtype(&key);
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "{key} ({stored:?}): {what} {a} against {b}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, cases.len() - 1, "every weight of the file is the model's");
    assert_eq!(model.kept_dtype, Some(KEPT_AS_STORED), "the blocks are kept as stored");
    let (out, kept) = square_case(&model);
    let stored: u64 = model
        .kept_units(DType::F32)
        .iter()
        .map(|unit| unit.bytes(KEPT_AS_STORED))
        .sum();
    let parameters: u64 = model.network.units().iter().map(|u| u.parameter_count() as u64).sum();
    assert_eq!(kept, stored, "the device holds the file's bytes");
    assert!(kept < 4 * parameters, "{kept} bytes for {parameters} weights");
    assert_close("GGUF UNet", &out, &cases["out"]);
}

#[test]
fn the_same_weights_as_gguf_and_as_safetensors_give_the_same_unet_and_q8_0_rounds_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = crate::checkpoint_part("model.diffusion_model.", dir.path(), "unet.safetensors");
    let tiny = || Some(UNetConfig::tiny());
    let reference = square_case(&unet_file::load_single_file(&file, tiny()).unwrap()).0;
    let tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let architecture = gguf_file::Value::String("sdxl".into());
    let mut difference = Vec::new();
    for (name, blocks) in [("unet_f32.gguf", GgmlDType::F32), ("unet_q8_0.gguf", GgmlDType::Q8_0)] {
        let quantized: Vec<(&str, QTensor)> = tensors
            .iter()
            .map(|(key, tensor)| {
                let splits = tensor.rank() > 1 && tensor.dims()[tensor.rank() - 1] % blocks.block_size() == 0;
                let kind = if splits { blocks } else { GgmlDType::F32 };
                (key.as_str(), QTensor::quantize(tensor, kind).unwrap())
            })
            .collect();
        let table: Vec<(&str, &QTensor)> = quantized.iter().map(|(k, q)| (*k, q)).collect();
        let path = dir.path().join(name);
        gguf_file::write(
            &mut std::fs::File::create(&path).unwrap(),
            &[("general.architecture", &architecture)],
            &table,
        )
        .unwrap();
        assert!(unet_file::is_gguf(&path) && !unet_file::is_gguf(&file));
        let out = square_case(&unet_file::load_gguf(&path, tiny()).unwrap()).0;
        difference.push(largest(&(out - &reference).unwrap()));
    }
    let scale = largest(&reference);
    assert_eq!(difference[0], 0.0, "f32 GGUF tensors are the safetensors file's");
    assert!(
        difference[1] > 0.0 && difference[1] < 0.05 * scale,
        "Q8_0 moved the output by {} of {scale}",
        difference[1]
    );
}
