//! LoRAs merged as weights are read, against diffusers' `load_lora_weights` + `fuse_lora` on the
//! tiny models, in kohya's format (original UNet names, LoCon convolutions, alphas) and
//! diffusers/PEFT's, at strengths 0.8 for the UNet and 0.6 for the text encoders.

use crate::{assert_close, fixture, fixture_clip, load_cases};
use candle_core::{DType, Device, Shape};
use std::sync::Arc;
use swapgraph_model::TensorSource;
use swapgraph_sdxl::clip::Activation;
use swapgraph_sdxl::lora::{Lora, LoraTargets, Strengths};
use swapgraph_sdxl::unet::{UNet, UNetConfig};

fn targets() -> LoraTargets {
    let unet = UNet::new(UNetConfig::tiny()).unwrap();
    let clip_l = fixture_clip(Activation::QuickGelu, None);
    let clip_g = fixture_clip(Activation::Gelu, Some(16));
    LoraTargets::new(Some(&unet), Some([&clip_l, &clip_g])).unwrap()
}

const STRENGTHS: Strengths = Strengths { model: 0.8, clip: 0.6 };

#[test]
fn both_formats_merge_as_diffusers_fuses_them_and_unmerged_weights_are_the_files() {
    let cases = load_cases("lora_cases.safetensors");
    let targets = targets();
    for format in ["kohya", "peft"] {
        let lora = Lora::read(&fixture(&format!("lora_{format}.safetensors")), &targets, STRENGTHS).unwrap();
        assert!(lora.unmatched.is_empty(), "{format}: {:?}", lora.unmatched);
        for (part, file, patches) in [
            ("unet", "unet_tiny.safetensors", &lora.unet),
            ("te1", "clip_l_tiny.safetensors", &lora.clip_l),
            ("te2", "clip_g_tiny.safetensors", &lora.clip_g),
        ] {
            let original = Arc::new(TensorSource::open(&[&fixture(file)]).unwrap());
            let merged = original.patched(patches);
            let changed = cases[&format!("{format}.{part}")].to_scalar::<f32>().unwrap() as usize;
            assert_eq!(patches.len(), changed, "{format}.{part}: the weights diffusers changed");
            // Every fourth changed weight as diffusers fused it.
            let prefix = format!("{format}.{part}.");
            let expected: Vec<_> = cases.iter().filter(|(key, _)| key.starts_with(&prefix)).collect();
            assert_eq!(expected.len(), changed.div_ceil(4));
            for (case, reference) in expected {
                let key = &case[prefix.len()..];
                let shape = Shape::from(reference.dims());
                let ours = merged.load(key, &shape, DType::F32, &Device::Cpu).unwrap();
                assert_close(case, &ours, reference);
                // The file's own weights are untouched: read without the LoRA they are the same.
                let again = original.load(key, &shape, DType::F32, &Device::Cpu).unwrap();
                let stored = TensorSource::open(&[&fixture(file)])
                    .unwrap()
                    .load(key, &shape, DType::F32, &Device::Cpu)
                    .unwrap();
                assert_eq!(
                    again.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    stored.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                );
            }
        }
    }
}
