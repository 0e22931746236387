//! The VAE against diffusers' `AutoencoderKL`: encode (latent mean, scaled) and decode.

use crate::{assert_close, checkpoint_part, fixture, load_cases, weights};
use candle_core::Device;
use swapgraph_node_api::VramBudget;
use swapgraph_sdxl::checkpoint::vae_file;
use swapgraph_sdxl::vae::{Vae, VaeConfig};

#[test]
fn encode_and_decode_match_diffusers() {
    let vae = Vae::new(weights("vae_tiny.safetensors"), &VaeConfig::tiny()).unwrap();
    let cases = load_cases("vae_cases.safetensors");
    assert_close("decode", &vae.decode(&cases["latents"]).unwrap(), &cases["decoded"]);
    assert_close("encode", &vae.encode(&cases["image"]).unwrap(), &cases["encoded"]);
}

#[test]
fn tiled_decoding_covers_the_image_and_is_exact_with_one_tile() {
    use swapgraph_sdxl::vae::decode_tiled;
    let vae = Vae::new(weights("vae_tiny.safetensors"), &VaeConfig::tiny()).unwrap();
    let latents = candle_core::Tensor::randn(0f32, 1.0, (1, 4, 12, 10), &candle_core::Device::Cpu).unwrap();
    let whole = vae.decode(&latents).unwrap();
    assert_close("one tile", &decode_tiled(&vae, &latents, 16, 2).unwrap(), &whole);
    let tiled = decode_tiled(&vae, &latents, 6, 2).unwrap();
    assert_eq!(tiled.dims(), whole.dims());
    let values = tiled.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
    let difference = (&tiled - &whole)
        .unwrap()
        .abs()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = whole.abs().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(
        difference < scale,
        "tiles should resemble the whole decode: {difference} vs {scale}"
    );
}

/// The seam the automatic tiles leave: the smallest tile (16 latent pixels, 128 image pixels)
/// overlapping by 8, against the one-piece decode, in levels of 0-255 after the decode's
/// mapping to pixels. GroupNorm's statistics are per tile, so tiles never match exactly.
#[test]
fn the_smallest_automatic_tiles_stay_close_to_the_whole_decode() {
    use swapgraph_sdxl::vae::{decode_tiled, MIN_TILE, TILE_OVERLAP};
    let vae = Vae::new(weights("vae_tiny.safetensors"), &VaeConfig::tiny()).unwrap();
    // Fixed latents, so the figure is the same on every run: smooth waves with some fine detail.
    let values: Vec<f32> = (0..4 * 56 * 56)
        .map(|i| ((i as f32) * 0.37).sin() + ((i as f32) * 0.011).cos())
        .collect();
    let latents = candle_core::Tensor::from_vec(values, (1, 4, 56, 56), &candle_core::Device::Cpu).unwrap();
    let levels = |images: candle_core::Tensor| ((images + 1.0).unwrap() * 127.5).unwrap().clamp(0.0, 255.0).unwrap();
    let whole = levels(vae.decode(&latents).unwrap());
    let tiled = levels(decode_tiled(&vae, &latents, MIN_TILE, TILE_OVERLAP).unwrap());
    let difference = (&tiled - &whole).unwrap().abs().unwrap();
    let mean = difference.mean_all().unwrap().to_scalar::<f32>().unwrap();
    let max = difference.max_all().unwrap().to_scalar::<f32>().unwrap();
    eprintln!("tiles of {MIN_TILE} overlapping by {TILE_OVERLAP}: mean {mean:.3}, max {max:.1} levels");
    assert!(mean < 3.8 && max < 40.0, "mean {mean:.3}, max {max:.1}");
}

/// The VAE in bf16, as it runs on GPUs that compute in it, against diffusers' f32 decode, in
/// levels of 0-255: bf16 keeps f32's range (no overflow, unlike f16) with 8 bits of mantissa.
/// On the GPU only: candle's CPU matrix product has no bf16.
#[cfg(feature = "cuda")]
#[test]
fn decoding_in_bf16_on_the_gpu_stays_within_a_few_levels_of_f32() {
    use candle_core::{DType, Device};
    let gpu = Device::new_cuda(0).expect("a GPU for the CUDA build's tests");
    let tensors = load_cases("vae_tiny.safetensors");
    let vae = Vae::new(
        candle_nn::VarBuilder::from_tensors(tensors, DType::BF16, &gpu),
        &VaeConfig::tiny(),
    )
    .unwrap();
    let cases = load_cases("vae_cases.safetensors");
    let latents = cases["latents"].to_device(&gpu).unwrap().to_dtype(DType::BF16).unwrap();
    let decoded = vae
        .decode(&latents)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap();
    let levels = |images: &candle_core::Tensor| ((images + 1.0).unwrap() * 127.5).unwrap().clamp(0.0, 255.0).unwrap();
    let difference = (levels(&decoded) - levels(&cases["decoded"])).unwrap().abs().unwrap();
    let mean = difference.mean_all().unwrap().to_scalar::<f32>().unwrap();
    let max = difference.max_all().unwrap().to_scalar::<f32>().unwrap();
    eprintln!("bf16 against f32: mean {mean:.3}, max {max:.2} levels");
    // Measured on an H200: mean 0.56, max 4.67 levels.
    assert!(mean < 1.0 && max < 6.0, "mean {mean:.3}, max {max:.2}");
}

/// A VAE file of its own decodes as diffusers does, in diffusers' layout, in the original layout
/// under a checkpoint's prefix, and in the original layout bare (as VAE files are shared).
#[test]
fn a_vae_file_of_its_own_decodes_as_diffusers_in_either_layout() {
    let dir = tempfile::tempdir().unwrap();
    let bare = checkpoint_part("first_stage_model.", dir.path(), "vae.safetensors");
    let cases = load_cases("vae_cases.safetensors");
    for path in [
        fixture("vae_tiny.safetensors"),
        fixture("sdxl_tiny_single_file.safetensors"),
        bare,
    ] {
        let model = vae_file::load_single_file(&path, Some(VaeConfig::tiny())).unwrap();
        let vae = model.get(&Device::Cpu, VramBudget::Auto).unwrap();
        assert_close(
            &path.display().to_string(),
            &vae.decode(&cases["latents"]).unwrap(),
            &cases["decoded"],
        );
    }
    let unet = vae_file::load(fixture("unet_tiny.safetensors").to_str().unwrap())
        .err()
        .unwrap();
    assert!(unet.to_string().contains("is not a VAE"), "{unet}");
}
